"""``semantic-pullbacks app``: serve the interactive web page on this machine (offline)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import torch

from ..app.logic import Limits, discover_models
from ..app.ui import AppConfig, launch
from ..calibration import load_settings
from ..models import DEFAULT_MODEL
from ._common import add_command

__all__ = ["register", "run"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "app",
        run,
        description="Start the web app: upload an image, pick a class and methods, compare maps and counterfactuals. "
        "Runs fully offline; models are the embedded default plus torchvision/timm models whose weights are "
        "already cached on this machine.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default: %(default)s)")
    parser.add_argument("--model", default=None, help="model selected at start (default: efficientnet_lite0)")
    parser.add_argument(
        "--models",
        nargs="*",
        default=None,
        metavar="NAME",
        help="models offered in the picker (default: every model whose weights are available locally)",
    )
    parser.add_argument("--max-file-size", default="10mb", help="largest upload accepted (default: %(default)s)")
    parser.add_argument(
        "--max-pixels", type=int, default=25_000_000, help="largest image, width × height (default: %(default)s)"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds one request may compute (default: %(default)s)"
    )
    parser.add_argument("--queue-size", type=int, default=16, help="requests waiting at most (default: %(default)s)")
    parser.add_argument(
        "--settings", metavar="FILE.json", help="settings file (from 'calibrate'), offered and used by default"
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: PyTorch's)")
    parser.add_argument(
        "--offline", action="store_true", help="never download model weights (as SEMANTIC_PULLBACKS_OFFLINE=1)"
    )


def run(args: argparse.Namespace) -> int:
    if args.offline:  # every model the app loads, now or when the user switches models, obeys it
        os.environ["SEMANTIC_PULLBACKS_OFFLINE"] = "1"
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    if args.host not in _LOOPBACK:
        print(f"warning: listening on {args.host}: anyone who can reach this address can use the app", file=sys.stderr)
    config = AppConfig(
        model=args.model or DEFAULT_MODEL,
        models=discover_models() if args.models is None else list(args.models),
        limits=Limits(max_pixels=args.max_pixels, timeout_s=args.timeout),
        max_file_size=args.max_file_size,
        queue_size=args.queue_size,
        settings=load_settings(args.settings) if args.settings else None,
    )
    launch(
        config,
        host=args.host,
        port=args.port,
        on_ready=lambda url: print(f"Semantic Pullbacks app running at {url} (Ctrl+C to stop)", flush=True),
    )
    return 0
