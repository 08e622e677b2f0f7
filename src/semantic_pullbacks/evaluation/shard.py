"""Which rank computes which units: contiguous runs of near-equal weight, decided by rank 0 from the units
still to do.

Contiguous runs keep an item's methods on one rank (one decoding, shared model outputs); weights (the number of
scores in a unit) even out units cut down by a resume. The split only decides *where* a score is computed, never
its value (see :mod:`.seeds`), so any number of ranks, and a resume on another number, gives the same table.
"""

from __future__ import annotations

from collections.abc import Sequence

from semantic_pullbacks.evaluation.plan import Unit

__all__ = ["share"]


def share(units: Sequence[Unit], size: int) -> list[list[Unit]]:
    """``units`` split into ``size`` contiguous runs of about equal total weight (some may be empty)."""
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    total = sum(u.weight() for u in units)
    shares: list[list[Unit]] = [[] for _ in range(size)]
    before = 0
    for u in units:
        # the rank whose stretch of the cumulative weight this unit's middle falls in
        rank = min(size - 1, int((2 * before + u.weight()) * size // (2 * total))) if total else 0
        shares[rank].append(u)
        before += u.weight()
    return shares
