"""The image modality of a benchmark: photos scored by the paper's metrics, 2×2 mosaics scored by Focus.

Targets are the labels when known, else the model's top-1 class (computed once, shared out over the ranks).
Mosaics are drawn from the labels alone (a seeded draw over the whole image list, so every process plans the
same ones) and composed from their four source photos when decoded. Metrics whose perturbed inputs do not depend
on the explanation (infidelity, faithfulness correlation) draw the same perturbations for every method of an
image; their model outputs are computed once per image and shared through an exact cache (:class:`OutputCache`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from semantic_pullbacks.errors import InvalidInputError
from semantic_pullbacks.evaluation.dataset import EvalImage, find_images
from semantic_pullbacks.evaluation.items import Decoder, Inputs, Item, combined_digest, decoded, file_digest
from semantic_pullbacks.evaluation.modality import MethodFactory
from semantic_pullbacks.evaluation.world import World
from semantic_pullbacks.methods import available_methods
from semantic_pullbacks.metrics import get_metric, list_metrics, make_mosaics
from semantic_pullbacks.metrics.presets import DEFAULT_METRICS, Preset, metric_settings
from semantic_pullbacks.models import LoadedModel, Preprocess
from semantic_pullbacks.models import load as load_model

__all__ = [
    "IMAGE",
    "MOSAIC",
    "SHAREABLE",
    "ImageDecoder",
    "ImageModality",
    "OutputCache",
    "compose_mosaics",
    "image_digests",
    "image_items",
    "image_targets",
]

IMAGE, MOSAIC = "image", "mosaic"
#: the kind of item a metric is computed on, where it is not a plain image
METRIC_KINDS: Mapping[str, str] = {"focus": MOSAIC}
#: metrics whose perturbed inputs are the same whatever the explanation: their model outputs are shared
SHAREABLE = ("infidelity", "faithfulness_correlation")


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


@dataclass
class ImageModality:
    """An image benchmark: ``images`` as :func:`~.dataset.find_images` takes them (with ``n_images`` and
    ``labels``), explained for their labels or the model's top-1, then ``n_mosaics`` Focus mosaics (default: one
    per image) when Focus is among the metrics; scored with the metrics of :mod:`semantic_pullbacks.metrics`."""

    loaded: LoadedModel
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
    n_images: int | None = None
    labels: str | os.PathLike[str] | None = None
    n_mosaics: int | None = None
    _cache: OutputCache | None = field(default=None, init=False, repr=False)

    name = IMAGE
    noun = "images"

    # ------------------------------------------------------------------------------------------ catalogue
    @classmethod
    def metric_names(cls) -> list[str]:
        return list_metrics()

    @classmethod
    def default_metrics(cls) -> list[str]:
        return list(DEFAULT_METRICS)

    @classmethod
    def default_methods(cls) -> list[str]:
        return available_methods()

    @classmethod
    def default_preset(cls, options: Mapping[str, Any]) -> str:
        """``fast`` for the bundled photos (a first look), ``paper`` for a data set."""
        images = options.get("images", "examples")
        bundled = isinstance(images, str) and images.strip().lower() == "examples" and not Path(images).exists()
        return "fast" if bundled else "paper"

    @classmethod
    def prepare(cls, **options: Any) -> dict[str, Any]:
        """Check the options that need no model."""
        n = options.get("n_mosaics")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise InvalidInputError(f"n_mosaics must be a positive int or None, got {n!r}")
        return options

    @classmethod
    def load(
        cls, model: str | LoadedModel, device: torch.device, *, weights: str | None = None, **options: Any
    ) -> ImageModality:
        """``model`` (a name :func:`semantic_pullbacks.models.load` takes, or loaded; None: the embedded
        efficientnet_lite0) with the data ``options``."""
        if model is None:
            model = "efficientnet_lite0"
        if not isinstance(model, LoadedModel):
            model = load_model(model, weights=weights, device=device)
        return cls(model, **options)

    # ------------------------------------------------------------------------------------------ the model
    @property
    def device(self) -> torch.device:
        return self.loaded.device

    @property
    def model_name(self) -> str:
        return self.loaded.name

    @property
    def module(self) -> nn.Module:
        return self.loaded.model

    @property
    def method_settings(self) -> dict[str, Any]:
        return {"domain": self.loaded.domain}

    # ------------------------------------------------------------------------------------------ items
    def items(self, world: World, *, metrics: Sequence[str], seed: int, workers: int) -> tuple[list[Item], list[str]]:
        found = find_images(self.images, self.loaded.class_names, self.n_images, labels=self.labels, seed=seed)
        targets = image_targets(self.loaded, found, world, workers=workers)
        mosaics = (self.n_mosaics or len(found)) if "focus" in metrics else 0
        return image_items(found, targets, mosaics=mosaics, seed=seed, digests=image_digests(found, world))

    def decoder(self) -> Decoder:
        return ImageDecoder(self.loaded.preprocess)

    def record(self) -> dict[str, Any]:
        """The model, for the run's settings."""
        m = self.loaded
        return {"name": m.name, "weights": m.weights, "input_size": m.input_size, "domain": list(m.domain)}

    # ------------------------------------------------------------------------------------------ scoring
    def metric_kind(self, metric: str) -> str:
        return METRIC_KINDS.get(metric, IMAGE)

    def metric_settings(self, metric: str, preset: Preset) -> dict[str, Any]:
        return metric_settings(metric, self.loaded.input_size, preset)

    def build_metric(self, metric: str, settings: Mapping[str, Any], *, batch_size: int, seed: int) -> Any:
        return get_metric(metric, **settings, batch_size=batch_size, seed=seed)

    def explain(self, method: Any, item: Item, inputs: Inputs) -> Tensor:
        return method.attribute(inputs.x, target=self._target(item, inputs.x))

    def score(
        self, metric: str, scorer: Any, item: Item, inputs: Inputs, explanation: Tensor, method: MethodFactory
    ) -> Tensor:
        """Quantus-style call: model, inputs, targets, ``attributions=``, ``explain_func=`` and the item's extras
        (Focus: the target's quadrants); shareable metrics see the model through the item's output cache."""
        cache = self._cache_for(item)
        model: Any = cache if metric in SHAREABLE else self.loaded.model
        x = inputs.x
        return scorer(
            model, x, self._target(item, x), attributions=explanation, explain_func=self._explainer(method, cache),
            **inputs.extra,
        )  # fmt: skip

    @staticmethod
    def _target(item: Item, x: Tensor) -> Tensor:
        return torch.tensor([item.target], dtype=torch.long, device=x.device)

    def _cache_for(self, item: Item) -> OutputCache:
        """The output cache of ``item`` (a new item clears it: memory holds one image's perturbations)."""
        if self._cache is None:
            self._cache = OutputCache(self.loaded.model)
        if self._cache.item != item.id:
            self._cache.clear()
            self._cache.item = item.id
        return self._cache

    def _explainer(self, method: MethodFactory, cache: OutputCache) -> Any:
        """``explain_func`` for metrics that re-explain: the method for our model (seeded for this metric if
        stochastic), a fresh one for another model (the randomised copy of ModelParameterRandomisation)."""
        own: list[Any] = []

        def explain(model: Any, x: Tensor, t: Tensor) -> Tensor:
            if model is not self.loaded.model and model is not cache:
                return method(model).attribute(x, target=t)
            if not own:  # built on first use: most metrics never re-explain
                own.append(method())
            return own[0].attribute(x, target=t)

        return explain


class OutputCache:
    """The model's outputs memoised by input content, for the item being scored.

    Shareable metrics feed identical perturbed chunks for every method; equal inputs give equal outputs, so the
    cache changes no score, it only skips repeated forward passes. Inputs are looked up by a fingerprint computed
    on their device (a fixed random projection), and a hit is confirmed by an exact comparison.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.item: str | None = None
        self._entries: dict[tuple[Any, ...], list[tuple[Tensor, Tensor]]] = {}
        self._probes: dict[tuple[int, torch.device], Tensor] = {}
        self.hits = 0

    def _fingerprint(self, x: Tensor) -> tuple[Any, ...]:
        key = (x[0].numel(), x.device)
        probe = self._probes.get(key)
        if probe is None:
            gen = torch.Generator().manual_seed(x[0].numel())
            probe = torch.rand(x[0].numel(), generator=gen, dtype=torch.float64).to(x.device)
            self._probes[key] = probe
        projection = x.detach().reshape(x.shape[0], -1).to(torch.float64) @ probe
        return (tuple(x.shape), x.dtype, tuple(projection.tolist()))

    def __call__(self, x: Tensor) -> Tensor:
        key = self._fingerprint(x)
        for seen, out in self._entries.get(key, ()):
            if torch.equal(seen, x):
                self.hits += 1
                return out
        out = self.model(x)
        self._entries.setdefault(key, []).append((x.detach().clone(), out.detach()))
        return out

    def clear(self) -> None:
        self._entries.clear()


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


def image_digests(images: Sequence[EvalImage], world: World) -> list[str]:
    """Each image's content digest (the key of its rows), each rank hashing a share of the files."""
    mine = {i: file_digest(images[i].path) for i in range(world.rank, len(images), world.size)}
    found: dict[int, str] = {}
    for part in world.all_gather(mine, "the images' digests"):
        found.update(part)
    return [found[i] for i in range(len(images))]


def image_items(
    images: Sequence[EvalImage],
    targets: Sequence[int],
    *,
    mosaics: int,
    seed: int,
    digests: Sequence[str] | None = None,
) -> tuple[list[Item], list[str]]:
    """Image items, then ``mosaics`` Focus mosaics (none, with a note, when fewer than 3 classes are present);
    ``digests``: the images' content digests, when already known."""
    digests = list(digests) if digests is not None else [file_digest(im.path) for im in images]
    items = [Item(im.id, im.label, t, IMAGE, im.path, d) for im, t, d in zip(images, targets, digests)]
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
        digest = combined_digest(*(digests[j] for j in plan.sources[i].tolist()))
        items.append(Item(f"mosaic-{i:04d}", target, target, MOSAIC, source, digest))
    return items, []
