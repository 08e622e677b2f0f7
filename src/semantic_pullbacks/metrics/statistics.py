"""Row-wise statistics the metrics reduce their measurements with: correlations, ranks, normalisation, NaN masks.

Every function works on a batch at once (one row per sample), so a metric scores all its samples in one call.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["normalise_by_max", "pearson", "rank", "spearman", "with_nan"]


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Pearson correlation of ``(B, N)`` tensors; NaN where a row is constant."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    num = (a * b).sum(dim=1)
    den = a.square().sum(dim=1).sqrt() * b.square().sum(dim=1).sqrt()
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.full_like(num, float("nan")))


def rank(a: Tensor) -> Tensor:
    """Row-wise ranks (1-based) with ties given their average rank, as Spearman's rho requires."""
    s = a.sort(dim=1).values.contiguous()
    lo = torch.searchsorted(s, a.contiguous(), right=False)
    hi = torch.searchsorted(s, a.contiguous(), right=True)
    return (lo + hi + 1).to(a.dtype if a.is_floating_point() else torch.float64) / 2


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Spearman rank correlation of ``(B, N)`` tensors (Pearson of average ranks)."""
    return pearson(rank(a), rank(b))


def normalise_by_max(a: Tensor) -> Tensor:
    """Divide each sample's map by its largest absolute value (all-zero maps stay zero)."""
    m = a.reshape(a.shape[0], -1).abs().amax(dim=1).reshape(-1, *([1] * (a.ndim - 1)))
    return torch.where(m > 0, a / m.clamp_min(torch.finfo(a.dtype).tiny), a)


def with_nan(scores: Tensor, mask: Tensor) -> Tensor:
    """Scores with NaN where ``mask`` is true."""
    return torch.where(mask, torch.full_like(scores, float("nan")), scores)
