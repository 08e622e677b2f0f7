"""Keeping a Captum call to itself: its own random draws, and hooks on a private copy of the model.

Captum draws noise from the global generators and registers hooks on the model's modules. Left alone, a seeded
call would reseed the caller's generators and a hooked call would act on every other pass through the same
modules (other threads, other explainers, the caller's own forward passes). The two context managers here stop
both.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["hookable", "seeded"]

# Captum draws its noise from the global torch and numpy generators; a seeded call swaps in its own state for
# its whole length, so seeded calls from several threads take turns instead of interleaving their draws.
_GLOBAL_RNG = threading.RLock()


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Deterministic draws (torch and numpy, which Captum's GradientShap uses), the caller's RNG state restored."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with _GLOBAL_RNG, torch.random.fork_rng(devices=devices):
        numpy_state = np.random.get_state()
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)


_MODEL_TURNS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_TURNS_GUARD = threading.Lock()


@contextlib.contextmanager
def hookable(model: Any) -> Iterator[Any]:
    """The model for Captum methods that hook its modules (DeepLift, Guided Grad-CAM) during a call.

    Hooks on the caller's modules would act on every other pass through them while the call runs: other threads,
    other explainers, the caller's own forward passes. So the hooks go on a copy of the module tree that shares
    every parameter and buffer (no weights are copied, and the copy always has the current ones). A model that
    cannot be copied is hooked itself, one call at a time.
    """
    private = None
    if isinstance(model, nn.Module):
        shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
        try:
            private = copy.deepcopy(model, shared)
        except (TypeError, RuntimeError, copy.Error):
            private = None
    if private is not None:
        yield private
        return
    with _TURNS_GUARD:
        lock = _MODEL_TURNS.setdefault(model, threading.RLock())
    with lock:
        yield model
