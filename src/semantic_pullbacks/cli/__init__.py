"""The ``semantic-pullbacks`` command: a thin entry point over the library.

Each subcommand lives in its own module here and exposes ``register(subparsers)``, which adds its parser
and sets ``func`` to a ``run(args) -> int`` callable. Heavy imports happen inside ``run``, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import sys
import tempfile
from collections.abc import Sequence

from ..errors import SemanticPullbacksError

__all__ = ["build_parser", "main"]

#: subcommand modules, in the order ``--help`` lists them; a missing module is skipped
SUBCOMMANDS = ("explain", "explain-text", "compare", "counterfactuals", "classes", "evaluate", "calibrate", "app")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semantic-pullbacks",
        description="Explain PyTorch models (image classifiers, text models) with Semantic Pullbacks (offline, "
        "embedded default models).",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name.replace('-', '_')}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SemanticPullbacksError as e:
        if _first_to_say(str(e)):
            print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _first_to_say(message: str) -> bool:
    """Whether this process should print ``message``: always in a plain run; under torchrun only the first rank
    of a machine to hit it, so the same mistake on every rank reads as one ``error:`` line, while a rank's own
    error (a file missing on one machine) is still shown."""
    run = os.environ.get("TORCHELASTIC_RUN_ID")
    if run is None or "RANK" not in os.environ:
        return True
    digest = hashlib.sha256(f"{run}\x1f{message}".encode()).hexdigest()[:24]
    try:
        os.close(
            os.open(os.path.join(tempfile.gettempdir(), f"semantic-pullbacks-said-{digest}"), os.O_CREAT | os.O_EXCL)
        )
    except FileExistsError:
        return False
    except OSError:  # no writable temporary folder: rather twice than never
        return True
    return True


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
