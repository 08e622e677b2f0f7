"""The image benchmark's items: photos scored by the regular metrics, 2×2 mosaics scored by Focus.

Targets are the labels when known, else the model's top-1 class (computed once, shared out over the ranks).
Mosaics are drawn from the labels alone (a seeded draw over the whole image list, so every process plans the
same ones) and composed from their four source photos when decoded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from semantic_pullbacks.errors import InvalidInputError
from semantic_pullbacks.evaluation.dataset import EvalImage, find_images
from semantic_pullbacks.evaluation.items import Decoder, Inputs, Item, decoded
from semantic_pullbacks.evaluation.world import World
from semantic_pullbacks.metrics import make_mosaics
from semantic_pullbacks.models import LoadedModel, Preprocess

__all__ = ["IMAGE", "MOSAIC", "ImageDecoder", "ImageSource", "compose_mosaics", "image_items", "image_targets"]

IMAGE, MOSAIC = "image", "mosaic"


@dataclass(frozen=True)
class _MosaicSource:
    ids: tuple[str, ...]  # the source images, quadrants in row-major order
    paths: tuple[Path, ...]
    positions: tuple[bool, bool, bool, bool]  # which quadrants hold the target class

    def record(self) -> list[object]:
        """What identifies the mosaic in the run's settings (paths differ between machines, ids do not)."""
        return [list(self.ids), list(self.positions)]


@dataclass(frozen=True)
class ImageDecoder:
    """Reads an image item's file, or composes a mosaic item from its four files, as the model expects them."""

    preprocess: Preprocess

    def __call__(self, item: Item) -> Inputs:
        if item.kind == MOSAIC:
            src: _MosaicSource = item.source
            tiles = torch.stack([self.preprocess.load(p) for p in src.paths])[None]
            positions = torch.tensor([src.positions], dtype=torch.bool)
            return Inputs(compose_mosaics(tiles), {"positions": positions})
        return Inputs(self.preprocess.load(item.source)[None])


@dataclass(frozen=True)
class ImageSource:
    """The items of an image benchmark: ``images`` as :func:`~.dataset.find_images` takes them (with
    ``n_images`` and ``labels``), explained for their labels or the model's top-1, then ``n_mosaics`` Focus
    mosaics (default: one per image) when Focus is among the metrics."""

    loaded: LoadedModel
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
    n_images: int | None = None
    labels: str | os.PathLike[str] | None = None
    n_mosaics: int | None = None

    def items(self, world: World, *, metrics: Sequence[str], seed: int, workers: int) -> tuple[list[Item], list[str]]:
        found = find_images(self.images, self.loaded.class_names, self.n_images, labels=self.labels, seed=seed)
        targets = image_targets(self.loaded, found, world, workers=workers)
        mosaics = (self.n_mosaics or len(found)) if "focus" in metrics else 0
        return image_items(found, targets, mosaics=mosaics, seed=seed)

    def decoder(self) -> Decoder:
        return ImageDecoder(self.loaded.preprocess)

    def record(self) -> dict[str, Any]:
        """The model, for the run's settings."""
        m = self.loaded
        return {"name": m.name, "weights": m.weights, "input_size": m.input_size, "domain": list(m.domain)}


def compose_mosaics(tiles: Tensor) -> Tensor:
    """``(n, 4, C, H, W)`` source images -> ``(n, C, 2·(H//2), 2·(W//2))`` mosaics, quadrants in row-major
    order, tiles resized exactly as :func:`make_mosaics` does."""
    n, _, c, h, w = tiles.shape
    th, tw = h // 2, w // 2
    flat = tiles.flatten(0, 1)
    flat = torch.nn.functional.interpolate(flat, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)
    return flat.reshape(n, 2, 2, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, 2 * th, 2 * tw)


def image_targets(loaded: LoadedModel, images: Sequence[EvalImage], world: World, *, workers: int) -> list[int]:
    """The class each image is explained for: its label, else the model's top-1, each rank classifying a
    share of the unlabelled images."""
    unlabelled = [i for i, im in enumerate(images) if im.label is None]
    mine = unlabelled[world.rank :: world.size]
    found: dict[int, int] = {}
    if mine:
        items = [Item(images[i].id, None, 0, IMAGE, images[i].path) for i in mine]
        device = loaded.device
        with torch.no_grad():
            for index, (_, inputs) in zip(
                mine, decoded(items, ImageDecoder(loaded.preprocess), device, workers=workers)
            ):
                found[index] = int(loaded.model(inputs.x).argmax(1)[0])
    if unlabelled:
        for part in world.all_gather(found, "the top-1 targets"):
            found.update(part)
    targets = [im.label if im.label is not None else found[i] for i, im in enumerate(images)]
    n_classes = len(loaded.class_names)
    bad = [im.id for im, t in zip(images, targets) if t >= n_classes]
    if bad:
        raise InvalidInputError(f"labels of {bad[:5]} are out of range for a model with {n_classes} classes")
    return targets


def image_items(
    images: Sequence[EvalImage], targets: Sequence[int], *, mosaics: int, seed: int
) -> tuple[list[Item], list[str]]:
    """Image items, then ``mosaics`` Focus mosaics (none, with a note, when fewer than 3 classes are present)."""
    items = [Item(im.id, im.label, t, IMAGE, im.path) for im, t in zip(images, targets)]
    if mosaics == 0:
        return items, []
    n_classes = len(set(targets))
    if n_classes < 3:
        note = (
            f"focus skipped: its mosaics need images of at least 3 distinct classes, these {len(images)} images "
            f"have {n_classes}"
        )
        return items, [note]
    labels = torch.tensor(list(targets), dtype=torch.long)
    # the draw depends on the labels only: plan on 1-pixel stand-ins, compose the real tiles when decoding
    plan = make_mosaics(torch.zeros(len(images), 1, 2, 2), labels, mosaics, seed=seed)
    for i in range(mosaics):
        chosen = [images[j] for j in plan.sources[i].tolist()]
        positions = tuple(bool(p) for p in plan.positions[i].tolist())
        source = _MosaicSource(tuple(im.id for im in chosen), tuple(im.path for im in chosen), positions)  # type: ignore[arg-type]
        target = int(plan.targets[i])
        items.append(Item(f"mosaic-{i:04d}", target, target, MOSAIC, source))
    return items, []
