"""The results folder: per-(image, method, metric) rows appended as they finish, and the run's fingerprint.

A benchmark can run for hours; an interruption (Ctrl-C, a crash, a closed laptop) must cost at most the unit
of work in flight. Rows are appended to ``scores.csv`` and flushed to disk as soon as they exist; a resumed
run reads them back and skips their keys. ``config.json`` holds the settings and their fingerprint, so
results computed under other settings are never mixed in silently. Derived files (summary, chart) are
written atomically: a reader never sees half a file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semantic_pullbacks.errors import InvalidInputError

__all__ = ["FIELDS", "ResultsStore", "Row", "atomic_write", "fingerprint"]

#: columns of ``scores.csv``
FIELDS = ("image", "label", "target", "method", "metric", "score", "seconds")
SCORES = "scores.csv"
CONFIG = "config.json"


@dataclass(frozen=True)
class Row:
    """One score: ``image`` id, its ``label`` (-1 when unknown), the ``target`` explained, method, metric,
    ``score`` (NaN when the metric is undefined for this map) and ``seconds`` spent per image."""

    image: str
    label: int
    target: int
    method: str
    metric: str
    score: float
    seconds: float

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.image, self.method, self.metric)

    def as_record(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "label": self.label,
            "target": self.target,
            "method": self.method,
            "metric": self.metric,
            "score": repr(float(self.score)),  # repr round-trips floats exactly
            "seconds": f"{self.seconds:.4f}",
        }


def fingerprint(config: Mapping[str, Any]) -> str:
    """A short hash of the settings that decide the scores (canonical JSON, sorted keys)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then move ``tmp`` over ``path``: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name created by ``write`` itself, so the file gets the usual permissions (mkstemp's are 0600)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the settings that differ between two configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".") or "(all)"]


LOCK = ".lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _acquire_lock(folder: Path) -> None:
    """One writer per results folder: two runs appending to one scores file would interleave their rows.

    The lock file holds the owner's pid; a lock left by a process that no longer exists is taken over. It is
    released by :meth:`ResultsStore.close` (the runner closes the store in ``finally``).
    """
    path = folder / LOCK
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = int(path.read_text().strip() or "0")
            except (OSError, ValueError):
                owner = 0
            if owner and owner != os.getpid() and _pid_alive(owner):
                raise InvalidInputError(
                    f"another evaluation (pid {owner}) is writing to {str(folder)!r}; wait for it or choose another "
                    f"--out (delete {LOCK} there if that process is gone)"
                ) from None
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return
    raise InvalidInputError(f"could not lock {str(folder)!r} for writing")


class ResultsStore:
    """``out/scores.csv`` + ``out/config.json``: open with :meth:`open`, then :meth:`append` rows.

    >>> store = ResultsStore.open("runs/bench", config, resume=True)   # doctest: +SKIP
    >>> store.done(("chelsea", "Gradient", "infidelity"))               # doctest: +SKIP

    With ``out=None`` rows are kept in memory only.
    """

    def __init__(self, out: Path | None, config: Mapping[str, Any], rows: list[Row]) -> None:
        self.out = out
        self.config = dict(config)
        self.rows: list[Row] = rows
        self._keys = {r.key for r in rows}

    # ------------------------------------------------------------------------------------------ opening
    @classmethod
    def open(cls, out: str | os.PathLike[str], config: Mapping[str, Any], *, resume: bool = True, force: bool = False):  # type: ignore[no-untyped-def]
        """Open ``out`` for this config: resume its rows, or start over.

        Existing results under another config are refused unless ``force`` (they are then moved to
        ``out/previous-<time>/``, never deleted); ``resume=False`` likewise starts over after moving them.
        """
        folder = Path(out).expanduser()
        if folder.exists() and not folder.is_dir():
            raise InvalidInputError(f"output path {str(folder)!r} exists and is not a folder")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InvalidInputError(f"cannot create the output folder {str(folder)!r}: {e.strerror or e}") from None
        _acquire_lock(folder)
        try:
            config = json.loads(json.dumps(dict(config), sort_keys=True, default=repr))  # as it reads back from disk
            config_path, scores_path = folder / CONFIG, folder / SCORES
            has_results = scores_path.exists() or config_path.exists()
            if has_results and resume:
                old = cls._read_config(config_path)
                if old is not None and fingerprint(old.get("settings", {})) != fingerprint(config):
                    changed = ", ".join(_diff(old.get("settings", {}), config)[:12])
                    if not force:
                        raise InvalidInputError(
                            f"{str(folder)!r} holds results computed with other settings (changed: {changed}); "
                            "resume with the same settings, choose another --out, or pass --force to start over "
                            "(the old results are kept in a previous-* sub-folder)"
                        )
                    cls._move_aside(folder)
                elif old is None and scores_path.exists():
                    if not force:
                        raise InvalidInputError(
                            f"{str(folder)!r} has {SCORES} but no readable {CONFIG}, so its settings are unknown; "
                            "choose another --out or pass --force to start over"
                        )
                    cls._move_aside(folder)
            elif has_results:
                cls._move_aside(folder)
            rows = cls._read_rows(scores_path) if scores_path.exists() else []
            store = cls(folder, config, rows)
            record = json.dumps({"fingerprint": fingerprint(config), "settings": config}, indent=2, sort_keys=True)
            atomic_write(config_path, lambda p: p.write_text(record + "\n", "utf-8"))
            store._prepare_scores_file()
        except BaseException:
            (folder / LOCK).unlink(missing_ok=True)
            raise
        return store

    @staticmethod
    def _read_config(path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    @staticmethod
    def _move_aside(folder: Path) -> None:
        """Keep earlier results instead of deleting them: they may have cost hours."""
        dest = folder / time.strftime("previous-%Y%m%d-%H%M%S")
        n = 1
        while dest.exists():
            dest = folder / f"{dest.name.split('~')[0]}~{n}"
            n += 1
        dest.mkdir()
        for entry in folder.iterdir():
            if entry != dest and not entry.name.startswith("previous-") and entry.name != LOCK:
                shutil.move(str(entry), str(dest / entry.name))

    @staticmethod
    def _read_rows(path: Path) -> list[Row]:
        """Rows of a (possibly interrupted) scores file; a torn last line is dropped, duplicates keep the first."""
        rows: list[Row] = []
        seen: set[tuple[str, str, str]] = set()
        with path.open(newline="", encoding="utf-8") as f:
            text = f.read()
        if text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
        reader = csv.DictReader(text.splitlines(keepends=True))
        if reader.fieldnames is not None and tuple(reader.fieldnames) != FIELDS:
            raise InvalidInputError(f"{str(path)!r} is not a scores file of this version (columns {reader.fieldnames})")
        for rec in reader:
            try:
                row = Row(
                    rec["image"],
                    int(rec["label"]),
                    int(rec["target"]),
                    rec["method"],
                    rec["metric"],
                    float(rec["score"]),
                    float(rec["seconds"]),
                )
            except (KeyError, TypeError, ValueError):
                continue
            if row.key not in seen:
                seen.add(row.key)
                rows.append(row)
        return rows

    def _prepare_scores_file(self) -> None:
        """Cut a torn last line (from a crash mid-write) so appended rows start on a line of their own."""
        path = self.scores_path
        if not path.exists() or path.stat().st_size == 0:
            with path.open("w", newline="", encoding="utf-8") as f:
                csv.writer(f, lineterminator="\n").writerow(FIELDS)
            return
        with path.open("rb+") as f:
            data = f.read()
            if not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)

    def close(self) -> None:
        """Release the folder for other runs (rows are already on disk)."""
        if self.out is not None:
            lock = self.out / LOCK
            try:
                if lock.read_text().strip() == str(os.getpid()):
                    lock.unlink()
            except (OSError, ValueError):
                pass

    # ------------------------------------------------------------------------------------------ rows
    @property
    def scores_path(self) -> Path:
        if self.out is None:
            raise InvalidInputError("this results store is in memory only")
        return self.out / SCORES

    def done(self, key: tuple[str, str, str]) -> bool:
        return key in self._keys

    def append(self, rows: Iterable[Row]) -> list[Row]:
        """Append the rows not yet stored, flush them to disk, and return them."""
        new = [r for r in rows if r.key not in self._keys]
        if not new:
            return []
        if self.out is not None:
            self._write(new)
        for r in new:
            self._keys.add(r.key)
            self.rows.append(r)
        return new

    def _write(self, new: list[Row]) -> None:
        with self.scores_path.open("a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
            for r in new:
                writer.writerow(r.as_record())
            f.flush()
            os.fsync(f.fileno())

    def scores(self) -> dict[tuple[str, str], dict[str, float]]:
        """``{(method, metric): {image: score}}`` of every stored row."""
        out: dict[tuple[str, str], dict[str, float]] = {}
        for r in self.rows:
            out.setdefault((r.method, r.metric), {})[r.image] = r.score
        return out
