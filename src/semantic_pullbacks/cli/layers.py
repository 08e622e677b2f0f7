"""``semantic-pullbacks layers``: the model's layer names and output shapes, to use with ``--neuron LAYER:CHANNEL``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from ..methods import layer_shapes
from ._common import add_command, add_model_options, load_model

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "layers",
        run,
        description="List the model's layers (model.named_modules() names) with their type and output shape for\n"
        "one image, as 'name  type  shape'. A conv output (1, C, H, W) has channels 0..C-1 for --neuron LAYER:C.",
        epilog="examples:\n  semantic-pullbacks layers\n  semantic-pullbacks layers blocks --depth 2\n"
        "  semantic-pullbacks explain example:chelsea --neuron blocks.5:12",
    )
    parser.add_argument("query", nargs="?", default="", metavar="QUERY", help="only names containing QUERY")
    parser.add_argument(
        "--depth", type=int, default=None, metavar="N", help="only names of at most N dotted parts (e.g. 2: blocks.3)"
    )
    add_model_options(parser)


def run(args: argparse.Namespace) -> int:
    model = load_model(args)
    probe = torch.zeros(1, 3, model.input_size, model.input_size, device=model.device)
    every = layer_shapes(model.model, probe)
    parents = {info.name.rsplit(".", 1)[0] for info in every if "." in info.name}
    rows = [
        info for info in every if args.query in info.name and (args.depth is None or info.name.count(".") < args.depth)
    ]
    if not rows:
        print(f"no layer name contains {args.query!r}; run without QUERY to see them all", file=sys.stderr)
        return 1
    width = max(len(r.name) for r in rows)
    kinds = max(len(r.kind) for r in rows)
    for info in rows:
        unused = "(container)" if info.name in parents else "not reached"
        shape = unused if info.calls == 0 else str(info.shape) if info.shape else "(not a tensor)"
        calls = f"  called {info.calls}x: needs call=" if info.calls > 1 else ""
        print(f"{info.name:<{width}}  {info.kind:<{kinds}}  {shape}{calls}")
    return 0
