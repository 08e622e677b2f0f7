"""The results folder: each rank's rows appended to its own file as they finish, the run's settings, one job at a time.

A benchmark can run for hours on many processes; an interruption (Ctrl-C, a crash, a killed rank, a lost node)
must cost at most the work in flight. Layout of ``out/``:

- ``parts/<job>.rank-<r>.jsonl``: the rows rank ``r`` of job ``<job>`` computed, appended and flushed to disk one
  by one. Each row is one line (a JSON array in ASCII: an id with any character, a newline included, stays on its
  line) ending with a checksum of itself, so a torn or damaged line is never read as a score: it is left out and
  recomputed. No two processes ever append to one file, not even a straggler of an earlier job.
- ``config.json``: the settings and their fingerprint; results computed under other settings are never mixed in.
- ``.lock``: the job that owns the folder (host, pid, job id), refreshed while it runs (see :mod:`.lock`).
- ``scores.csv``, ``summary.md``, ...: derived from the parts at the end, written atomically.

A resumed run reads every part, whatever number of processes wrote them, and skips the keys it finds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semantic_pullbacks.errors import InvalidInputError
from semantic_pullbacks.evaluation.lock import LOCK, FolderLock

__all__ = ["FIELDS", "PartWriter", "ResultsStore", "Row", "atomic_write", "fingerprint"]

#: columns of ``scores.csv``; part files add a checksum column
FIELDS = ("item", "label", "target", "method", "metric", "score", "seconds")
SCORES = "scores.csv"
CONFIG = "config.json"
PARTS = "parts"
#: first line of a part file (rows: ``[item, label, target, method, metric, score, seconds, digest] crc``)
_PART_HEADER = "semantic-pullbacks part 2: JSON rows"
_OLD_PART_HEADER = ",".join((*FIELDS, "check"))  # version 1: CSV rows, split by an id holding a newline


@dataclass(frozen=True)
class Row:
    """One score: ``item`` id (an image, a mosaic, a text), its ``label`` (-1 when unknown), the ``target``
    explained, method, metric, ``score`` (NaN when the metric is undefined for this map), ``seconds`` it took, and
    the ``digest`` of the item's content it was computed on (a row of a changed item is stale, never reused)."""

    item: str
    label: int
    target: int
    method: str
    metric: str
    score: float
    seconds: float
    digest: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.item, self.method, self.metric)

    def as_record(self) -> dict[str, Any]:
        return {
            "item": self.item,
            "label": self.label,
            "target": self.target,
            "method": self.method,
            "metric": self.metric,
            "score": repr(float(self.score)),  # repr round-trips floats exactly
            "seconds": f"{self.seconds:.4f}",
        }

    def checked_line(self) -> str:
        """The row as one line: a JSON array in ASCII (any character of an id, a newline, a quote or a lone
        surrogate, is escaped, so a line never splits), a space and the CRC-32 of the array."""
        values = [_escaped(v) for v in [*(self.as_record()[f] for f in FIELDS), self.digest]]
        body = json.dumps(values, ensure_ascii=True, separators=(",", ":"))
        return f"{body} {_crc(body)}\n"

    @classmethod
    def from_fields(cls, values: list[Any]) -> Row:
        item, label, target, method, metric, score, seconds, digest = (_unescaped(v) for v in values)
        if not all(isinstance(v, str) for v in (item, method, metric, score, seconds, digest)):
            raise ValueError("field types")
        if not all(type(v) is int for v in (label, target)):
            raise ValueError("field types")
        return cls(item, label, target, method, metric, float(score), float(seconds), digest)


def _escaped(value: Any) -> Any:
    """A string with lone surrogates (a Latin-1 file name, a JSON ``\\ud83d`` escape) as ``{"u8": hex}`` of its
    surrogate-passing UTF-8 bytes: JSON alone would join a lone high and a lone low surrogate into one character."""
    if isinstance(value, str) and any("\ud800" <= ch <= "\udfff" for ch in value):
        return {"u8": value.encode("utf-8", "surrogatepass").hex()}
    return value


def _unescaped(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) != {"u8"} or not isinstance(value["u8"], str):
            raise ValueError("not a field")
        return bytes.fromhex(value["u8"]).decode("utf-8", "surrogatepass")
    return value


def _crc(text: str) -> str:
    return f"{zlib.crc32(text.encode('ascii')):08x}"


def read_part(path: Path) -> tuple[list[Row], int]:
    """The intact rows of one part file, and how many complete lines were damaged.

    Only lines that end in a newline and whose checksum matches are rows: a line torn by a crash mid-write, or
    damaged on disk, is never read as a score. The writer puts nothing but ASCII in a line, so anything else in
    one is damage too.
    """
    data = path.read_bytes()
    lines = data.split(b"\n")[:-1]  # the text after the last newline is an unfinished line
    if not lines:
        return [], 0
    header = lines[0].decode("utf-8", errors="replace")
    if header != _PART_HEADER:
        old = header == _OLD_PART_HEADER
        raise InvalidInputError(
            f"{str(path)!r} is a part file of an earlier version of semantic-pullbacks (rows not keyed by content); "
            "pass --force to move those results to a previous-* sub-folder and start over, or choose another --out"
            if old
            else f"{str(path)!r} is not a part file of this version (header {header[:80]!r})"
        )
    rows, damaged = [], 0
    for raw in lines[1:]:
        try:
            body, _, check = raw.decode("ascii").rpartition(" ")
            if check != _crc(body):
                raise ValueError("checksum")
            values = json.loads(body)
            if not isinstance(values, list):
                raise ValueError("not a row")
            rows.append(Row.from_fields(values))
        except (ValueError, TypeError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            damaged += 1
    return rows, damaged


class PartWriter:
    """Appends one rank's rows to a part file of its own (created here), each flushed to disk before
    :meth:`append` returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("x", encoding="ascii", newline="")
        self.append([])

    def append(self, rows: Iterable[Row]) -> None:
        text = "".join(r.checked_line() for r in rows)
        if self._file.tell() == 0:
            text = _PART_HEADER + "\n" + text
        if text:
            self._file.write(text)
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file: on a network filesystem, readers on other machines see every row after this."""
        if not self._file.closed:
            self._file.close()


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


class ResultsStore:
    """The results folder of one run (or, with ``out=None``, rows kept in memory).

    Rank 0 :meth:`open` s the folder (lock, settings check, ``config.json``); every rank then writes its rows
    through :meth:`writer`; :meth:`rows` reads back every finished row of every part.

    >>> store = ResultsStore.open("runs/bench", config, resume=True, job="abc")   # doctest: +SKIP
    >>> {r.key for r in store.rows()}                                            # doctest: +SKIP
    """

    def __init__(self, out: Path | None, config: Mapping[str, Any], lock: FolderLock | None = None) -> None:
        self.out = out
        self.config = _as_read_back(config)
        self.lock = lock
        self.damaged = 0
        self.stale = 0
        self._memory: list[Row] = []

    # ------------------------------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        out: str | os.PathLike[str],
        config: Mapping[str, Any],
        *,
        resume: bool = True,
        force: bool = False,
        job: str,
    ) -> ResultsStore:
        """Open ``out`` for this config as job ``job``: resume its rows, or start over.

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
        lock = FolderLock(folder, job)
        lock.acquire()
        try:
            store = cls(folder, config, lock)
            store._check_settings(resume=resume, force=force)
            record = json.dumps({"fingerprint": fingerprint(store.config), "settings": store.config}, indent=2)
            atomic_write(folder / CONFIG, lambda p: p.write_text(record + "\n", "utf-8"))
        except BaseException:
            lock.release()
            raise
        return store

    @classmethod
    def attach(cls, out: str | os.PathLike[str], config: Mapping[str, Any]) -> ResultsStore:
        """The folder another rank opened, for writing this rank's part and reading the rows."""
        return cls(Path(out).expanduser(), config)

    def _check_settings(self, *, resume: bool, force: bool) -> None:
        folder = self.folder
        has_results = (folder / CONFIG).exists() or (folder / PARTS).exists() or (folder / SCORES).exists()
        if not has_results:
            return
        if not resume:
            _move_aside(folder)
            return
        old = _read_config(folder / CONFIG)
        if old is None:
            if not force:
                raise InvalidInputError(
                    f"{str(folder)!r} has results but no readable {CONFIG}, so their settings are unknown; "
                    "choose another --out or pass --force to start over"
                )
            _move_aside(folder)
        elif fingerprint(old.get("settings", {})) != fingerprint(self.config):
            if not force:
                _refuse_other_format(folder, old.get("settings", {}), self.config)
                changed = ", ".join(_diff(old.get("settings", {}), self.config)[:12])
                raise InvalidInputError(
                    f"{str(folder)!r} holds results computed with other settings (changed: {changed}); "
                    "resume with the same settings, choose another --out, or pass --force to start over "
                    "(the old results are kept in a previous-* sub-folder)"
                )
            _move_aside(folder)

    @property
    def folder(self) -> Path:
        if self.out is None:
            raise InvalidInputError("this results store is in memory only")
        return self.out

    # ------------------------------------------------------------------------------------------ rows
    def writer(self, rank: int, job: str) -> PartWriter | _MemoryWriter:
        """Where rank ``rank`` of job ``job`` appends its rows."""
        if self.out is None:
            return _MemoryWriter(self._memory)
        return PartWriter(self.folder / PARTS / f"{job}.rank-{rank}.jsonl")

    def rows(self, digests: Mapping[str, str] | None = None) -> list[Row]:
        """Every finished row, from every part (duplicates keep the first; damaged lines are counted in
        ``damaged`` and left out). With ``digests`` (item id -> content digest), a row computed on other content
        than the item's now is stale: counted in ``stale`` and left out, so its score is computed again."""
        found = list(self._memory) if self.out is None else self._read_parts()
        rows: list[Row] = []
        seen: set[tuple[str, str, str]] = set()
        self.stale = 0
        for r in found:
            if digests is not None and r.item in digests and r.digest != digests[r.item]:
                self.stale += 1
            elif r.key not in seen:
                seen.add(r.key)
                rows.append(r)
        return rows

    def _read_parts(self) -> list[Row]:
        rows: list[Row] = []
        self.damaged = 0
        parts = (self.folder / PARTS).glob("*")
        for path in sorted(p for p in parts if p.suffix in (".jsonl", ".csv")):  # .csv: an earlier version's
            part, damaged = read_part(path)
            self.damaged += damaged
            rows += part
        return rows

    def close(self) -> None:
        """Release the folder for other jobs (rows are already on disk)."""
        if self.lock is not None:
            self.lock.release()


class _MemoryWriter:
    def __init__(self, rows: list[Row]) -> None:
        self._rows = rows

    def append(self, rows: Iterable[Row]) -> None:
        self._rows.extend(rows)

    def close(self) -> None:
        pass


def _as_read_back(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as it reads back from disk (JSON types), so fingerprints compare like with like."""
    return json.loads(json.dumps(dict(config), sort_keys=True, default=repr))


def _refuse_other_format(folder: Path, old: Any, new: Mapping[str, Any]) -> None:
    """Results of another version of the folder's format are refused by name: their rows cannot be trusted
    to mean the same (before format 4, a row did not say which content of its item it was computed on)."""
    before = old.get("format") if isinstance(old, dict) else None
    if before is not None and before != new.get("format"):
        raise InvalidInputError(
            f"{str(folder)!r} holds results of an earlier version of semantic-pullbacks (results format {before}, "
            f"now {new.get('format')}); pass --force to move them to a previous-* sub-folder and start over, or "
            "choose another --out"
        )


def _read_config(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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
