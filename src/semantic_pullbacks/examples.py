"""Bundled example photos, so a first explanation needs no files of one's own and no network.

Each photo is under an open licence (public domain, CC0 or CC BY; see ``data/examples/LICENSES.md``) and comes
with two classes: ``label``, the ImageNet class it depicts (``None`` where no ImageNet class applies, e.g. a
raccoon or a dahlia), and ``expected_class``, the class the bundled ``efficientnet_lite0`` predicts for it, which
makes the examples usable as smoke tests. ``target`` is what evaluations explain: the label, else the top-1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from semantic_pullbacks.errors import InvalidInputError

__all__ = ["Example", "example_path", "get_example", "list_examples"]


@dataclass(frozen=True)
class Example:
    """One bundled photo: ``name``, absolute ``path``, ``title``, its ImageNet ``label`` (or ``None``), the model's
    top-1 (``expected_class``) and the licence."""

    name: str
    path: Path
    title: str
    expected_class: int
    expected_name: str
    license: str
    label: int | None = None

    @property
    def target(self) -> int:
        """The class evaluations explain: the ImageNet label where one applies, else the model's top-1."""
        return self.expected_class if self.label is None else self.label


def _examples_dir() -> Path:
    return Path(str(resources.files("semantic_pullbacks").joinpath("data/examples")))


@lru_cache(maxsize=1)
def _manifest() -> tuple[Example, ...]:
    folder = _examples_dir()
    entries = json.loads((folder / "examples.json").read_text("utf-8"))
    return tuple(
        Example(
            name=entry["name"],
            path=folder / entry["file"],
            title=entry["title"],
            expected_class=int(entry["expected_class"]),
            expected_name=entry["expected_name"],
            license=entry["license"],
            label=None if entry.get("label") is None else int(entry["label"]),
        )
        for entry in entries
    )


def list_examples() -> list[Example]:
    """All bundled examples, in manifest order."""
    return list(_manifest())


def get_example(name: str) -> Example:
    """The bundled example called ``name`` (case-insensitive, file extension optional)."""
    key = Path(name.strip().lower()).stem
    for example in _manifest():
        if example.name == key:
            return example
    known = ", ".join(e.name for e in _manifest())
    raise InvalidInputError(f"no bundled example named {name!r}; choose one of: {known}")


def example_path(name: str) -> Path:
    """Path of the bundled example photo called ``name``, e.g. ``example_path("chelsea")``."""
    return get_example(name).path
