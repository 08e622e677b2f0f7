"""``explain FOLDER --save-tensors`` under torchrun: each image written once, by one rank, and images finished by
an earlier run (with any number of processes) skipped."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from semantic_pullbacks.cli import main
from semantic_pullbacks.examples import example_path

ROOT = Path(__file__).resolve().parents[1]


def test_explain_under_torchrun_writes_each_image_once_and_skips_finished_ones(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("chelsea", "coffee", "rocket"):
        shutil.copy(example_path(name), photos / f"{name}.jpg")
    out = tmp_path / "out"
    args = ["explain", "--method", "Gradient", "--target", "967", "--save-tensors", "npy", "--out", str(out)]
    with contextlib.redirect_stdout(io.StringIO()):  # one process, one image
        assert main([args[0], str(photos / "coffee.jpg"), *args[1:]]) == 0
    before = (out / "coffee_Gradient_967-espresso.npy").stat().st_mtime_ns
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    done = subprocess.run(
        [*cmd, "-m", "semantic_pullbacks", args[0], str(photos), *args[1:]],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 of 3 images were already explained" in done.stdout
    assert done.stdout.count("wrote ") == 2 * 2  # chelsea and rocket: a figure and a tensor each, once
    assert (out / "coffee_Gradient_967-espresso.npy").stat().st_mtime_ns == before  # not redone
    for name in ("chelsea", "coffee", "rocket"):
        saved = np.load(out / f"{name}_Gradient_967-espresso.npy")
        assert saved.shape == (3, 224, 224) and np.isfinite(saved).all()
    logs = {
        p.name.split(".")[-2]: [Path(json.loads(line)[0]).stem for line in p.read_text().splitlines()]
        for p in (out / ".done").iterdir()
    }  # each line: the image's resolved path, size and modification time
    assert sorted(logs) == ["rank-0", "rank-1"]
    assert sorted(logs["rank-0"] + logs["rank-1"]) == ["chelsea", "coffee", "rocket"]
    assert len(logs["rank-1"]) == 1  # the second rank did one of the two


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--images", "no-such-folder", "--out", "{out}"],  # found inside the job, on every rank
        ["explain", "example:chelsea", "--temperatures", "relu=warm", "--out", "{out}"],  # before the job starts
    ],
    ids=["evaluate-missing-folder", "explain-bad-temperature"],
)
def test_a_mistake_under_torchrun_is_one_error_line_and_exit_code_2_on_every_rank(tmp_path, argv):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m"]
    argv = [a.format(out=tmp_path / "out") for a in argv]
    done = subprocess.run(
        [*cmd, "semantic_pullbacks", *argv], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert ("no-such-folder" in errors[0]) if argv[0] == "evaluate" else ("relu" in errors[0] and "warm" in errors[0])
    assert str(ROOT / "src") not in done.stderr  # no traceback from our code, only torchrun's own summary
    codes = re.findall(r"exitcode\s*: (-?\d+)", done.stderr)
    # every rank exits 2, unless torchrun stopped it first (SIGTERM, -15) once another rank had exited
    assert "2" in codes and set(codes) <= {"2", "-15"}, done.stderr[-3000:]
