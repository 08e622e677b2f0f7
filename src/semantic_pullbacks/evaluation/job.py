"""The job board: how the ranks of one job learn that the others finished, failed or vanished.

The work itself has no collective (ranks finish their shares at different times, hours apart on a large run), so
instead each rank keeps a small status file in ``out/.job/<job id>/``: ``running`` with a heartbeat, then ``done``
(with its notes) or ``failed`` (with its error). A watcher thread in every rank reads the others' files; when one
failed, or stopped beating (killed, out of memory, its machine gone), it raises the alarm, and this rank's work
stops at its next :meth:`JobBoard.check` (called between scores, so within one metric call): the job ends non-zero
with a message naming that rank. The check is cooperative, never an interrupt of the main thread, so it cannot
land outside the code that handles it. torchrun tears a failed job down on its own too; the board
makes the same guarantee under any launcher, and carries the notes and counts that rank 0 reports.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semantic_pullbacks.errors import SemanticPullbacksError

__all__ = ["JobBoard", "JobFailedError", "RankStatus"]

JOBS = ".job"


class JobFailedError(SemanticPullbacksError, RuntimeError):
    """Another rank of the job failed or stopped responding; the message names it and says why."""


@dataclass(frozen=True)
class RankStatus:
    rank: int
    state: str  # "running" | "done" | "failed" | "stopped" (because another failed) | "missing" (no file yet)
    host: str = ""
    pid: int = 0
    error: str = ""
    notes: tuple[str, ...] = ()
    computed: int = 0
    seconds: float = 0.0  # spent computing its share
    age: float = 0.0  # seconds since the rank last showed a sign of life


class JobBoard:
    """This rank's status file, its heartbeat, and the watch over the other ranks.

    Use as a context manager around the rank's work; call :meth:`done` or :meth:`fail` at the end of it, then
    :meth:`wait` for the others. ``stale_after``: seconds without a heartbeat after which a running rank counts
    as gone.
    """

    def __init__(
        self,
        folder: Path | None,
        job: str,
        rank: int,
        size: int,
        *,
        beat: float = 2.0,
        stale_after: float = 60.0,
        on_beat: Callable[[], None] | None = None,
    ) -> None:
        self.folder = None if folder is None else folder / JOBS / job  # None: a world of one kept in memory
        self.rank, self.size = rank, size
        self.beat, self.stale_after = beat, stale_after
        self.on_beat = on_beat
        self.alarm: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state: dict[str, Any] = {
            "rank": rank,
            "state": "running",
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }

    @staticmethod
    def clear(folder: Path) -> None:
        """Remove the boards of earlier jobs (rank 0, while it holds the folder's lock)."""
        shutil.rmtree(folder / JOBS, ignore_errors=True)

    def _path(self, rank: int) -> Path:
        if self.folder is None:
            raise RuntimeError("this job board is in memory")
        return self.folder / f"rank-{rank}.json"

    def _write(self) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(self.rank)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self._state), "utf-8")
        os.replace(tmp, path)

    # ------------------------------------------------------------------------------------------ this rank
    def __enter__(self) -> JobBoard:
        self._write()
        if self.folder is None:
            return self
        self._thread = threading.Thread(target=self._watch, name="semantic-pullbacks-job-board", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.beat * 2 + 1)

    def done(self, notes: list[str], computed: int, seconds: float = 0.0) -> None:
        self._state.update(state="done", notes=list(notes), computed=int(computed), seconds=float(seconds))
        self._write()

    def stopped(self) -> None:
        """This rank stopped because another failed (it is not the cause)."""
        self._state.update(state="stopped")
        with contextlib.suppress(OSError):
            self._write()

    def fail(self, error: BaseException) -> None:
        text = f"{type(error).__name__}: {error}"
        self._state.update(state="failed", error=text, trace="".join(traceback.format_exception(error))[-4000:])
        with contextlib.suppress(OSError):
            self._write()

    def check(self) -> None:
        """Raise :class:`JobFailedError` if another rank failed (called between scores)."""
        if self.alarm is not None:
            raise JobFailedError(self.alarm)

    # ------------------------------------------------------------------------------------------ the others
    def statuses(self) -> list[RankStatus]:
        if self.folder is None:
            s = self._state
            return [RankStatus(self.rank, s["state"], s["host"], s["pid"], s.get("error", ""),
                               tuple(s.get("notes", ())), int(s.get("computed", 0)),
                               float(s.get("seconds", 0.0)))]  # fmt: skip
        out = []
        now = time.time()
        for r in range(self.size):
            path = self._path(r)
            try:
                data = json.loads(path.read_text("utf-8"))
                age = now - path.stat().st_mtime
            except (OSError, ValueError):
                out.append(RankStatus(r, "missing"))
                continue
            out.append(
                RankStatus(
                    r,
                    str(data.get("state", "?")),
                    str(data.get("host", "")),
                    int(data.get("pid", 0)),
                    str(data.get("error", "")),
                    tuple(data.get("notes", ())),
                    int(data.get("computed", 0)),
                    float(data.get("seconds", 0.0)),
                    age,
                )
            )
        return out

    def trouble(self, statuses: list[RankStatus]) -> str | None:
        """Why the job cannot finish, naming the rank: one that failed (the cause, first), one silent for too
        long, or one that stopped because of a failure this rank has not seen."""
        others = [s for s in statuses if s.rank != self.rank]
        for s in others:
            if s.state == "failed":
                return f"rank {s.rank} of {self.size} failed ({s.host}, pid {s.pid}): {s.error}"
        for s in others:
            if s.state == "running" and s.age > self.stale_after:
                return (
                    f"rank {s.rank} of {self.size} stopped responding ({s.host}, pid {s.pid}; no heartbeat for "
                    f"{s.age:.0f} s): it was killed, ran out of memory, or its machine is gone"
                )
        for s in others:
            if s.state == "stopped":
                return f"rank {s.rank} of {self.size} stopped because another rank failed"
        return None

    def wait(self, poll: float = 0.5) -> list[RankStatus]:
        """Wait until every rank is done; raise :class:`JobFailedError` naming a rank that failed or vanished."""
        started = time.time()
        while True:
            statuses = self.statuses()
            problem = self.trouble(statuses)
            if problem is not None:
                raise JobFailedError(problem)
            missing = [s.rank for s in statuses if s.state == "missing"]
            if missing and time.time() - started > self.stale_after:
                raise JobFailedError(
                    f"rank {missing[0]} of {self.size} never reported to {self.folder} (is --out on a filesystem "
                    "every machine of the job shares?)"
                )
            if all(s.state == "done" for s in statuses):
                return statuses
            time.sleep(poll)

    def _watch(self) -> None:
        while not self._stop.wait(self.beat):
            try:
                os.utime(self._path(self.rank))  # the heartbeat
                if self.on_beat is not None:
                    self.on_beat()
                if self.alarm is None and self._state["state"] == "running":
                    problem = self.trouble(self.statuses())
                    if problem is not None:
                        self.alarm = problem  # the rank's own thread stops at its next check()
            except OSError:
                continue
