"""Checks on what a metric is given: inputs, targets, attributions and whole-number settings.

Each failure is an :class:`~semantic_pullbacks.errors.InvalidInputError` naming the argument, raised before any
model call, so a wrong argument never turns into a wrong score.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from semantic_pullbacks.errors import InvalidInputError

__all__ = ["check_attributions", "check_inputs", "check_positive_int", "check_targets"]


def check_inputs(inputs: Any) -> Tensor:
    """Inputs must be a floating tensor ``(B, ...)`` with at least one sample and only finite values."""
    if not isinstance(inputs, Tensor):
        raise InvalidInputError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if inputs.ndim < 2 or inputs.shape[0] == 0:
        raise InvalidInputError(f"inputs must have shape (B, ...) with B >= 1, got {tuple(inputs.shape)}")
    if not inputs.is_floating_point():
        raise InvalidInputError(f"inputs must be floating point, got {inputs.dtype}")
    if not bool(torch.isfinite(inputs).all()):
        raise InvalidInputError("inputs contain NaN or Inf")
    return inputs.detach()


def check_targets(targets: Any, inputs: Tensor, name: str = "targets") -> Tensor:
    """Targets: an int or integer tensor/sequence of shape ``(B,)``; negative values are rejected here.

    The upper bound (number of classes) is checked against the model's output in
    :func:`~semantic_pullbacks.metrics.batched.target_scores`.
    """
    if isinstance(targets, bool):
        raise InvalidInputError(f"{name} must be integers, got bool")
    if isinstance(targets, int):
        targets = torch.full((inputs.shape[0],), targets, dtype=torch.long)
    t = targets if isinstance(targets, Tensor) else torch.as_tensor(targets)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise InvalidInputError(f"{name} must be an integer tensor, got {t.dtype}")
    t = t.reshape(-1) if t.ndim == 0 else t
    if t.shape != (inputs.shape[0],):
        raise InvalidInputError(f"{name} must have shape ({inputs.shape[0]},), got {tuple(t.shape)}")
    if bool((t < 0).any()):
        raise InvalidInputError(f"{name} must be non-negative class indices, got min {int(t.min())}")
    return t.to(device=inputs.device, dtype=torch.long)


def check_attributions(attributions: Any, inputs: Tensor, name: str = "attributions") -> Tensor:
    """Attributions must be finite and shaped like inputs, or like inputs with a single channel
    (broadcast).
    """
    if not isinstance(attributions, Tensor):
        try:
            attributions = torch.as_tensor(attributions)
        except (TypeError, ValueError, RuntimeError) as err:
            raise InvalidInputError(f"{name} must be a tensor, got {type(attributions).__name__}") from err
    a = attributions.detach().to(device=inputs.device, dtype=inputs.dtype)
    shape, ishape = tuple(a.shape), tuple(inputs.shape)
    ok = shape == ishape or (
        len(shape) == len(ishape)
        and len(ishape) >= 3
        and shape[0] == ishape[0]
        and shape[1] == 1
        and shape[2:] == ishape[2:]
    )
    if not ok:
        raise InvalidInputError(f"{name} must have the inputs' shape {ishape} (or a single channel), got {shape}")
    if not bool(torch.isfinite(a).all()):
        raise InvalidInputError(f"{name} contain NaN or Inf")
    return a.expand(ishape)


def check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a positive int, got {value!r}")
