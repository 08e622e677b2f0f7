"""Computing scores: explain an item with a method once, then score that explanation with each metric of the unit.

Every random draw is seeded per (item, method, metric) (see :mod:`.seeds`), so a score does not depend on which
rank computes it or what else that rank computes. What an explanation and a metric call are depends on the
modality (:mod:`.modality`); the order of the work, the seeds, the failure handling and the rows do not.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from semantic_pullbacks.evaluation.items import Inputs, Item
from semantic_pullbacks.evaluation.modality import MethodFactory, Modality
from semantic_pullbacks.evaluation.plan import Plan, Unit
from semantic_pullbacks.evaluation.seeds import derive_seed
from semantic_pullbacks.evaluation.specs import MethodSpec
from semantic_pullbacks.evaluation.store import Row
from semantic_pullbacks.metrics import ZeroAttributionWarning

__all__ = ["Scorer", "collapse_skips"]


_SKIP = "{what} skipped on {item}: {why}"
_SKIPPED = re.compile(r"^(?P<what>.+?) skipped on (?P<item>.+?): (?P<why>.*)$", re.S)


def collapse_skips(notes: list[str]) -> list[str]:
    """One note per skipped method (or method / metric), however many items it was skipped on: the first
    item's reason, and how many items (in the order given: plan order, whatever the number of ranks)."""
    out: list[str] = []
    groups: dict[str, list[tuple[str, str]]] = {}
    for note in notes:
        m = _SKIPPED.match(note)
        if m is None:
            out.append(note)
            continue
        if m["what"] not in groups:
            groups[m["what"]] = []
            out.append(m["what"])  # placeholder, filled in below
        groups[m["what"]].append((m["item"], m["why"]))
    for i, note in enumerate(out):
        if note in groups:
            skipped = groups[note]
            first, why = skipped[0]
            where = first if len(skipped) == 1 else f"{len(skipped)} items (first {first})"
            out[i] = _SKIP.format(what=note, item=where, why=why)
    return out


class Scorer:
    """Turns a unit of work into rows: one explanation, one score per metric.

    ``on_error="skip"`` notes a method that fails on an item (that item's unit is skipped) or a metric that fails
    on it (that score is skipped) and goes on; ``"raise"`` stops. The notes are in :attr:`notes`. What is skipped
    is decided item by item, never from what failed earlier on this rank, so the rows of a run are the same
    whatever the number of processes and however the work was shared out.
    """

    def __init__(self, modality: Modality, plan: Plan, *, seed: int, batch_size: int, on_error: str) -> None:
        self.modality, self.plan, self.seed, self.batch_size, self.on_error = modality, plan, seed, batch_size, on_error
        self.specs: dict[str, MethodSpec] = {s.label: s for s in plan.specs}
        self.notes: list[str] = []
        self._built: dict[str, Any] = {}

    def score(self, item: Item, inputs: Inputs, unit: Unit) -> Iterator[Row]:
        """The unit's rows, each yielded as soon as its metric is done (so it can be stored at once)."""
        label = unit.method
        try:
            explanation = self.modality.explain(self._method(label, item.id), item, inputs)
        except Exception as err:  # one broken method must not cost the others' results
            if self.on_error == "raise":
                raise
            self.notes.append(_SKIP.format(what=label, item=item.id, why=f"{type(err).__name__}: {err}"))
            return
        for name in unit.metrics:
            metric = self.modality.build_metric(
                name,
                self.plan.metric_settings[name],
                batch_size=self.batch_size,
                seed=derive_seed(self.seed, item.id, name),
            )
            start = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ZeroAttributionWarning)
                    scores = self.modality.score(
                        name, metric, item, inputs, explanation, self._factory(label, item.id, name)
                    )
            except Exception as err:  # e.g. a re-explanation the method cannot do
                if self.on_error == "raise":
                    raise
                self.notes.append(
                    _SKIP.format(what=f"{label} / {name}", item=item.id, why=f"{type(err).__name__}: {err}")
                )
                continue
            seconds = time.perf_counter() - start
            score = float(torch.as_tensor(scores).detach().reshape(-1)[0].cpu())
            label_of_item = -1 if item.label is None else int(item.label)
            yield Row(item.id, label_of_item, item.target, label, name, score, seconds, item.digest)

    def _method(self, label: str, item: str, metric: str | None = None) -> Any:
        """The method for ``label``: built once if deterministic; for a stochastic one, built with a seed of
        its own for this item (and metric, for re-explanations inside a metric)."""
        cls = self.specs[label].method_class
        kwargs = self.plan.method_kwargs[label]
        if getattr(cls, "stochastic", False) and "seed" in kwargs:
            names = (item, label) if metric is None else (item, label, metric)
            return cls(self.modality.module, **{**kwargs, "seed": derive_seed(self.seed, *names)})
        if label not in self._built:
            self._built[label] = cls(self.modality.module, **kwargs)
        return self._built[label]

    def _factory(self, label: str, item: str, metric: str) -> MethodFactory:
        """Builds the method again inside a metric: for our model, the one of this (item, method, metric); for
        another model (a randomised copy), a fresh one with the same settings."""
        cls = self.specs[label].method_class
        kwargs = self.plan.method_kwargs[label]

        def build(model: Any = None) -> Any:
            if model is not None:
                return cls(model, **kwargs)
            return self._method(label, item, metric)

        return build
