"""The package's imports point one way, down a stack of floors, and no file or subpackage is in an import cycle.

Read from the source with ``ast`` (nothing is imported): every import of the package's own modules counts, at the
top of a file, inside a function and under ``TYPE_CHECKING``, since each is coupling all the same.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "semantic_pullbacks"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE

#: The stack. A unit (a subpackage, or a module at the top of the package) may import only units on lower floors.
#: The README's "Layout" section says the same in words.
FLOORS: dict[str, int] = {
    "errors": 0,  # the typed errors every layer raises
    "engine": 1,  # the soft-pullback mode, its rules and temperatures
    "imagenet": 1,  # ImageNet class names
    "images": 1,  # image files in, tensors out
    "examples": 1,  # the bundled photos
    "methods": 2,  # explainers over the engine
    "visualize": 2,  # figures of maps (matplotlib, imported where it draws)
    "metrics": 3,  # the paper's metrics and their presets
    "calibration": 4,  # settings files, recommended settings, the temperature search
    "models": 5,  # loaded classifiers, which know their recommended settings
    "text": 6,  # text models, targets, metrics and views
    "evaluation": 7,  # the benchmark pipeline over images and texts
    "__init__": 8,  # the package's front door: every public name
    "app": 9,  # the web app
    "cli": 10,  # the command line (its `app` command starts the web app)
    "__main__": 11,  # python -m semantic_pullbacks
}


@dataclass(frozen=True)
class Import:
    """``source`` (a module) imports ``target`` (a module of the package) at ``path:line``."""

    source: str
    target: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.source} imports {self.target}"


# ------------------------------------------------------------------------------------------------ reading


def modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package under ``root`` by dotted name (a package by its own name: its ``__init__``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(root: Path, package: str) -> list[Import]:
    """Every import of one of the package's own modules, anywhere in any file, resolved to the module it loads."""
    known = modules(root, package)
    found = []
    for name, path in known.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        shown = path.relative_to(root.parent)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for target in sorted(set(_targets(node, here, package, known)) - {name}):
                found.append(Import(name, target, shown, node.lineno))
    return found


def _targets(node: ast.AST, here: str, package: str, known: Mapping[str, Path]) -> Iterable[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = here.split(".")[: len(here.split(".")) - node.level + 1]
            origin = ".".join(base + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        # ``from pkg import mod`` loads pkg.mod; ``from pkg import name`` loads pkg
        names = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in known else origin for alias in node.names]
    else:
        return []
    return [_module_of(n, known) for n in names if n == package or n.startswith(package + ".")]


def _module_of(name: str, known: Mapping[str, Path]) -> str:
    while name not in known and "." in name:
        name = name.rpartition(".")[0]
    return name


def unit(module: str) -> str:
    """The subpackage or top-level module ``module`` belongs to (``__init__``: the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


# ------------------------------------------------------------------------------------------------ cycles


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per group of nodes that all reach each other; empty for an acyclic graph."""
    edges = _edges(graph)
    return [_cycle_in(group, edges) for group in groups(graph)]


def _edges(graph: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """Every node with its successors (self-loops dropped: a module importing itself is no cycle)."""
    return {n: sorted(set(graph.get(n, ())) - {n}) for n in {*graph, *(m for ms in graph.values() for m in ms)}}


def groups(graph: Mapping[str, Iterable[str]]) -> list[set[str]]:
    """The strongly connected groups of more than one node: Tarjan's algorithm, written iteratively (so a long
    chain of imports cannot hit Python's recursion limit)."""
    edges = _edges(graph)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        found.append(group)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(edges[child])))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def _cycle_in(group: set[str], edges: Mapping[str, list[str]]) -> list[str]:
    """A shortest cycle through the group's first node, by breadth-first search inside the group."""
    start = min(group)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in edges[node]:
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if child in group and child not in parent:
                    parent[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start} in a strongly connected group")  # pragma: no cover


def _explain(graph: Mapping[str, Iterable[str]], found: list[Import], key: Callable[[str], str]) -> list[str]:
    """Per group in a cycle: its members, and one cycle through them with the import (file:line) of each step."""
    edges = _edges(graph)
    out = []
    for group in groups(graph):
        cycle = _cycle_in(group, edges)
        steps = [
            next(i for i in found if key(i.source) == a and key(i.target) == b) for a, b in itertools.pairwise(cycle)
        ]
        out.append(
            f"{', '.join(sorted(group))} reach each other, e.g. "
            + " -> ".join(cycle)
            + "".join(f"\n  {i}" for i in steps)
        )
    return out


# ------------------------------------------------------------------------------------------------ the package


def _package_imports() -> list[Import]:
    found = imports(SOURCE, PACKAGE)
    assert len(found) > 100, "the import reader found almost nothing: has the package moved?"
    return found


def test_no_file_is_in_an_import_cycle():
    found = _package_imports()
    graph: dict[str, set[str]] = {}
    for i in found:
        graph.setdefault(i.source, set()).add(i.target)
    problems = _explain(graph, found, lambda m: m)
    assert not problems, "files in import cycles:\n" + "\n".join(problems)


def test_no_subpackage_is_in_an_import_cycle():
    found = _package_imports()
    graph: dict[str, set[str]] = {}
    for i in found:
        graph.setdefault(unit(i.source), set()).add(unit(i.target))
    problems = _explain(graph, found, unit)
    assert not problems, "subpackages in import cycles:\n" + "\n".join(problems)


def test_every_subpackage_has_a_floor():
    units = {unit(m) for m in modules(SOURCE, PACKAGE)}
    assert units - set(FLOORS) == set(), "give each new subpackage or top-level module a floor in FLOORS"
    assert set(FLOORS) - units == set(), "FLOORS names units the package no longer has"


def test_every_import_points_down_the_stack():
    upward = [
        f"{i} ({unit(i.source)} on floor {FLOORS[unit(i.source)]} may import only lower floors; "
        f"{unit(i.target)} is on floor {FLOORS[unit(i.target)]})"
        for i in _package_imports()
        if unit(i.source) != unit(i.target) and FLOORS[unit(i.target)] >= FLOORS[unit(i.source)]
    ]
    assert not upward, "imports that do not point down the stack:\n" + "\n".join(upward)


# ------------------------------------------------------------------------------------------------ the checker itself


def test_the_cycle_finder_finds_cycles_and_passes_acyclic_graphs():
    diamond = {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}
    assert cycles(diamond) == []
    assert cycles({"a": ["a"], "b": []}) == []  # a module importing itself is no cycle between files
    assert cycles({**diamond, "d": ["a"]}) == [["a", "b", "d", "a"]]
    two = cycles({"a": ["b"], "b": ["a"], "c": ["d"], "d": ["e"], "e": ["c"], "f": ["a", "c"]})
    assert sorted(two) == [["a", "b", "a"], ["c", "d", "e", "c"]]
    long_chain = {str(i): [str(i + 1)] for i in range(5000)}  # deeper than Python's recursion limit
    assert cycles(long_chain) == []
    assert len(cycles({**long_chain, "5000": ["0"]})[0]) == 5002


def test_the_reader_sees_imports_at_the_top_in_functions_and_under_type_checking(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "low").mkdir(parents=True)
    files = {
        "__init__.py": "from .low import base\n",
        "low/__init__.py": "",
        "low/base.py": (
            "from typing import TYPE_CHECKING\n"
            "import os\n"
            "if TYPE_CHECKING:\n"
            "    from ..high import Thing\n"
            "def late():\n"
            "    import pkg.low.other as other\n"
            "    from . import other, missing_name\n"
            "    return other\n"
        ),
        "low/other.py": "from pkg.low.base import late\nfrom .base import late as again\n",
        "high.py": "from .low.base import late\nfrom pkg import low\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    found = {(i.source, i.target, i.line) for i in imports(pkg, "pkg")}
    assert found == {
        ("pkg", "pkg.low.base", 1),
        ("pkg.low.base", "pkg.high", 4),  # under TYPE_CHECKING
        ("pkg.low.base", "pkg.low.other", 6),  # inside a function
        ("pkg.low.base", "pkg.low.other", 7),  # ``from . import module``
        ("pkg.low.base", "pkg.low", 7),  # ``from . import name``: the package's __init__
        ("pkg.low.other", "pkg.low.base", 1),
        ("pkg.low.other", "pkg.low.base", 2),
        ("pkg.high", "pkg.low.base", 1),
        ("pkg.high", "pkg.low", 2),
    }
    graph: dict[str, set[str]] = {}
    for i in imports(pkg, "pkg"):
        graph.setdefault(i.source, set()).add(i.target)
    assert cycles(graph) == [["pkg.high", "pkg.low.base", "pkg.high"]]
