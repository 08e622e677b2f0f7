"""One job at a time per results folder: a lock file that names its owner and is taken over only from the dead.

Two jobs appending to the same part files would interleave their rows. Ranks on other machines, crashed jobs and
foreign files all meet this lock, so it must never be seen half-written and never be stolen from a live owner.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from pathlib import Path

from semantic_pullbacks.errors import InvalidInputError

__all__ = ["LOCK", "FolderLock"]

#: the lock file's name in the results folder
LOCK = ".lock"


def _link_or_create(staged: Path, path: Path, record: str) -> None:
    """Put the lock in place, complete, or raise FileExistsError: a hard link of the staged record; where the
    filesystem has no hard links, an exclusive create (briefly empty, which :class:`FolderLock` reads as alive)."""
    try:
        os.link(staged, path)
    except FileExistsError:
        raise
    except OSError:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        with os.fdopen(fd, "w") as f:
            f.write(record)


def _lock_owner(text: str, host: str) -> tuple[str, int] | None:
    """(host, pid) of a lock record (a bare pid: a process of ``host``, this one), or None when it is not one."""
    if text.isdigit():
        return (host, int(text)) if int(text) > 0 else None
    try:
        owner = json.loads(text)
        host, pid = str(owner["host"]), int(owner["pid"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return (host, pid) if pid > 0 else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FolderLock:
    """One job per results folder: two jobs appending to the same part files would interleave their rows.

    The lock file names its owner (host, pid, job id) and appears complete or not at all (written under another
    name, then hard-linked into place), so a lock is never seen empty or half-written while its owner is starting.
    It is taken over only when its owner is provably gone: a process on this host that no longer exists; for a lock
    of another host, or one that cannot be read (written by something else), when it was not refreshed for
    ``stale_after`` seconds (the owner refreshes it with :meth:`refresh` while it runs).
    """

    def __init__(self, folder: Path, job: str, stale_after: float = 120.0) -> None:
        self.path = folder / LOCK
        self.job = job
        self.stale_after = stale_after
        self.host = socket.gethostname()

    def acquire(self) -> None:
        record = json.dumps({"host": self.host, "pid": os.getpid(), "job": self.job, "since": time.time()})
        staged = self.path.with_name(f"{LOCK}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        staged.write_text(record, "utf-8")
        try:
            for _ in range(5):
                try:
                    _link_or_create(staged, self.path, record)
                    return
                except FileExistsError:
                    self._take_over_if_stale()
        finally:
            staged.unlink(missing_ok=True)
        raise InvalidInputError(f"could not lock {str(self.path.parent)!r} for writing; try again")

    def _take_over_if_stale(self) -> None:
        """Remove the lock if its owner is gone; refuse (raise) if it may be alive."""
        try:
            inode = self.path.stat().st_ino
            text = self.path.read_text("utf-8", errors="replace").strip()
            age = time.time() - self.path.stat().st_mtime
        except OSError:
            return  # released meanwhile: try again
        owner = _lock_owner(text, self.host)
        if owner is None:  # not one of ours, or damaged: only its age can tell
            alive, where = age < self.stale_after, "unknown owner"
        else:
            host, pid = owner
            alive = pid != os.getpid() and _pid_alive(pid) if host == self.host else age < self.stale_after
            where = f"pid {pid}" + ("" if host == self.host else f" on {host}")
        if alive:
            raise InvalidInputError(
                f"another evaluation ({where}) is writing to {str(self.path.parent)!r}; wait for it or choose "
                f"another --out (a lock of another machine counts as abandoned after {self.stale_after:g} s "
                f"without a refresh; delete {LOCK} there if that process is gone)"
            )
        # move the stale lock aside, then make sure it is the one judged (not a fresh lock taken meanwhile)
        aside = self.path.with_name(f"{LOCK}.{uuid.uuid4().hex[:8]}.stale")
        try:
            os.rename(self.path, aside)
        except OSError:
            return
        if aside.stat().st_ino != inode:  # another job took over first: give its lock back
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
        aside.unlink(missing_ok=True)

    def refresh(self) -> None:
        """Show other hosts that the owner is alive."""
        with contextlib.suppress(OSError):
            os.utime(self.path)

    def release(self) -> None:
        try:
            owner = json.loads(self.path.read_text())
            if owner.get("job") == self.job and owner.get("pid") == os.getpid():
                self.path.unlink()
        except (OSError, ValueError, AttributeError):
            pass
