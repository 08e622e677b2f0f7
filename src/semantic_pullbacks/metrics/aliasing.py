"""Aliasing: how much of a map is the period-2 checkerboard that stride-2 convolutions leave in their adjoint.

Why a metric of its own: the adjoint of a stride-2 convolution inserts zeros between the samples of its output
gradient and filters them with the kernel, so every low-frequency component of that gradient reappears near
0.5 cycles per pixel, weighted by the kernel's response there. A map built from a smooth gradient at the
stem's output therefore carries a fixed checkerboard that says nothing about the photo. Infidelity and
max-sensitivity perturb large patches and cannot see it; this metric measures it directly.

The score is the share of the channel-summed map's spectral energy in the period-2 band: frequencies above
``cutoff`` cycles per pixel (default 7/16) on either axis. White noise spreads its energy evenly over all
frequencies and scores the band's share of the frequency grid, ``1 - (1 - 2·(0.5 - cutoff))²`` ≈ 0.23 at the
default; a smooth map scores near 0; a pure checkerboard or stripe pattern of period 2 scores 1. Compare methods
with the gradient's share on the same images (their ratio), not with an absolute threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from semantic_pullbacks.errors import InvalidInputError
from semantic_pullbacks.metrics.statistics import with_nan
from semantic_pullbacks.metrics.template import Batch, Metric

__all__ = ["Aliasing", "period2_share"]

#: 7/16 cycles per pixel: the top eighth of each axis's frequency range, i.e. periods between 2 and 16/7 pixels
DEFAULT_CUTOFF = 0.4375


def _check_cutoff(cutoff: Any) -> float:
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not 0.0 <= cutoff < 0.5:
        raise InvalidInputError(f"cutoff must be a frequency in [0, 0.5) cycles per pixel, got {cutoff!r}")
    return float(cutoff)


def period2_share(maps: Tensor, cutoff: float = DEFAULT_CUTOFF) -> Tensor:
    """Share of each ``(H, W)`` map's spectral energy at frequencies above ``cutoff`` on either axis: ``(B,)``.

    ``maps`` is ``(B, H, W)``. Energy is ``|DFT|²`` (its sum equals the map's sum of squares, by Parseval),
    computed in float64; a map that is zero everywhere gives NaN.
    """
    if not isinstance(maps, Tensor) or maps.ndim != 3:
        raise InvalidInputError(f"maps must be a (B, H, W) tensor, got {getattr(maps, 'shape', type(maps))!r}")
    cutoff = _check_cutoff(cutoff)
    m = maps.detach().to(torch.float64)
    power = torch.fft.fft2(m).abs().square()
    band = _beyond(m.shape[-2], cutoff, m.device)[:, None] | _beyond(m.shape[-1], cutoff, m.device)[None, :]
    total = power.sum(dim=(-2, -1))
    share = (power * band).sum(dim=(-2, -1)) / total
    return torch.where(total > 0, share, torch.full_like(share, math.nan)).to(maps.dtype)


def _beyond(n: int, cutoff: float, device: torch.device) -> Tensor:
    """Which of the ``n`` DFT frequencies ``k / n`` lie above ``cutoff`` in magnitude, decided on the integer ``k``
    (float32 frequencies put 98/224 just above 0.4375)."""
    k = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64, device=device).round().abs()
    return k > cutoff * n


@dataclass(eq=False)
class Aliasing(Metric):
    """Share of the channel-summed map's spectral energy in the period-2 band (see the module docstring).

    Lower is better; read it relative to the gradient's share on the same images. Needs image attributions
    ``(B, C, H, W)``; the model and targets are only validated (the score depends on the map alone). All-zero
    maps score NaN (or raise, with ``on_zero_attribution="raise"``).

    >>> Aliasing()(model, x, y, attributions=SoftPullback(model).attribute(x, target=y))  # doctest: +SKIP
    """

    name = "aliasing"
    higher_is_better = False
    category = "complexity"

    cutoff: float = DEFAULT_CUTOFF

    def __post_init__(self) -> None:
        super().__post_init__()
        self.cutoff = _check_cutoff(self.cutoff)

    def validate(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Batch:
        batch = super().validate(model, inputs, *args, **kwargs)
        if batch.inputs.ndim != 4:
            raise InvalidInputError(f"aliasing needs image inputs (B, C, H, W), got shape {tuple(batch.inputs.shape)}")
        return batch

    def score(self, data: Batch) -> Tensor:
        a = data.attributions
        return with_nan(period2_share(a.sum(dim=1), self.cutoff), self._zero_mask(a))
