"""Localisation: Focus on 2×2 mosaics, and the mosaic builder it needs."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from semantic_pullbacks.errors import InvalidInputError
from semantic_pullbacks.metrics.statistics import with_nan
from semantic_pullbacks.metrics.template import Batch, Metric
from semantic_pullbacks.metrics.validation import check_targets

__all__ = ["Focus", "Mosaics", "make_mosaics"]


@dataclass(frozen=True)
class Mosaics:
    """A batch of 2×2 mosaics: ``images`` ``(n, C, 2t, 2t)``, ``targets`` ``(n,)`` and ``positions`` ``(n,
    4)``.

    ``positions[i, q]`` is true where quadrant ``q`` (top-left, top-right, bottom-left, bottom-right) holds
    the
    target class; ``sources`` ``(n, 4)`` gives the index of the source image in each quadrant.
    """

    images: Tensor
    targets: Tensor
    positions: Tensor
    sources: Tensor


def make_mosaics(images: Tensor, labels: Tensor, n: int, seed: int = 0, tile_size: int | None = None) -> Mosaics:
    """Build ``n`` Focus mosaics: two target-class images in two random quadrants, two distractors elsewhere.

    For each mosaic a target class with at least one image is drawn, then two of its images (distinct when the
    class has two or more), and two distractor images of two different other classes; the four tiles are
    placed
    in a random permutation of the quadrants. Tiles are resized (bilinear, antialiased) to ``tile_size``, by
    default half the input size (112 for 224 inputs), so a mosaic has the input's size. Seeded and
    deterministic.
    """
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise InvalidInputError(f"images must be a (N, C, H, W) tensor, got {getattr(images, 'shape', images)!r}")
    labels = check_targets(labels, images, name="labels").cpu()
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInputError(f"n must be a positive int, got {n!r}")
    classes = labels.unique()
    if classes.numel() < 3:
        raise InvalidInputError(f"mosaics need images of at least 3 classes, got {classes.numel()}")
    height, width = images.shape[2:]
    tile_h, tile_w = (tile_size, tile_size) if tile_size is not None else (height // 2, width // 2)
    if tile_h < 1 or tile_w < 1:
        raise InvalidInputError(f"tile_size must be positive, got {tile_size!r}")
    gen = torch.Generator().manual_seed(seed)

    def pick(pool: Tensor, k: int) -> Tensor:
        return pool[torch.randperm(pool.numel(), generator=gen)[:k]]

    sources = torch.empty(n, 4, dtype=torch.long)
    positions = torch.zeros(n, 4, dtype=torch.bool)
    targets = torch.empty(n, dtype=torch.long)
    for i in range(n):
        target = classes[torch.randint(classes.numel(), (1,), generator=gen)].item()
        own = (labels == target).nonzero().flatten()
        chosen = pick(own, 2) if own.numel() >= 2 else own.repeat(2)
        others = pick(classes[classes != target], 2)
        distractors = torch.stack([pick((labels == c).nonzero().flatten(), 1)[0] for c in others])
        quadrants = torch.randperm(4, generator=gen)
        sources[i, quadrants[:2]] = chosen
        sources[i, quadrants[2:]] = distractors
        positions[i, quadrants[:2]] = True
        targets[i] = target
    tiles = images[sources.flatten().to(images.device)]
    if (tile_h, tile_w) != (height, width):
        tiles = F.interpolate(tiles, size=(tile_h, tile_w), mode="bilinear", align_corners=False, antialias=True)
    tiles = tiles.reshape(n, 2, 2, images.shape[1], tile_h, tile_w)
    mosaic = tiles.permute(0, 3, 1, 4, 2, 5).reshape(n, images.shape[1], 2 * tile_h, 2 * tile_w)
    dev = images.device
    return Mosaics(mosaic, targets.to(dev), positions.to(dev), sources.to(dev))


def quadrant_mask(positions: Tensor, height: int, width: int) -> Tensor:
    """Boolean ``(B, H, W)`` mask of the quadrants flagged in ``positions`` ``(B, 4)``."""
    half_h, half_w = height // 2, width // 2
    rows = torch.arange(height, device=positions.device) >= half_h  # bottom half
    cols = torch.arange(width, device=positions.device) >= half_w  # right half
    quadrant = rows[:, None].long() * 2 + cols[None, :].long()  # (H, W) in 0..3
    return positions[:, quadrant]


@dataclass(eq=False)
class Focus(Metric):
    """Focus (Arias-Duart et al. 2022): share of positive relevance inside the target-class quadrants.

    Relevance is the positive part of ``input ⊙ attribution`` summed over channels (the paper's choice;
    ``relevance="attribution"`` uses the positive part of the attribution itself, summed over channels, as
    Quantus's Focus does for a single-channel map). Score in ``[0, 1]``; higher is better; 0.5 is what a map
    spread evenly over the mosaic gets. Pass the mosaic ``positions`` ``(B, 4)`` (from :func:`make_mosaics`).
    A mosaic with no positive relevance at all has no defined score: NaN (or an error), as for all-zero maps.
    """

    name = "focus"
    higher_is_better = True
    category = "localisation"
    call_options = ("positions",)

    _: KW_ONLY
    relevance: Literal["input_x_attribution", "attribution"] = "input_x_attribution"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.relevance not in ("input_x_attribution", "attribution"):
            raise InvalidInputError(f"relevance must be 'input_x_attribution' or 'attribution', got {self.relevance!r}")

    def score(self, data: Batch) -> Tensor:
        x, a, positions = data.inputs, data.attributions, data.options.get("positions")
        if x.ndim != 4:
            raise InvalidInputError(f"Focus needs image mosaics (B, C, H, W), got {tuple(x.shape)}")
        if positions is None:
            raise InvalidInputError("Focus needs positions (B, 4): which quadrants hold the target class")
        pos = torch.as_tensor(positions, device=x.device)
        if pos.shape != (x.shape[0], 4):
            raise InvalidInputError(f"positions must have shape ({x.shape[0]}, 4), got {tuple(pos.shape)}")
        rel = (x * a if self.relevance == "input_x_attribution" else a).sum(1).clamp_min(0)  # (B, H, W)
        zero = self._zero_mask(rel)
        inside = (rel * quadrant_mask(pos.bool(), x.shape[2], x.shape[3])).flatten(1).sum(1)
        total = rel.flatten(1).sum(1)
        return with_nan(inside / torch.where(total > 0, total, torch.ones_like(total)), zero)
