"""Executes the tutorials (jupytext percent scripts in docs/tutorials/) and writes each as a notebook with its
outputs beside it, which the site renders. Run after editing a tutorial:

    uv run python docs/scripts/render_tutorials.py [NAME ...]

The tests run the scripts themselves and check that each notebook holds exactly its script's current cells, so a
tutorial edited without re-rendering fails the tests rather than showing stale outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jupytext
import nbclient
import nbformat

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"


def render(script: Path) -> Path:
    notebook = jupytext.read(script)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    # figures made without pyplot (the library's own) are shown as a cell's value: the inline formatter must be on
    notebook.cells.insert(0, nbformat.v4.new_code_cell("%matplotlib inline"))
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(TUTORIALS)}}
    )
    client.execute()
    notebook.cells.pop(0)
    target = script.with_suffix(".ipynb")
    jupytext.write(notebook, target)
    return target


def main(names: list[str]) -> None:
    scripts = sorted(TUTORIALS.glob("[0-9]*.py"))
    for script in scripts:
        if not names or script.stem in names or script.name in names:
            print("rendered", render(script))


if __name__ == "__main__":
    main(sys.argv[1:])
