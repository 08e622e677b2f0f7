"""Evaluation spread over processes: real torchrun jobs (gloo, CPU) against single-process runs, resume after a
killed rank on another number of processes, failing ranks, and the pieces underneath (sharing out the work, the
job board, ImageNet's validation layouts, the seeded subset).

The torchrun tests start real processes (a few seconds each to import torch); they use a tiny CNN on 32×32
images, except one that runs the CLI on the embedded model as a user would.
"""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from distributed_worker import run as run_worker
from distributed_worker import torchrun as _torchrun
from distributed_worker import write_png
from semantic_pullbacks.errors import InvalidInputError
from semantic_pullbacks.evaluation import World, find_images
from semantic_pullbacks.evaluation.job import JobBoard, JobFailedError
from semantic_pullbacks.evaluation.plan import Unit
from semantic_pullbacks.evaluation.shard import share
from semantic_pullbacks.evaluation.store import ResultsStore, read_part
from semantic_pullbacks.imagenet import imagenet_classes

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(Path(__file__).with_name("distributed_worker.py"))
pytestmark = pytest.mark.slow


def _reference(image_folder: Path, out: Path | None, **kwargs):
    """The single-process run: the same code, one rank, one thread (as each torchrun rank here)."""
    with World.join(threads=1) as world:
        return run_worker(str(image_folder), None if out is None else str(out), world=world, **kwargs)


def _csv_scores(path: Path) -> list[tuple[str, ...]]:
    with path.open() as f:
        return [(r["item"], r["method"], r["metric"], r["target"], r["score"]) for r in csv.DictReader(f)]


# ------------------------------------------------------------------------------------------------ torchrun
def test_cli_under_torchrun_merges_to_the_single_process_table(tmp_path):
    """``torchrun -m semantic_pullbacks evaluate`` on 2 ranks: scores.csv equals a one-process run's, bit for bit
    (a stochastic method included: its noise is seeded per image, not per rank)."""
    from semantic_pullbacks.cli import main

    args = [
        "evaluate", "--n-images", "2", "--fast", "--methods", "SoftPullback,SmoothGrad",
        "--metrics", "faithfulness_correlation,random_logit", "--threads", "1", "--quiet", "--no-chart",
    ]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    done, _ = _torchrun(2, "-m", "semantic_pullbacks", *args, "--out", str(tmp_path / "two"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("| SoftPullback |") == 2  # rank 0 alone prints the table (mean ± std, CIs)
    assert "on 2 processes" in done.stderr
    one, two = _csv_scores(tmp_path / "one" / "scores.csv"), _csv_scores(tmp_path / "two" / "scores.csv")
    assert len(one) == 2 * 2 * 2 and one == two
    parts = sorted((tmp_path / "two" / "parts").iterdir())
    assert [p.name.split(".", 1)[1] for p in parts] == ["rank-0.jsonl", "rank-1.jsonl"]  # a file of its own each
    assert all(read_part(p)[0] for p in parts)  # both ranks did work


def test_killed_rank_resumed_on_another_number_of_processes_gives_the_same_rows(image_folder, tmp_path):
    reference = _reference(image_folder, tmp_path / "reference")
    out = tmp_path / "run"
    done, _ = _torchrun(2, WORKER, str(image_folder), str(out), env={"SP_TEST_KILL_RANK": "1", "SP_TEST_AFTER": "4"})
    assert done.returncode != 0
    parts = [read_part(p)[0] for p in sorted((out / "parts").glob("*.jsonl"))]
    keys = [r.key for part in parts for r in part]
    assert len(keys) == len(set(keys))  # no row twice
    saved = len(keys)
    assert 4 <= saved < len(reference.rows)
    resumed = _reference(image_folder, out)  # one process picks up what two left
    assert resumed.computed_rows == len(reference.rows) - saved  # nothing finished was redone
    assert [(r.key, r.target, r.score) for r in resumed.rows] == [(r.key, r.target, r.score) for r in reference.rows]
    assert _csv_scores(out / "scores.csv") == _csv_scores(tmp_path / "reference" / "scores.csv")


def test_a_rank_that_raises_ends_the_job_with_its_error(image_folder, tmp_path):
    env = {"SP_TEST_FAIL_RANK": "1", "SP_TEST_JOIN": "evaluate"}  # evaluate() joins torchrun's job by itself
    done, seconds = _torchrun(2, WORKER, str(image_folder), str(tmp_path / "out"), env=env)
    assert done.returncode != 0
    text = done.stdout + done.stderr
    assert "injected failure after 1 rows" in text and "rank: 1" in text  # torchrun's summary names the rank
    assert seconds < 120
    (board,) = (tmp_path / "out" / ".job").iterdir()  # evaluate() joined the job: one board, rank 1 failed on it
    failed = json.loads((board / "rank-1.json").read_text())
    assert failed["state"] == "failed" and "injected failure" in failed["error"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _by_hand(image_folder: Path, out: Path, **faults: str) -> list[subprocess.Popen]:
    """Two ranks started without torchrun, with torch.distributed's environment variables (any launcher)."""
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = {
            **os.environ, "PYTHONPATH": str(ROOT), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
            "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2", **faults,
        }  # fmt: skip
        cmd = [sys.executable, WORKER, str(image_folder), str(out)]
        procs.append(
            subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    return procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.communicate()  # reap it and close its pipes


def test_without_torchrun_the_job_board_stops_the_other_ranks(image_folder, tmp_path):
    """When rank 1 fails, rank 0 stops on its own within seconds and names rank 1 and its error."""
    procs = _by_hand(image_folder, tmp_path / "out", SP_TEST_FAIL_RANK="1", SP_TEST_AFTER="2")
    try:
        _, err1 = procs[1].communicate(timeout=180)
        start = time.monotonic()
        _, err0 = procs[0].communicate(timeout=60)
    finally:
        _stop(procs)
    assert procs[1].returncode != 0 and "injected failure" in err1
    assert procs[0].returncode != 0
    assert "JobFailedError: rank 1 of 2 failed" in err0 and "injected failure after 2 rows" in err0
    assert time.monotonic() - start < 30
    status = json.loads((next((tmp_path / "out" / ".job").iterdir()) / "rank-0.json").read_text())
    assert status["state"] == "stopped"


def test_a_rank_that_hangs_before_a_collective_is_named_after_the_timeout(image_folder, tmp_path):
    procs = _by_hand(image_folder, tmp_path / "out", SP_TEST_HANG_RANK="1", SP_TEST_TIMEOUT="6")
    try:
        start = time.monotonic()
        _, err0 = procs[0].communicate(timeout=120)
        seconds = time.monotonic() - start
    finally:
        _stop(procs)
    assert procs[0].returncode != 0
    assert "rank 0 of 2: not every rank reached the images' digests within 6 s" in err0  # the first collective
    assert re.search(r"Ranks? 1 failed", err0)  # gloo's monitored barrier names the missing rank
    assert seconds < 90


# ------------------------------------------------------------------------------------------------ the pieces
def test_a_rank_that_stops_beating_is_named(tmp_path):
    board = JobBoard(tmp_path, "job", rank=0, size=2, stale_after=30)
    with board:
        other = tmp_path / ".job" / "job" / "rank-1.json"
        other.write_text(json.dumps({"state": "running", "host": "node7", "pid": 4242}))
        assert board.trouble(board.statuses()) is None
        old = time.time() - 45
        os.utime(other, (old, old))
        board.done([], 0)
        with pytest.raises(JobFailedError, match=r"rank 1 of 2 stopped responding \(node7, pid 4242; no heartbeat"):
            board.wait(poll=0.01)


def test_work_is_shared_in_contiguous_runs_of_equal_weight():
    units = [Unit(i // 3, f"m{i % 3}", ("a", "b") if i % 5 else ("a",)) for i in range(40)]
    for size in (1, 2, 3, 7, 64):
        shares = share(units, size)
        assert len(shares) == size and [u for s in shares for u in s] == units  # in order, each unit once
        weights = [sum(u.weight() for u in s) for s in shares]
        if size <= 7:
            assert max(weights) - min(weights) <= 2 * max(u.weight() for u in units)
    assert share([], 3) == [[], [], []]


def test_a_second_job_on_a_folder_in_use_is_refused(image_folder, tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    out = tmp_path / "busy"
    out.mkdir()
    try:
        (out / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": other.pid, "job": "x"}))
        with pytest.raises(InvalidInputError, match=f"another evaluation \\(pid {other.pid}\\) is writing"):
            _reference(image_folder, out)
        (out / ".lock").write_text(json.dumps({"host": "elsewhere", "pid": 1, "job": "y"}))  # fresh: alive
        with pytest.raises(InvalidInputError, match="pid 1 on elsewhere"):
            _reference(image_folder, out)
    finally:
        other.kill()
        other.wait()
    old = time.time() - 600
    os.utime(out / ".lock", (old, old))  # not refreshed for 10 minutes: its job is gone
    assert _reference(image_folder, out, metrics=["random_logit"], methods=["Gradient"]).computed_rows == 6


def _devkit(folder: Path, labels: list[str]) -> tuple[Path, list[str]]:
    """A devkit ``data/`` folder: meta.mat (ids numbered in a shuffled wnid order, plus non-leaf synsets, as the
    real one) and the ground truth of ``labels`` (wnids of images 1, 2, ...)."""
    from scipy.io import savemat

    wnids = list(_wnids())
    order = np.random.default_rng(0).permutation(1000)
    records = [(int(k + 1), wnids[j], "words", "gloss", 0) for k, j in enumerate(order)]
    records += [(1001, "n00001740", "entity", "gloss", 3)]  # an inner synset, not a class
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O")]
    data = folder / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    savemat(data / "meta.mat", {"synsets": np.array(records, dtype=dtype)})
    ids = {w: k + 1 for k, w in enumerate(wnids[j] for j in order)}
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{ids[w]}\n" for w in labels))
    return data, wnids


def _wnids() -> tuple[str, ...]:
    from semantic_pullbacks.evaluation.dataset import imagenet_wnids

    return imagenet_wnids()


def test_flat_imagenet_val_folder_with_the_devkit_ground_truth(tmp_path):
    wnids = _wnids()
    truth = [wnids[7], wnids[0], wnids[999], wnids[7]]
    data, _ = _devkit(tmp_path, truth)
    val = tmp_path / "val"
    val.mkdir()
    for n in range(1, 5):
        write_png(val / f"ILSVRC2012_val_{n:08d}.JPEG", seed=n)
    classes = imagenet_classes()
    for labels in (data / "ILSVRC2012_validation_ground_truth.txt", tmp_path / "ILSVRC2012_devkit_t12"):
        found = find_images(val, classes, labels=labels)
        assert [im.label for im in found] == [7, 0, 999, 7]
    tarball = tmp_path / "ILSVRC2012_devkit_t12.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(tmp_path / "ILSVRC2012_devkit_t12", arcname="ILSVRC2012_devkit_t12")
    assert [im.label for im in find_images(val, classes, labels=tarball)] == [7, 0, 999, 7]
    # the ImageFolder layout of the same images needs no labels file
    tree = tmp_path / "tree"
    for n, w in enumerate(truth, start=1):
        (tree / w).mkdir(parents=True, exist_ok=True)
        write_png(tree / w / f"ILSVRC2012_val_{n:08d}.JPEG", seed=n)
    assert sorted(im.label for im in find_images(tree, classes)) == [0, 7, 7, 999]
    (data / "meta.mat").unlink()
    with pytest.raises(InvalidInputError, match=r"meta\.mat is missing"):
        find_images(val, classes, labels=data / "ILSVRC2012_validation_ground_truth.txt")
    (val / "cat.png").write_bytes((val / "ILSVRC2012_val_00000001.JPEG").read_bytes())
    with pytest.raises(InvalidInputError, match=r"'cat\.png' is not named like an ImageNet validation image"):
        find_images(val, classes, labels=tarball)


def test_the_image_subset_is_seeded_and_nested(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(20):
        write_png(folder / f"{i:02d}.png", seed=i)
    classes = [f"c{i}" for i in range(10)]
    five = find_images(folder, classes, 5, seed=3)
    assert [im.id for im in five] == [im.id for im in find_images(folder, classes, 5, seed=3)]
    assert {im.id for im in five} < {im.id for im in find_images(folder, classes, 8, seed=3)}
    assert {im.id for im in five} != {im.id for im in find_images(folder, classes, 5, seed=4)}
    assert [im.id for im in five] == sorted(im.id for im in five)  # listed in the folder's order


def test_a_distributed_run_needs_an_output_folder(image_folder):
    world = World(rank=0, size=2)
    with pytest.raises(InvalidInputError, match="needs out="):
        run_worker(str(image_folder), None, world=world)


def test_a_score_does_not_depend_on_the_other_images_of_the_run(image_folder, tmp_path):
    """Seeds come from (image, method, metric): an image scores the same next to other images (or alone), with
    a stochastic method and a metric that draws noise."""
    metrics = ["max_sensitivity", "random_logit"]
    everything = {r.key: r.score for r in _reference(image_folder, None, metrics=metrics).rows}
    some = _reference(image_folder, None, metrics=metrics, n_images=2, seed=0).rows
    assert len(some) == 2 * 3 * 2
    assert all(everything[r.key] == r.score for r in some)


def test_rows_in_memory_match_the_folder_run(image_folder, tmp_path):
    in_memory = _reference(image_folder, None, metrics=["random_logit", "focus"])
    on_disk = _reference(image_folder, tmp_path / "disk", metrics=["random_logit", "focus"])
    assert [(r.key, r.score) for r in in_memory.rows] == [(r.key, r.score) for r in on_disk.rows]
    assert len(ResultsStore.attach(tmp_path / "disk", {}).rows()) == len(on_disk.rows) == 6 * 3 + 6 * 3


def test_rank_and_world_size_without_a_rendezvous_address_is_a_typed_error(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("MASTER_PORT", "29511")
    expected = r"MASTER_ADDR is not.*launch with torchrun.*set MASTER_ADDR and MASTER_PORT"
    with pytest.raises(InvalidInputError, match=expected), World.join("cpu"):
        pass


def test_an_item_a_method_cannot_explain_is_skipped_alike_on_any_number_of_processes(
    image_folder, tmp_path, monkeypatch
):
    from PIL import Image

    Image.new("RGB", (40, 40), (255, 255, 255)).save(image_folder / "0" / "blank.png")  # the first item
    env = {"SP_TEST_BLANK_FAILS": "1", "SP_TEST_ON_ERROR": "skip"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    one = _reference(image_folder, tmp_path / "one", on_error="skip")
    done, _ = _torchrun(2, WORKER, str(image_folder), str(tmp_path / "two"), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _csv_scores(tmp_path / "one" / "scores.csv") == _csv_scores(tmp_path / "two" / "scores.csv")
    images = {r.item for r in one.rows if not r.item.startswith("mosaic")}
    assert images == {f"{c}/img{j}" for c in "037" for j in (0, 1)}  # only the blank image's scores are skipped
    assert {r.method for r in one.rows} == {"SoftPullback", "Gradient", "SmoothGrad"}
    skipped = [n for n in one.notes if "skipped on" in n]
    assert len(skipped) == 3 and all("blank" in n and "cannot explain a blank image" in n for n in skipped)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert sorted(summary["notes"]) == sorted(one.notes)


def test_another_rank_failing_is_seen_at_the_next_check_never_as_an_interrupt(tmp_path):
    """The watcher raises the alarm; the rank's own thread stops at its next check(), wherever it was meanwhile (an
    interrupt of the main thread could land outside any handler and end in a traceback and exit code 130)."""
    script = (
        "import json, sys, time\n"
        "from pathlib import Path\n"
        "from semantic_pullbacks.evaluation.job import JobBoard, JobFailedError\n"
        "folder = Path(sys.argv[1])\n"
        "board = JobBoard(folder, 'job', rank=0, size=2, beat=0.05)\n"
        "with board:\n"
        "    (folder / '.job' / 'job' / 'rank-1.json').write_text(json.dumps(\n"
        "        {'state': 'failed', 'host': 'node7', 'pid': 42, 'error': 'RuntimeError: out of memory'}))\n"
        "    time.sleep(3)  # work outside any handler, while the watcher sees the failure\n"
        "    try:\n"
        "        board.check()\n"
        "    except JobFailedError as err:\n"
        "        print('stopped:', err)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "stopped: rank 1 of 2 failed (node7, pid 42): RuntimeError: out of memory"
