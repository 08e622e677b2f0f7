"""One rank of a distributed evaluation in the tests: ``evaluate()`` on the suite's small CNN, started by torchrun
(or by hand with the same environment variables).

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_worker.py IMAGES OUT

Tests start jobs with :func:`torchrun` (any command: this worker, or ``-m semantic_pullbacks evaluate ...``).
Faults are injected the way they happen in real jobs, through the public ``on_row`` hook:
``SP_TEST_KILL_RANK=r SP_TEST_AFTER=k`` kills rank r with SIGKILL after its k-th stored row (a node lost, the
OOM killer); ``SP_TEST_FAIL_RANK=r`` makes rank r raise after its k-th row (a bug, a bad file);
``SP_TEST_HANG_RANK=r`` makes rank r hang before its work starts (``SP_TEST_TIMEOUT``: the job's timeout).
``SP_TEST_JOIN=evaluate`` leaves joining the job to ``evaluate()`` itself. ``SP_TEST_BLANK_FAILS=1`` makes the
model refuse to be explained on a white image, ``SP_TEST_ON_ERROR=skip`` lets the job go on past that.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from semantic_pullbacks.evaluation import World, evaluate
from semantic_pullbacks.models import wrap
from small_methods import small_net

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["SoftPullback", "Gradient", "SmoothGrad"]
METRICS = ["faithfulness_correlation", "random_logit", "max_sensitivity", "focus"]


def torchrun(nproc: int, *args: str, env: dict[str, str] | None = None, timeout: float = 300):  # type: ignore[no-untyped-def]
    """``python -m torch.distributed.run --standalone --nproc-per-node N ARGS`` from the repository root: the
    finished process and its wall time."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=environment, cwd=ROOT)
    return done, time.monotonic() - start


def write_png(path: Path, seed: int) -> None:
    """A 40x40 noise PNG, different for every seed."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)


def _refuse_blank_images(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
    """``SP_TEST_BLANK_FAILS=1``: explaining a white image fails (an item a method cannot do)."""
    (x,) = args
    if x.requires_grad and (x > 0.99).flatten(1).all(1).any():
        raise RuntimeError("cannot explain a blank image")


def tiny() -> object:
    model = small_net(classes=10)
    if os.environ.get("SP_TEST_BLANK_FAILS") == "1":
        model.register_forward_pre_hook(_refuse_blank_images)
    return wrap(model, domain=(-1, 1), input_size=32, class_names=[f"c{i}" for i in range(10)], name="tiny")


def run(images: str, out: str | None, **kwargs: object):  # type: ignore[no-untyped-def]
    settings = {"methods": METHODS, "metrics": METRICS, "preset": "fast", "progress": False, "workers": 0}
    settings.update(kwargs)
    return evaluate(tiny(), images, out=out, **settings)  # type: ignore[arg-type]


def _fault_hook():  # type: ignore[no-untyped-def]
    rank = int(os.environ.get("RANK", "0"))
    after = int(os.environ.get("SP_TEST_AFTER", "1"))
    kill = os.environ.get("SP_TEST_KILL_RANK")
    fail = os.environ.get("SP_TEST_FAIL_RANK")
    stored = []

    def on_row(row):  # type: ignore[no-untyped-def]
        stored.append(row)
        if len(stored) == after:
            if kill is not None and int(kill) == rank:
                os.kill(os.getpid(), signal.SIGKILL)
            if fail is not None and int(fail) == rank:
                raise RuntimeError(f"injected failure after {after} rows")

    return on_row


if __name__ == "__main__":
    if os.environ.get("SP_TEST_JOIN") == "evaluate":  # evaluate() finds torchrun's environment by itself
        run(sys.argv[1], sys.argv[2], on_row=_fault_hook(), on_error="raise")
        sys.exit(0)
    timeout = float(os.environ.get("SP_TEST_TIMEOUT", "1800"))
    with World.join(threads=1, timeout=timeout) as world:  # one thread per rank, as the single-process reference
        if os.environ.get("SP_TEST_HANG_RANK") == str(world.rank):
            time.sleep(600)
        on_error = os.environ.get("SP_TEST_ON_ERROR", "raise")
        run(sys.argv[1], sys.argv[2], on_row=_fault_hook(), on_error=on_error, world=world)
