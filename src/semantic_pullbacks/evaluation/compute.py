"""Computing scores: explain an item with a method once, then score that explanation with each metric of the unit.

Every random draw is seeded per (item, method, metric) (see :mod:`.seeds`), so a score does not depend on which
rank computes it or what else that rank computes. Metrics whose perturbed inputs do not depend on the explanation
(infidelity, faithfulness correlation) draw the same perturbations for every method of an item; their model
outputs are computed once per item and shared through an exact cache.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from semantic_pullbacks.evaluation.items import Inputs, Item
from semantic_pullbacks.evaluation.plan import Plan, Unit
from semantic_pullbacks.evaluation.seeds import derive_seed
from semantic_pullbacks.evaluation.specs import MethodSpec
from semantic_pullbacks.evaluation.store import Row
from semantic_pullbacks.methods import get_method
from semantic_pullbacks.metrics import ZeroAttributionWarning, get_metric

__all__ = ["SHAREABLE", "OutputCache", "Scorer"]

#: metrics whose perturbed inputs are the same whatever the explanation: their model outputs are shared
SHAREABLE = ("infidelity", "faithfulness_correlation")


class OutputCache:
    """The model's outputs memoised by input content, for the item being scored.

    Shareable metrics feed identical perturbed chunks for every method; equal inputs give equal outputs, so the
    cache changes no score, it only skips repeated forward passes. Inputs are looked up by a fingerprint computed
    on their device (a fixed random projection), and a hit is confirmed by an exact comparison.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
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


class Scorer:
    """Turns a unit of work into rows: one explanation, one score per metric.

    ``on_error="skip"`` notes a failing method (and skips it from then on) or a failing metric and goes on;
    ``"raise"`` stops. The notes are in :attr:`notes`.
    """

    def __init__(self, net: nn.Module, plan: Plan, *, seed: int, batch_size: int, on_error: str) -> None:
        self.net, self.plan, self.seed, self.batch_size, self.on_error = net, plan, seed, batch_size, on_error
        self.specs: dict[str, MethodSpec] = {s.label: s for s in plan.specs}
        self.notes: list[str] = []
        self._failed: set[str] = set()
        self._failed_metrics: set[tuple[str, str]] = set()
        self._built: dict[str, Any] = {}
        self._cache = OutputCache(net)
        self._cached_item: str | None = None

    def score(self, item: Item, inputs: Inputs, unit: Unit) -> Iterator[Row]:
        """The unit's rows, each yielded as soon as its metric is done (so it can be stored at once)."""
        label = unit.method
        if label in self._failed:
            return
        if self._cached_item != item.id:
            self._cache.clear()
            self._cached_item = item.id
        x = inputs.x
        t = torch.tensor([item.target], dtype=torch.long, device=x.device)
        try:
            method = self._method(label, item.id)
            attributions = method.attribute(x, target=t)
        except Exception as err:  # one broken method must not cost the others' results
            if self.on_error == "raise":
                raise
            self._failed.add(label)
            self.notes.append(f"{label} skipped: it failed on {item.id}: {type(err).__name__}: {err}")
            return
        for name in unit.metrics:
            if (label, name) in self._failed_metrics:
                continue
            metric = get_metric(
                name,
                **self.plan.metric_settings[name],
                batch_size=self.batch_size,
                seed=derive_seed(self.seed, item.id, name),
            )
            start = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ZeroAttributionWarning)
                    scores = metric(
                        self._cache if name in SHAREABLE else self.net,
                        x,
                        t,
                        attributions=attributions,
                        explain_func=self._explainer(label, method, item.id, name),
                        **inputs.extra,
                    )
            except Exception as err:  # e.g. a re-explanation the method cannot do
                if self.on_error == "raise":
                    raise
                self._failed_metrics.add((label, name))
                self.notes.append(f"{label} / {name} skipped: {type(err).__name__}: {err}")
                continue
            seconds = time.perf_counter() - start
            score = float(scores.detach().reshape(-1)[0].cpu())
            label_of_item = -1 if item.label is None else int(item.label)
            yield Row(item.id, label_of_item, item.target, label, name, score, seconds)

    def _method(self, label: str, item: str, metric: str | None = None) -> Any:
        """The method for ``label``: built once if deterministic; for a stochastic one, built with a seed of
        its own for this item (and metric, for re-explanations inside a metric)."""
        spec = self.specs[label]
        cls = get_method(spec.method)
        kwargs = self.plan.method_kwargs[label]
        if getattr(cls, "stochastic", False) and "seed" in kwargs:
            names = (item, label) if metric is None else (item, label, metric)
            return cls(self.net, **{**kwargs, "seed": derive_seed(self.seed, *names)})
        if label not in self._built:
            self._built[label] = cls(self.net, **kwargs)
        return self._built[label]

    def _explainer(self, label: str, method: Any, item: str, metric: str) -> Callable[[Any, Tensor, Tensor], Tensor]:
        """``explain_func`` for metrics that re-explain: this method for our model (seeded for this metric if
        stochastic), a fresh one for another model (the randomised copy of ModelParameterRandomisation)."""
        kwargs: Mapping[str, Any] = self.plan.method_kwargs[label]
        cls = get_method(self.specs[label].method)
        own: list[Any] = []

        def explain(model: Any, x: Tensor, t: Tensor) -> Tensor:
            if model is not self.net and model is not self._cache:
                return cls(model, **kwargs).attribute(x, target=t)
            if not own:  # built on first use: most metrics never re-explain
                own.append(self._method(label, item, metric) if getattr(cls, "stochastic", False) else method)
            return own[0].attribute(x, target=t)

        return explain
