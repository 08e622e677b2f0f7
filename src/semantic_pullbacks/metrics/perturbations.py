"""Pure perturbation helpers: patch grids, feature orderings, replacement of features by a fill, noise samplers.

They are plain tensor functions (no model, no RNG of their own: samplers draw from the generator they are
given), so the metrics stay short and tests can check each piece against a slow loop.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from semantic_pullbacks.errors import InvalidInputError

__all__ = ["NoiseSampler", "default_patch_size", "patch_masks", "replace_masked", "step_ids", "uniform_sampler"]

NoiseSampler = Callable[[tuple[int, ...], torch.Generator, torch.device, torch.dtype], Tensor]
"""``sampler(shape, generator, device, dtype)`` returns noise of ``shape``.

Metrics that draw noise call it with a documented shape, so a run can be reproduced exactly from noise drawn
elsewhere (for example the noise another library drew)."""


def uniform_sampler(low: float, high: float) -> NoiseSampler:
    """A sampler of i.i.d. uniform noise in ``[low, high)``, drawn from the given generator."""

    def sample(shape: tuple[int, ...], generator: torch.Generator, device: torch.device, dtype: torch.dtype) -> Tensor:
        u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
        return low + (high - low) * u

    return sample


def default_patch_size(height: int, width: int, fraction: float) -> int:
    """A square patch size relative to the input: ``fraction`` of the smaller side (at least 1 pixel).

    The paper's 112 and 56 for 224 inputs are fractions 1/2 and 1/4.
    """
    return max(1, round(min(height, width) * fraction))


def patch_masks(
    height: int,
    width: int,
    patch_size: int,
    stride: int | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Boolean masks ``(P, H, W)`` of square patches at every grid position, row-major.

    The grid starts at the top-left corner with step ``stride`` (default: the patch size, a non-overlapping
    tiling). When the size does not divide the input, the last row/column of patches is clipped at the
    border, so
    every pixel is covered exactly once by a non-overlapping grid.
    """
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise InvalidInputError(f"patch_size must be a positive int, got {patch_size!r}")
    stride = patch_size if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise InvalidInputError(f"stride must be a positive int, got {stride!r}")
    if patch_size > min(height, width):
        raise InvalidInputError(f"patch_size {patch_size} exceeds the input size {height}x{width}")
    tops = _starts(height, patch_size, stride)
    lefts = _starts(width, patch_size, stride)
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    t = torch.tensor(tops, device=device)
    left = torch.tensor(lefts, device=device)
    in_rows = (rows[None, :] >= t[:, None]) & (rows[None, :] < t[:, None] + patch_size)  # (nh, H)
    in_cols = (cols[None, :] >= left[:, None]) & (cols[None, :] < left[:, None] + patch_size)  # (nw, W)
    masks = in_rows[:, None, :, None] & in_cols[None, :, None, :]  # (nh, nw, H, W)
    return masks.reshape(-1, height, width)


def _starts(size: int, patch: int, stride: int) -> list[int]:
    """Patch start offsets along one axis: every ``stride`` while the patch starts inside the input.

    With ``stride == patch`` this tiles the axis (a clipped last tile when ``patch`` does not divide it);
    with a
    smaller stride, starts stop once a patch would run past the border, plus a final flush patch.
    """
    if stride >= patch:
        return list(range(0, size, stride))
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def replace_masked(x: Tensor, masks: Tensor, fill: Tensor | float) -> Tensor:
    """``where(mask, fill, x)`` for a stack of masks: returns ``(P, *x.shape)``.

    ``x`` is ``(B, C, H, W)``; ``masks`` broadcasts to ``(P, B, C, H, W)``; ``fill`` is a scalar or
    broadcasts to
    the same shape.
    """
    fill_t = torch.as_tensor(fill, device=x.device, dtype=x.dtype)
    return torch.where(masks, fill_t, x.unsqueeze(0))


def step_ids(values: Tensor, features_in_step: int, *, descending: bool) -> tuple[Tensor, int]:
    """Assign each feature of ``values`` ``(B, F)`` to a step of ``features_in_step`` features in sorted
    order.

    Returns ``(ids (B, F) long, n_steps)``: step ``t`` holds the features ranked ``t*k`` to ``(t+1)*k -
    1``. The
    sort is stable, so ties keep their flat index order.
    """
    if isinstance(features_in_step, bool) or not isinstance(features_in_step, int) or features_in_step < 1:
        raise InvalidInputError(f"features_in_step must be a positive int, got {features_in_step!r}")
    n_features = values.shape[1]
    order = torch.sort(values, dim=1, descending=descending, stable=True).indices
    position = torch.empty_like(order)
    position.scatter_(1, order, torch.arange(n_features, device=values.device).expand_as(order))
    n_steps = -(-n_features // features_in_step)
    return position // features_in_step, n_steps
