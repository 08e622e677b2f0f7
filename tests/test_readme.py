"""The Python snippets of the README and of every documentation page: each one runs as shown, in order, as a reader
following the page would run it, unless the line before it says ``<!-- not run: REASON -->``. Every snippet, run or
not, imports what it uses: a reader copies one snippet at a time."""

from __future__ import annotations

import ast
import builtins
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
#: stand-ins for the reader's own objects, named as such in the snippets' comments or their not-run reason
PLACEHOLDERS = {"baselines", "classifier", "tokenizer", "model"}
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.+?)\s*-->")


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _snippets(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text("utf-8"), re.S)


def _fenced_blocks(text: str) -> list[tuple[str, str, str | None]]:
    """Reference reading of a page's fenced blocks, line by line: ``(language, code, not-run reason)`` in order."""
    blocks, language, lines, reason, previous = [], None, [], None, ""
    for line in text.splitlines(keepends=True):
        fence = line.strip()
        if language is None and fence.startswith("```"):
            language, lines = fence[3:].strip().lower(), []
            marker = NOT_RUN.search(previous)
            reason = marker.group(1) if marker else None
        elif language is not None and fence == "```":
            blocks.append((language, "".join(lines), reason))
            language = None
        elif language is not None:
            lines.append(line)
        if fence:
            previous = fence
    assert language is None, f"a ```{language} block is never closed"
    return blocks


def _bound(tree: ast.AST) -> tuple[set[str], set[str]]:
    """Names the snippet imports, and names it assigns (targets, loop variables, with ... as, functions)."""
    imported, assigned = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imported |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            assigned.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            assigned.add(node.name)
        elif isinstance(node, ast.arg):
            assigned.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            assigned.add(node.name)
    return imported, assigned


def test_the_pages_are_the_readme_and_the_docs():
    assert README in PAGES and len(PAGES) > 10, [_name(p) for p in PAGES]


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_python_block_of_a_page_is_a_checked_snippet(page):
    """The snippets the tests below check are exactly the page's Python blocks (``py``, ``python3`` and ``pycon``
    included), each valid Python: a block the extraction missed would go unchecked."""
    python = [code for language, code, _ in _fenced_blocks(page.read_text("utf-8")) if language.startswith("py")]
    assert _snippets(page) == python
    for code in python:
        ast.parse(code)


def test_the_readme_shows_python():
    assert _snippets(README), "the README shows no Python"


SNIPPETS = [(page, i) for page in PAGES for i in range(len(_snippets(page)))]


@pytest.mark.parametrize(("page", "index"), SNIPPETS, ids=[f"{_name(p)}-{i + 1}" for p, i in SNIPPETS])
def test_a_snippet_imports_what_it_uses(page, index):
    snippets = _snippets(page)
    tree = ast.parse(snippets[index])
    earlier = set()  # variables an earlier snippet of the page made (``x``, ``model``); imports must be repeated
    for text in snippets[:index]:
        earlier |= _bound(ast.parse(text))[1]
    imported, assigned = _bound(tree)
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    missing = used - imported - assigned - earlier - PLACEHOLDERS - set(dir(builtins))
    assert not missing, f"{_name(page)} snippet {index + 1} uses {sorted(missing)} without importing or defining them"
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            exec(compile(ast.Module([node], []), f"{_name(page)} snippet {index + 1}", "exec"), {})


PAGES_WITH_PYTHON = [page for page in PAGES if _snippets(page)]


@pytest.mark.parametrize("page", PAGES_WITH_PYTHON, ids=_name)
def test_the_snippets_of_a_page_run_as_shown(page, tmp_path, monkeypatch):
    """Run in order in one namespace (a reader follows the page), in an empty folder (snippets may write files)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEMANTIC_PULLBACKS_OFFLINE", "1")
    namespace: dict = {"__name__": "__snippet__"}
    blocks = [b for b in _fenced_blocks(page.read_text("utf-8")) if b[0].startswith("py")]
    for index, (_, code, reason) in enumerate(blocks):
        if reason is not None:
            assert len(reason) > 10, f"{_name(page)} snippet {index + 1}: say why it is not run"
            continue
        exec(compile(code, f"{_name(page)} snippet {index + 1}", "exec"), namespace)
    import matplotlib.pyplot as plt

    plt.close("all")


def test_not_run_markers_mark_python_blocks():
    """A marker before anything but a Python block would silently mark nothing."""
    for page in PAGES:
        text = page.read_text("utf-8")
        for match in NOT_RUN.finditer(text):
            following = text[match.end() :].lstrip("\n")
            assert following.startswith("```python"), f"{_name(page)}: {match.group(0)} is not followed by ```python"
