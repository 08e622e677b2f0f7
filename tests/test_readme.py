"""The README's Python snippets: every import works, and a snippet uses no name it does not define itself (or
that an earlier snippet assigned, such as ``x``): a reader copies one snippet at a time."""

from __future__ import annotations

import ast
import builtins
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
#: stand-ins for the reader's own objects, named as such in the snippets' comments
PLACEHOLDERS = {"baselines", "classifier", "tokenizer"}


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text("utf-8"), re.S)


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
    return imported, assigned


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    """Reference reading of the README's fenced blocks, line by line: ``(language, code)`` in order."""
    blocks, language, lines = [], None, []
    for line in text.splitlines(keepends=True):
        fence = line.strip()
        if language is None and fence.startswith("```"):
            language, lines = fence[3:].strip().lower(), []
        elif language is not None and fence == "```":
            blocks.append((language, "".join(lines)))
            language = None
        elif language is not None:
            lines.append(line)
    assert language is None, f"a ```{language} block is never closed"
    return blocks


def test_every_python_block_of_the_readme_is_a_checked_snippet():
    """The snippets the tests below check are exactly the README's Python blocks (``py``, ``python3`` and ``pycon``
    included), each valid Python: a block the extraction missed would go unchecked."""
    python = [code for language, code in _fenced_blocks(README.read_text("utf-8")) if language.startswith("py")]
    assert python, "the README shows no Python"
    assert _snippets() == python
    for code in python:
        ast.parse(code)


@pytest.mark.parametrize("index", range(len(_snippets())))
def test_a_readme_snippet_imports_what_it_uses(index):
    snippets = _snippets()
    tree = ast.parse(snippets[index])
    earlier = set()  # variables an earlier snippet made (``x``, ``model``); imports must be repeated
    for text in snippets[:index]:
        earlier |= _bound(ast.parse(text))[1]
    imported, assigned = _bound(tree)
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    missing = used - imported - assigned - earlier - PLACEHOLDERS - set(dir(builtins))
    assert not missing, f"README snippet {index + 1} uses {sorted(missing)} without importing or defining them"
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            exec(compile(ast.Module([node], []), f"README snippet {index + 1}", "exec"), {})
