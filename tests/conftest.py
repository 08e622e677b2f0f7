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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run benchmarks/gpu_check.sh on a GPU machine)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
