"""The ``semantic-pullbacks`` command: a thin entry point over the library.

Each subcommand lives in its own module here and exposes ``register(subparsers)``, which adds its parser (options
from the shared groups of :mod:`._common`) and sets ``func`` to a ``run(args) -> int`` callable.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from types import ModuleType

from .. import __version__
from ..errors import SemanticPullbacksError
from ._common import COMMANDS, Command

__all__ = ["build_parser", "main"]


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The command line; only the ``commands`` named (all by default) get their options, the others are listed
    by name and help line."""
    parser = argparse.ArgumentParser(
        prog="semantic-pullbacks",
        description="Explain PyTorch models (image classifiers, text models) with Semantic Pullbacks (offline, "
        "embedded default models).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = set(COMMANDS) if commands is None else set(commands)
    for command in COMMANDS.values():
        if command.name in wanted:
            _module(command).register(sub)
        else:
            sub.add_parser(command.name, help=command.help)
    return parser


def _module(command: Command) -> ModuleType:
    """The command's module, imported only when the command is used. This is the one lazy import of the CLI: the
    image commands import matplotlib and the app Gradio (seconds together), which ``--help`` and ``classes`` must
    not pay for. A missing optional dependency is an ``error:`` line naming the extra to install."""
    try:
        return importlib.import_module(f"{__name__}.{command.module}")
    except ModuleNotFoundError as error:
        missing = (error.name or "").split(".")[0]
        if not missing or missing == "semantic_pullbacks":
            raise
        raise SemanticPullbacksError(
            f"{command.name} needs {missing}: pip install 'semantic-pullbacks[{command.extra}]'"
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser(_named_command(argv))
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except SemanticPullbacksError as e:
        if _first_to_say(str(e)):
            print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _named_command(argv: Sequence[str]) -> list[str]:
    """The command in ``argv`` (its first word: the top level has no option that takes a value), if it is one."""
    first = next((word for word in argv if not word.startswith("-")), None)
    return [first] if first in COMMANDS else []


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
