"""``semantic-pullbacks classes``: find the name or index of a class to use with ``--target``/``--classes``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..imagenet import search_classes
from ._common import add_command, positive_int

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "classes",
        run,
        description="List ImageNet-1k classes whose name matches QUERY (exact, prefix, substring, then close "
        "spellings), as 'index  name'. Without QUERY, list the first classes. Exit status 1 if nothing matches.",
    )
    parser.add_argument("query", nargs="?", default="", metavar="QUERY", help="part of a class name, e.g. 'cat'")
    parser.add_argument(
        "--limit", type=positive_int, default=20, metavar="N", help="at most N classes (default: %(default)s)"
    )


def run(args: argparse.Namespace) -> int:
    found = search_classes(args.query, limit=args.limit)
    if not found:
        print(f"no class matches {args.query!r}; try a shorter or different word", file=sys.stderr)
        return 1
    for index, name in found:
        print(f"{index:>4}  {name}")
    return 0
