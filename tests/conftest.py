"""Shared test configuration.

Tests never download: model weights come from the embedded packages or from caches the tests fill themselves. The
switches are set before any test module imports a hub library, and inherited by the CLI processes tests start; the
download tests serve weights from a localhost server and lift the switch for themselves. Tests marked ``cuda`` run
only where a CUDA device is available.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("SEMANTIC_PULLBACKS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def image_folder(tmp_path):  # type: ignore[no-untyped-def]
    """An ImageFolder tree for the evaluation tests: classes 0, 3 and 7 (by index), two noise images each."""
    from distributed_worker import write_png

    root = tmp_path / "data"
    for k, cls in enumerate(("0", "3", "7")):
        (root / cls).mkdir(parents=True)
        for j in range(2):
            write_png(root / cls / f"img{j}.png", seed=10 * k + j)
    return root


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run benchmarks/gpu_check.sh on a GPU machine)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
