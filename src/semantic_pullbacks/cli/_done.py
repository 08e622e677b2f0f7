"""Which images a run already finished in its output folder, so a resumed run (on any number of processes) can
skip them.

Every run appends, per process, a line for each image whose files are all written, to
``OUT/.done/<settings fingerprint>.rank-<r>.txt``; a resumed run with the same settings reads the logs of every rank.
An image is identified by its resolved path and a digest of its bytes (the rule ``evaluate`` keys its rows by, in
:func:`~semantic_pullbacks.evaluation.items.file_digest`), never by its name, size or time alone: an image changed
since, or another image that happens to have the same name, is explained again. A log line is
written only after the image's files are complete (they are written atomically), and only whole lines count, so an
image interrupted half-way is simply done again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..evaluation.items import file_digest
from ..evaluation.store import fingerprint

__all__ = ["DoneLog", "image_key"]

FOLDER = ".done"


def image_key(path: str | os.PathLike[str]) -> str:
    """What identifies an image: its resolved path and the digest of its content."""
    resolved = Path(path).expanduser().resolve()
    return json.dumps([str(resolved), file_digest(resolved)])


class DoneLog:
    """The finished images of runs with these ``settings`` in ``out``; :meth:`mark` records one for ``rank``."""

    def __init__(self, out: str | os.PathLike[str], settings: Mapping[str, Any], rank: int) -> None:
        self.key = fingerprint(dict(settings))
        self.folder = Path(out).expanduser() / FOLDER
        self.path = self.folder / f"{self.key}.rank-{rank}.txt"
        self.finished: set[str] = set()
        for log in sorted(self.folder.glob(f"{self.key}.rank-*.txt")):
            data = log.read_text("utf-8", errors="replace")
            self.finished.update(line for line in data.split("\n")[:-1] if line)

    def is_done(self, path: str | os.PathLike[str]) -> bool:
        """Whether this very file (same path and content) was finished with these settings."""
        try:
            return image_key(path) in self.finished
        except (OSError, InvalidInputError):  # gone or unreadable: not done; decoding reports it
            return False

    def mark(self, path: str | os.PathLike[str]) -> None:
        key = image_key(path)
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(key + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.finished.add(key)
