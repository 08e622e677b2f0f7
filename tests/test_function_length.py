"""No function or method of the package has more than 80 lines of code: a longer one becomes a pipeline of small,
named steps. Lines are read with ``ast`` and ``tokenize`` (nothing is imported); docstrings, blank lines and
comment-only lines do not count, decorators and a nested function's lines count toward the function around it."""

from __future__ import annotations

import ast
import io
import textwrap
import tokenize
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "semantic_pullbacks"
LIMIT = 80


def code_lengths(source: str) -> dict[str, int]:
    """Lines of code of every function and method in ``source``, by qualified name (``Class.method``,
    ``outer.<locals>.inner``)."""
    tree = ast.parse(source)
    code = _code_lines(source) - _docstring_lines(tree)
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                lengths[name] = sum(1 for line in code if first <= line <= (child.end_lineno or child.lineno))
                visit(child, name + ".<locals>.")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return lengths


def _code_lines(source: str) -> set[int]:
    """Lines holding a token other than a comment or a line break (a string spanning lines holds all of them)."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            lines.update(range(token.start[0], token.end[0] + 1))
    return lines


def _docstring_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def test_the_counter_on_a_known_example():
    source = textwrap.dedent(
        '''
        """Module docstring."""
        import functools


        @functools.cache
        def outer(x):
            """A docstring
            over three lines
            does not count."""
            # a comment line does not count

            y = x + 1  # a trailing comment does not remove the line
            text = """a string
            over two lines"""

            def inner(z):
                """Nor does this one."""
                return z * 2

            return inner(y), text


        class Box:
            """Class docstring."""

            def method(self):
                return (
                    1,
                    2,
                )
        '''
    )
    # outer: decorator, def, y, text (2 lines), def inner, return z, return inner = 8; inner: def + return = 2
    assert code_lengths(source) == {"outer": 8, "outer.<locals>.inner": 2, "Box.method": 5}


@pytest.mark.parametrize(("statements", "too_long"), [(LIMIT - 1, False), (LIMIT, True)])
def test_80_lines_pass_and_81_do_not(statements, too_long):
    body = "\n".join(f"    x{i} = {i}" for i in range(statements))
    (length,) = code_lengths(f"def f():\n    '''Docstring.'''\n\n    # comment\n{body}\n").values()
    assert length == statements + 1  # the ``def`` line too
    assert (length > LIMIT) is too_long


def test_no_function_of_the_package_is_longer_than_80_lines():
    too_long = {
        f"{path.relative_to(PACKAGE)}:{name}": length
        for path in sorted(PACKAGE.rglob("*.py"))
        for name, length in code_lengths(path.read_text(encoding="utf-8")).items()
        if length > LIMIT
    }
    assert too_long == {}, f"split these into small named steps (at most {LIMIT} lines of code each): {too_long}"
