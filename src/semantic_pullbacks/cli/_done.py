"""Which images a run already finished in its output folder, so a rerun (on any number of processes) skips them.

Each process appends the names of the images whose every file is written to its own log,
``OUT/.done/<settings fingerprint>.rank-<r>.txt``; a rerun with the same settings reads the logs of every rank and
skips those images. A log line is written only after the image's files are complete (they are written atomically),
and only whole lines count, so an image interrupted half-way is simply done again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["DoneLog"]

FOLDER = ".done"


class DoneLog:
    """The finished images of runs with these ``settings`` in ``out``; :meth:`mark` records one for ``rank``."""

    def __init__(self, out: str | os.PathLike[str], settings: Mapping[str, Any], rank: int) -> None:
        text = json.dumps(dict(settings), sort_keys=True, default=repr)
        self.key = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        self.folder = Path(out).expanduser() / FOLDER
        self.path = self.folder / f"{self.key}.rank-{rank}.txt"
        self.finished: set[str] = set()
        for log in sorted(self.folder.glob(f"{self.key}.rank-*.txt")):
            data = log.read_text("utf-8", errors="replace")
            self.finished.update(line for line in data.split("\n")[:-1] if line)

    def mark(self, name: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(name + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.finished.add(name)
