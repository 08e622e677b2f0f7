"""The results folder's lock: a lock being written is never stolen; one is taken over only when its owner is
provably gone (this host, no such process) or it was not refreshed for the stated time."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from semantic_pullbacks.errors import InvalidInputError
from semantic_pullbacks.evaluation.lock import FolderLock


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.mark.parametrize("content", ["", '{"host": "', "garbage"], ids=["empty", "half-written", "foreign"])
def test_a_fresh_lock_that_cannot_be_read_is_not_stolen_but_an_old_one_is(tmp_path, content):
    lock = tmp_path / ".lock"
    lock.write_text(content)  # e.g. another job between creating its lock and writing it
    with pytest.raises(InvalidInputError, match=r"another evaluation .* is writing"):
        FolderLock(tmp_path, "mine").acquire()
    assert lock.read_text() == content
    _age(lock, 121)  # older than stale_after (120 s): abandoned
    FolderLock(tmp_path, "mine").acquire()
    assert json.loads(lock.read_text())["job"] == "mine"


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over_a_live_one_is_not(tmp_path):
    lock = tmp_path / ".lock"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(json.dumps({"host": socket.gethostname(), "pid": alive.pid, "job": "other"}))
        _age(lock, 3600)  # however old: the process is there
        with pytest.raises(InvalidInputError, match=f"pid {alive.pid}"):
            FolderLock(tmp_path, "mine").acquire()
    finally:
        alive.kill()
        alive.wait()
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": gone.pid, "job": "other"}))
    FolderLock(tmp_path, "mine").acquire()  # fresh, but its process is gone
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # no staged or stale files left behind
