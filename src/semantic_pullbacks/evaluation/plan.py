"""The plan of a benchmark: which scores it computes, under which settings.

The work is a list of :class:`Unit` s, one per (item, method): explain the item once with the method, then score
that explanation with each metric that runs on the item's kind. The plan is built the same way on every rank from
the same arguments; the settings that decide the scores form the run's config (its fingerprint guards resumes).
Which metrics exist, their settings and the kind of item each runs on (Focus: mosaics; the pointing game: joined
texts) come from the modality (:mod:`.modality`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from semantic_pullbacks.engine import Temperatures
from semantic_pullbacks.errors import InvalidInputError
from semantic_pullbacks.evaluation.items import Item, combined_digest
from semantic_pullbacks.evaluation.modality import Modality
from semantic_pullbacks.evaluation.specs import MethodSpec, temperatures_record
from semantic_pullbacks.methods import Explainer, available_methods
from semantic_pullbacks.methods.configure import temperatures_for
from semantic_pullbacks.metrics.presets import Preset

__all__ = ["FORMAT_VERSION", "Plan", "Unit", "item_records", "resolve_methods"]

#: version of the results folder's layout and of how scores are computed; part of every config
#: (3: rows keyed by ``item``, not ``image``; the config names its modality; 4: part files of JSON rows, each with
#: its item's content digest, so a changed file is recomputed rather than refused or reused)
FORMAT_VERSION = 4


def resolve_methods(methods: Sequence[str | MethodSpec] | None) -> list[MethodSpec]:
    """Method specs from names or specs (default: every method); unknown names fail before the model loads."""
    if methods is None:
        methods = available_methods()
    if isinstance(methods, str):
        methods = [m for m in methods.split(",") if m.strip()]
    specs = [m if isinstance(m, MethodSpec) else MethodSpec.of(m.strip()) for m in methods]
    if not specs:
        raise InvalidInputError("no method given")
    labels = [s.label for s in specs]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise InvalidInputError(f"methods listed twice: {', '.join(dupes)}")
    return specs


def check_ascent(ascent: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"steps": 5, "alpha": 20.0}
    for k, v in dict(ascent or {}).items():
        if k not in ("steps", "alpha", "eps"):
            raise InvalidInputError(f"ascent settings: unknown key {k!r}; known: steps, alpha, eps")
        out[k] = v
    return out


@dataclass(frozen=True)
class Unit:
    """Explain ``plan.items[item]`` with method ``method`` (a label) and score it with ``metrics``; ``passes``
    is about how many backward passes one explanation costs."""

    item: int
    method: str
    metrics: tuple[str, ...]
    passes: int = 1

    def weight(self) -> int:
        """A rough cost, for sharing work out evenly: scores times the method's passes (metrics re-explain)."""
        return len(self.metrics) * self.passes


#: settings that multiply a method's backward passes (noise samples, integration steps, ascent steps)
_PASS_SETTINGS = ("nt_samples", "n_steps", "n_samples", "model_samples", "steps")


def _passes(method: type[Explainer], settings: Mapping[str, Any]) -> int:
    merged = {**getattr(method, "defaults", {}), **settings}
    passes = 1
    for key in _PASS_SETTINGS:
        value = merged.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            passes *= value
    return passes


@dataclass
class Plan:
    """Items × methods × metrics, the settings of every method and metric, and the config they form."""

    items: list[Item]
    specs: list[MethodSpec]
    metrics: list[str]
    method_kwargs: dict[str, dict[str, Any]]
    metric_settings: dict[str, dict[str, Any]]
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    #: the kind of item each metric is computed on
    kinds: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        items: list[Item],
        specs: list[MethodSpec],
        metrics: list[str],
        *,
        modality: Modality,
        preset: Preset,
        temperatures: Temperatures,
        ascent_temperatures: Temperatures | None,
        ascent: Mapping[str, Any],
        seed: int,
        batch_size: int,
        notes: Iterable[str] = (),
    ) -> Plan:
        _check_unique(items)
        items = [_keyed(item) for item in items]
        kinds = {item.kind for item in items}
        metric_kinds = {m: modality.metric_kind(m) for m in metrics}
        running = [m for m in metrics if metric_kinds[m] in kinds]
        shared = {"temperatures": temperatures, "ascent": dict(ascent), "seed": seed, **modality.method_settings}
        method_kwargs = {}
        for s in specs:
            temps = temperatures_for(s.method, temperatures, ascent_temperatures)
            # the preset's cheaper sampling, unless the method's own settings say otherwise
            preset_settings = {k: v for k, v in preset.method_settings.get(s.method, {}).items() if k not in s.settings}
            method_kwargs[s.label] = {**s.resolved(**{**shared, "temperatures": temps}), **preset_settings}
        settings = {name: modality.metric_settings(name, preset) for name in running}
        # the fingerprint holds every setting as the metric sees it, defaults included
        built = {
            name: modality.build_metric(name, kw, batch_size=batch_size, seed=seed) for name, kw in settings.items()
        }
        higher = {name: m.higher_is_better for name, m in built.items()}
        plan = cls(items, specs, running, method_kwargs, settings, {}, list(notes), higher)
        plan.kinds = {m: metric_kinds[m] for m in running}
        plan.config = {
            "format": FORMAT_VERSION,
            "modality": modality.name,
            "model": dict(modality.record()),
            "preset": preset.name,
            "items": _item_ids(items),
            "methods": {s.label: {"method": s.method, "settings": _record(method_kwargs[s.label])} for s in specs},
            "metrics": {name: _record(vars(m)) for name, m in built.items()},
            "seed": seed,
            "batch_size": batch_size,
        }
        return plan

    def units(self) -> list[Unit]:
        """Every unit, item by item (an item's methods together, so they share its decoding and model outputs)."""
        out = []
        for i, item in enumerate(self.items):
            metrics = tuple(m for m in self.metrics if self.kinds.get(m) == item.kind)
            if metrics:
                out += [
                    Unit(i, s.label, metrics, _passes(s.method_class, self.method_kwargs[s.label])) for s in self.specs
                ]
        return out

    def todo(self, finished: set[tuple[str, str, str]]) -> list[Unit]:
        """The units with scores still missing, each cut down to its missing metrics."""
        out = []
        for u in self.units():
            item = self.items[u.item].id
            missing = tuple(m for m in u.metrics if (item, u.method, m) not in finished)
            if missing:
                out.append(Unit(u.item, u.method, missing, u.passes))
        return out

    def digests(self) -> dict[str, str]:
        """Each item's content digest: stored rows of other content are stale."""
        return {item.id: item.digest for item in self.items}

    def keys(self) -> set[tuple[str, str, str]]:
        return {(self.items[u.item].id, u.method, m) for u in self.units() for m in u.metrics}


def _check_unique(items: Sequence[Item]) -> None:
    """Ids key the result rows: two items of one id would share rows (and a resumed run would skip one)."""
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise InvalidInputError(
                f"two items have the id {item.id!r} (its rows would mix): rename one in the data "
                "(ids such as 'pair-0000' and 'mosaic-0000' name the pointing game's items)"
            )
        seen.add(item.id)


def _item_ids(items: Sequence[Item]) -> dict[str, list[Any]]:
    """Which items the run scores, by kind: their ids. What an item holds (its content, label, target, the parts of
    a mosaic) is in its digest instead (:func:`_keyed`), so a changed file is computed again, not refused."""
    out: dict[str, list[Any]] = {}
    for item in items:
        out.setdefault(item.kind, []).append(item.id)
    return out


def item_records(items: Sequence[Item]) -> dict[str, list[Any]]:
    """What the items were in this run, by kind: id, target, whether labelled, and what a composed source says of
    itself (a pair's texts and order, a mosaic's photos and quadrants)."""
    out: dict[str, list[Any]] = {}
    for item in items:
        record: list[Any] = [item.id, item.target, item.label is not None]
        if hasattr(item.source, "record"):
            record.append(item.source.record())
        out.setdefault(item.kind, []).append(record)
    return out


def _keyed(item: Item) -> Item:
    """``item`` with a digest of everything its rows depend on: its content (the source's digest), its label and
    target, and what a composed source says of itself. A stored row of another digest is stale."""
    record = item.source.record() if hasattr(item.source, "record") else None
    facts = json.dumps([item.kind, item.label, item.target, record], default=repr)
    return dataclasses.replace(item, digest=combined_digest(item.digest, facts))


def _record(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings as JSON-able values for the fingerprint (objects by repr, temperatures as a mapping)."""
    out: dict[str, Any] = {}
    for k, v in settings.items():
        if k.startswith("_"):
            continue
        if isinstance(v, Temperatures):
            out[k] = temperatures_record(v)
        elif v is None or isinstance(v, (bool, int, float, str)):
            out[k] = v
        elif isinstance(v, (tuple, list)) and all(isinstance(e, (int, float, str)) for e in v):
            out[k] = list(v)
        else:
            out[k] = repr(v)
    return out
