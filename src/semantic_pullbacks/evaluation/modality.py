"""What a kind of input brings to a benchmark: its items, how a method explains one, and how a metric scores it.

The pipeline (plan, shard, compute, store, report) is the same for every modality; everything that depends on
what an item *is* sits behind :class:`Modality`: the items and their decoding (:class:`~.items.ItemSource`), the
metrics that exist for them and the kind of item each runs on, the module a method is built on, how an
explanation is taken and how a metric is called with it. Images: :class:`~.images.ImageModality`; texts:
:class:`~.texts.TextModality`. A new modality is a new module beside those two; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from semantic_pullbacks.errors import InvalidInputError
from semantic_pullbacks.evaluation.items import Inputs, Item, ItemSource
from semantic_pullbacks.metrics.presets import Preset

__all__ = ["MethodFactory", "Modality", "resolve_metrics"]

#: ``build()`` the method scoring this item (seeded for it, when stochastic); ``build(model)``: one on another model
MethodFactory = Callable[..., Any]


class Modality(ItemSource, Protocol):
    """The modality-specific half of a benchmark.

    Class level (known before a model loads, so bad arguments fail at once): ``name`` (``"image"``, ``"text"``),
    ``noun`` (its plural, for messages), the metrics and methods it offers and runs by default, its default
    preset, :meth:`prepare` (check the data options) and :meth:`load` (the model, then the instance). Instance
    level: the ``device``, ``model_name`` (which picks the recommended temperatures), ``module`` (what methods are
    built on), ``method_settings`` (shared constructor settings, e.g. the input domain), and the three steps of
    scoring: :meth:`build_metric`, :meth:`explain`, :meth:`score`.
    """

    name: str
    noun: str
    device: torch.device
    model_name: str
    module: nn.Module
    method_settings: Mapping[str, Any]

    @classmethod
    def metric_names(cls) -> Sequence[str]: ...

    @classmethod
    def default_metrics(cls) -> Sequence[str]: ...

    @classmethod
    def default_methods(cls) -> Sequence[str]: ...

    @classmethod
    def default_preset(cls, options: Mapping[str, Any]) -> str: ...

    @classmethod
    def prepare(cls, **options: Any) -> dict[str, Any]:
        """The data options checked (and read, where that needs no model)."""
        ...

    @classmethod
    def load(cls, model: Any, device: torch.device, **options: Any) -> Modality:
        """The model (a name, a folder or a loaded one) on ``device``, with the prepared options."""
        ...

    def metric_kind(self, metric: str) -> str:
        """The kind of item ``metric`` is computed on (``"image"``, ``"mosaic"``, ``"text"``, ``"pointing"``)."""
        ...

    def metric_settings(self, metric: str, preset: Preset) -> dict[str, Any]:
        """The metric's constructor settings under ``preset``."""
        ...

    def build_metric(self, metric: str, settings: Mapping[str, Any], *, batch_size: int, seed: int) -> Any:
        """The metric object (it has ``higher_is_better``; its ``vars`` are recorded in the run's settings)."""
        ...

    def explain(self, method: Any, item: Item, inputs: Inputs) -> Tensor:
        """The explanation of ``item`` for its target, as the metrics take it."""
        ...

    def score(
        self, metric: str, scorer: Any, item: Item, inputs: Inputs, explanation: Tensor, method: MethodFactory
    ) -> Tensor:
        """``scorer`` (built by :meth:`build_metric`) applied to one explained item; ``method`` builds the
        method again for metrics that re-explain."""
        ...


def resolve_metrics(metrics: Sequence[str] | str | None, modality: type[Modality] | Any) -> list[str]:
    """Canonical metric names of ``modality`` (default: its default list); a name it does not know fails before
    any work, listing the ones it does."""
    if metrics is None:
        return list(modality.default_metrics())
    if isinstance(metrics, str):
        metrics = [m for m in metrics.split(",") if m.strip()]
    known = list(modality.metric_names())
    names = []
    for m in metrics:
        key = m.strip().lower().replace("-", "_")
        if key not in known:
            raise InvalidInputError(f"unknown metric {m!r} for {modality.noun}; available: {', '.join(known)}")
        names.append(key)
    if not names:
        raise InvalidInputError("no metric given")
    return list(dict.fromkeys(names))
