"""The benchmark loop: methods × metrics over a set of images, resumable, one flushed row at a time.

Images go in fixed batches (their composition is part of the settings, so a resumed run reproduces the same
noise draws and scores bit for bit). Per batch and method the explanation is computed once and shared by all
metrics; metrics whose perturbations do not depend on the explanation (infidelity, faithfulness correlation)
share their model outputs across methods through an exact, content-keyed cache. Focus runs on 2×2 mosaics
built from the same images.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from semantic_pullbacks.calibration import recommended_settings
from semantic_pullbacks.calibration.settings import temperatures_for
from semantic_pullbacks.engine import Temperatures
from semantic_pullbacks.errors import InvalidInputError
from semantic_pullbacks.evaluation.dataset import EvalImage, find_images
from semantic_pullbacks.evaluation.presets import DEFAULT_METRICS, Preset, get_preset, metric_settings
from semantic_pullbacks.evaluation.specs import MethodSpec, temperatures_record
from semantic_pullbacks.evaluation.statistics import PairedDifference, Summary, paired_difference, summarise
from semantic_pullbacks.evaluation.store import ResultsStore, Row
from semantic_pullbacks.methods import available_methods, counterpart, get_method
from semantic_pullbacks.metrics import Metric, ZeroAttributionWarning, get_metric, list_metrics, make_mosaics
from semantic_pullbacks.models import LoadedModel

__all__ = ["EvaluationResult", "compose_mosaics", "evaluate", "resolve_methods", "resolve_metrics"]

#: metrics whose perturbed inputs are the same whatever the explanation: their model outputs are shared
_SHAREABLE = ("infidelity", "faithfulness_correlation")
#: perturbed inputs per model call inside the metrics
METRIC_BATCH_SIZE = 32
FORMAT_VERSION = 1


@dataclass
class EvaluationResult:
    """What a benchmark produced: every row, and their statistics.

    ``summaries[(method, metric)]`` holds mean ± std and the bootstrap CI; ``differences`` compares each
    pullback method with its gradient counterpart image by image; ``notes`` lists what was skipped and why;
    ``files`` the paths written (empty without ``out``).
    """

    rows: list[Row]
    methods: list[str]
    metrics: list[str]
    summaries: dict[tuple[str, str], Summary]
    differences: list[PairedDifference]
    higher_is_better: dict[str, bool]
    notes: list[str]
    config: dict[str, Any]
    out: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    computed_rows: int = 0

    def scores(self) -> dict[tuple[str, str], dict[str, float]]:
        """``{(method, metric): {image: score}}``."""
        out: dict[tuple[str, str], dict[str, float]] = {}
        for r in self.rows:
            out.setdefault((r.method, r.metric), {})[r.image] = r.score
        return out

    def markdown(self) -> str:
        """The summary report as Markdown (what ``summary.md`` holds)."""
        from semantic_pullbacks.evaluation.report import markdown_report

        return markdown_report(self)


class _OutputCache:
    """The model's outputs memoised by the exact bytes of the input chunk.

    Metrics in ``_SHAREABLE`` feed identical perturbed chunks for every method; equal bytes give equal outputs,
    so the cache changes no score, it only skips repeated forward passes. Kept per image batch.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._cache: dict[tuple[Any, ...], Tensor] = {}
        self.hits = 0

    def __call__(self, x: Tensor) -> Tensor:
        data = x.detach().contiguous().cpu().numpy()
        key = (tuple(x.shape), str(x.dtype), hashlib.blake2b(data.tobytes(), digest_size=16).digest())
        out = self._cache.get(key)
        if out is None:
            out = self.model(x)
            self._cache[key] = out.detach()
        else:
            self.hits += 1
        return out

    def clear(self) -> None:
        self._cache.clear()


@dataclass(frozen=True)
class _Unit:
    """A batch of images (or mosaics) with the metrics to run on it."""

    items: list[EvalImage]
    metrics: tuple[str, ...]
    mosaic: bool = False


def resolve_metrics(metrics: Sequence[str] | None) -> list[str]:
    """Canonical metric names (default: the paper's seven); an unknown name fails before any work."""
    if metrics is None:
        return list(DEFAULT_METRICS)
    if isinstance(metrics, str):
        metrics = [m for m in metrics.split(",") if m.strip()]
    names = []
    for m in metrics:
        key = m.strip().lower().replace("-", "_")
        if key not in list_metrics():
            raise InvalidInputError(f"unknown metric {m!r}; available: {', '.join(list_metrics())}")
        names.append(key)
    if not names:
        raise InvalidInputError("no metric given")
    return list(dict.fromkeys(names))


def resolve_methods(methods: Sequence[str | MethodSpec] | None) -> list[MethodSpec]:
    """Method specs from names or specs (default: every method); unknown names fail before the model loads."""
    if methods is None:
        methods = available_methods()
    if isinstance(methods, str):
        methods = [m for m in methods.split(",") if m.strip()]
    specs = [m if isinstance(m, MethodSpec) else MethodSpec.of(m.strip()) for m in methods]
    for s in specs:
        get_method(s.method)  # unknown names fail here, before the model loads
    if not specs:
        raise InvalidInputError("no method given")
    labels = [s.label for s in specs]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise InvalidInputError(f"methods listed twice: {', '.join(dupes)}")
    return specs


def _check_ascent(ascent: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"steps": 5, "alpha": 20.0}
    for k, v in dict(ascent or {}).items():
        if k not in ("steps", "alpha", "eps"):
            raise InvalidInputError(f"ascent settings: unknown key {k!r}; known: steps, alpha, eps")
        out[k] = v
    return out


def _decode(loaded: LoadedModel, items: Sequence[EvalImage]) -> Tensor:
    return loaded.preprocess.load_batch([im.path for im in items]).to(loaded.device)


def _batches(items: Sequence[EvalImage], size: int) -> list[list[EvalImage]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _targets(loaded: LoadedModel, images: Sequence[EvalImage], batch_size: int) -> dict[str, int]:
    """True labels where known, else the model's top-1 (one forward pass over the unlabelled images)."""
    out = {im.id: im.label for im in images if im.label is not None}
    unlabelled = [im for im in images if im.label is None]
    for batch in _batches(unlabelled, batch_size):
        with torch.no_grad():
            logits = loaded.model(_decode(loaded, batch))
        for im, t in zip(batch, logits.argmax(1).tolist()):
            out[im.id] = int(t)
    n_classes = len(loaded.class_names)
    bad = [im.id for im in images if out[im.id] >= n_classes]
    if bad:
        raise InvalidInputError(f"labels of {bad[:5]} are out of range for a model with {n_classes} classes")
    return out


@dataclass(frozen=True)
class _MosaicPlan:
    """Which images form each Focus mosaic (from :func:`make_mosaics`'s seeded draw) and where the target is."""

    ids: list[str]
    sources: Tensor  # (n, 4) indices into the image list
    positions: Tensor  # (n, 4) bool
    targets: Tensor  # (n,)


def _mosaic_plan(images: Sequence[EvalImage], targets: Mapping[str, int], n: int, seed: int) -> _MosaicPlan:
    labels = torch.tensor([targets[im.id] for im in images], dtype=torch.long)
    # the draw depends on labels only: plan on 1-pixel stand-ins, decode the real tiles batch by batch
    plan = make_mosaics(torch.zeros(len(images), 1, 2, 2), labels, n, seed=seed)
    ids = [f"mosaic-{i:04d}" for i in range(n)]
    return _MosaicPlan(ids, plan.sources, plan.positions, plan.targets)


def _mosaic_inputs(
    loaded: LoadedModel, images: Sequence[EvalImage], plan: _MosaicPlan, rows: list[int]
) -> tuple[Tensor, Tensor]:
    """Mosaics ``rows`` of the plan and their target quadrants, decoding each source image once."""
    src = plan.sources[rows]
    needed = sorted(set(src.flatten().tolist()))
    decoded = _decode(loaded, [images[i] for i in needed])
    lookup = {j: k for k, j in enumerate(needed)}
    tiles = decoded[torch.tensor([lookup[j] for j in src.flatten().tolist()], device=decoded.device)]
    x = compose_mosaics(tiles.reshape(len(rows), 4, *decoded.shape[1:]))
    return x, plan.positions[rows].to(x.device)


def compose_mosaics(tiles: Tensor) -> Tensor:
    """``(n, 4, C, H, W)`` source images -> ``(n, C, 2·(H//2), 2·(W//2))`` mosaics, quadrants in row-major
    order, tiles resized exactly as :func:`make_mosaics` does."""
    n, _, c, h, w = tiles.shape
    th, tw = h // 2, w // 2
    flat = tiles.flatten(0, 1)
    flat = torch.nn.functional.interpolate(flat, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)
    return flat.reshape(n, 2, 2, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, 2 * th, 2 * tw)


def evaluate(
    model: str | LoadedModel = "efficientnet_lite0",
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] = "examples",
    methods: Sequence[str | MethodSpec] | None = None,
    metrics: Sequence[str] | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    preset: str | None = None,
    n_images: int | None = None,
    batch_size: int = 8,
    weights: str | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    temperatures: Temperatures | Mapping[str, Any] | None = None,
    ascent: Mapping[str, Any] | None = None,
    ascent_temperatures: Temperatures | Mapping[str, Any] | None = None,
    n_mosaics: int | None = None,
    resume: bool = True,
    force: bool = False,
    progress: bool = True,
    on_error: str = "skip",
    on_row: Callable[[Row], None] | None = None,
    chart: bool = True,
) -> EvaluationResult:
    """Score ``methods`` × ``metrics`` on ``images`` and summarise (mean ± std, bootstrap CIs, paired
    differences against the gradient counterparts).

    ``images``: ``"examples"`` (bundled, labelled), a folder, an ImageFolder tree (``root/<wnid|index|name>/``)
    or a list of files; targets are the labels when known, else the top-1 class. ``methods``: names or
    :class:`MethodSpec` (default: every method); ``metrics``: names (default: the paper's seven).
    ``preset``: ``"fast"`` (default for the bundled set) or ``"paper"`` (default otherwise), see
    :mod:`~semantic_pullbacks.evaluation.presets`. With ``out``, rows are appended to ``out/scores.csv`` as
    they finish, and a rerun with ``resume=True`` skips them (other settings are refused unless ``force``);
    ``summary.md``, ``summary.json`` and ``chart.png`` are written at the end. ``on_row`` is called after each
    stored row; ``on_error="skip"`` notes a failing method and goes on, ``"raise"`` stops. ``temperatures=None``
    uses the model family's recommended settings (:func:`~semantic_pullbacks.calibration.recommended_settings`);
    pass ``Temperatures()`` for the paper's. ``ascent_temperatures`` (default: the recommended settings' own, if
    any) are used by the stepping methods, PullbackAscent and DoublePullback.

    >>> result = evaluate(methods=["SoftPullback", "Gradient"], metrics=["infidelity"], out="runs/q")  # doctest: +SKIP
    >>> print(result.markdown())                                                    # doctest: +SKIP
    """
    start = time.perf_counter()
    if on_error not in ("skip", "raise"):
        raise InvalidInputError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidInputError(f"seed must be an int, got {seed!r}")
    specs = resolve_methods(methods)
    metric_names = resolve_metrics(metrics)
    bundled = isinstance(images, str) and images.strip().lower() == "examples" and not Path(images).exists()
    preset_obj: Preset = get_preset(preset if preset is not None else ("fast" if bundled else "paper"))
    ascent_settings = _check_ascent(ascent)

    if isinstance(model, LoadedModel):
        loaded = model
    else:
        from semantic_pullbacks.models import load

        loaded = load(model, weights=weights, device=device)
    # like the CLI: the model family's recommended temperatures unless told otherwise (Temperatures() = paper's)
    if temperatures is None:
        recommended = recommended_settings(loaded.name)
        base_temps = recommended.temperatures
        if ascent_temperatures is None:
            ascent_temperatures = recommended.ascent.temperatures
    else:
        base_temps = Temperatures.coerce(temperatures)
    ascent_temps = Temperatures.coerce(ascent_temperatures) if ascent_temperatures is not None else None
    net = loaded.model
    eval_images = find_images(images, loaded.class_names, n_images)
    size = loaded.input_size
    metric_objs: dict[str, Metric] = {
        name: get_metric(name, **metric_settings(name, size, preset_obj), batch_size=METRIC_BATCH_SIZE, seed=seed)
        for name in metric_names
    }
    shared = {"temperatures": base_temps, "ascent": ascent_settings, "seed": seed, "domain": loaded.domain}
    method_kwargs = {
        s.label: s.resolved(**{**shared, "temperatures": temperatures_for(s.method, base_temps, ascent_temps)})
        for s in specs
    }
    for s in specs:
        method_kwargs[s.label].update(preset_obj.method_settings.get(s.method, {}))

    notes: list[str] = []
    targets = _targets(loaded, eval_images, batch_size)
    plan: _MosaicPlan | None = None
    if "focus" in metric_names:
        n_classes = len({targets[im.id] for im in eval_images})
        if n_classes < 3:
            notes.append(
                f"focus skipped: its mosaics need images of at least 3 distinct classes, these {len(eval_images)} "
                f"images have {n_classes}"
            )
        else:
            plan = _mosaic_plan(eval_images, targets, n_mosaics or len(eval_images), seed)

    config = {
        "format": FORMAT_VERSION,
        "model": {"name": loaded.name, "weights": loaded.weights, "input_size": size, "domain": list(loaded.domain)},
        "images": [[im.id, targets[im.id], im.label is not None] for im in eval_images],
        "preset": preset_obj.name,
        "methods": {s.label: {"method": s.method, "settings": _record(method_kwargs[s.label])} for s in specs},
        "metrics": {name: _record(vars(m)) for name, m in metric_objs.items()},
        "seed": seed,
        "batch_size": batch_size,
        "mosaics": None if plan is None else plan.sources.tolist(),
    }
    if out is not None:
        store = ResultsStore.open(out, config, resume=resume, force=force)
    else:
        store = ResultsStore(None, config, [])

    regular = tuple(m for m in metric_names if m != "focus")
    units = [_Unit(b, regular) for b in _batches(eval_images, batch_size)] if regular else []
    mosaic_items: list[EvalImage] = []
    if plan is not None:
        mosaic_items = [EvalImage(mid, Path(""), int(t)) for mid, t in zip(plan.ids, plan.targets.tolist())]
        units += [_Unit(b, ("focus",), mosaic=True) for b in _batches(mosaic_items, batch_size)]
        for im in mosaic_items:
            targets[im.id] = int(im.label)  # type: ignore[arg-type]
    total = sum(len(u.metrics) for u in units) * len(specs)
    mosaic_index = {mid: i for i, mid in enumerate(plan.ids)} if plan is not None else {}

    built: dict[str, Any] = {}
    failed: dict[str, str] = {}
    failed_metrics: set[tuple[str, str]] = set()
    computed = 0

    def is_done(unit: _Unit, label: str, metric: str) -> bool:
        return all(store.done((im.id, label, metric)) for im in unit.items)

    initial = sum(1 for u in units for s in specs for m in u.metrics if is_done(u, s.label, m))
    bar = _progress(total, initial, progress)
    cache = _OutputCache(net)
    try:
        for unit in units:
            todo = [
                (s, m) for s in specs for m in unit.metrics if s.label not in failed and not is_done(unit, s.label, m)
            ]
            if not todo:
                continue
            cache.clear()
            if unit.mosaic:
                if plan is None:  # mosaic units exist only with a plan
                    raise RuntimeError("internal error: mosaic batch without a mosaic plan")
                x, positions = _mosaic_inputs(loaded, eval_images, plan, [mosaic_index[im.id] for im in unit.items])
                extra: dict[str, Any] = {"positions": positions}
            else:
                x = _decode(loaded, unit.items)
                extra = {}
            t = torch.tensor([targets[im.id] for im in unit.items], dtype=torch.long, device=x.device)
            for spec in specs:
                metrics_todo = [m for s, m in todo if s.label == spec.label]
                if not metrics_todo or spec.label in failed:
                    continue
                try:
                    if spec.label not in built:
                        built[spec.label] = get_method(spec.method)(net, **method_kwargs[spec.label])
                    method = built[spec.label]
                    attributions = method.attribute(x, target=t)
                except Exception as err:  # one broken method must not cost the others' results
                    if on_error == "raise":
                        raise
                    failed[spec.label] = f"{type(err).__name__}: {err}"
                    notes.append(f"{spec.label} skipped: it failed on {unit.items[0].id}: {failed[spec.label]}")
                    continue
                explain = _explainer(spec, method, net, cache, method_kwargs[spec.label])
                for metric in metrics_todo:
                    if (spec.label, metric) in failed_metrics:
                        continue
                    bar.set_postfix_str(f"{spec.label} / {metric}")
                    m_obj = metric_objs[metric]
                    t0 = time.perf_counter()
                    try:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore", ZeroAttributionWarning)
                            scores = m_obj(
                                cache if metric in _SHAREABLE else net,
                                x,
                                t,
                                attributions=attributions,
                                explain_func=explain,
                                **(extra if metric == "focus" else {}),
                            )
                    except Exception as err:  # e.g. a re-explanation the method cannot do
                        if on_error == "raise":
                            raise
                        failed_metrics.add((spec.label, metric))
                        notes.append(f"{spec.label} / {metric} skipped: {type(err).__name__}: {err}")
                        continue
                    per_image = (time.perf_counter() - t0) / x.shape[0]
                    rows = [
                        Row(
                            im.id,
                            -1 if im.label is None else int(im.label),
                            targets[im.id],
                            spec.label,
                            metric,
                            float(s),
                            per_image,
                        )
                        for im, s in zip(unit.items, scores.detach().cpu().tolist())
                    ]
                    new = store.append(rows)
                    computed += len(new)
                    bar.update(1)
                    if on_row is not None:
                        for r in new:
                            on_row(r)
    finally:
        bar.close()
        store.close()

    methods_order = [s.label for s in specs]
    metrics_order = [m for m in metric_names if m != "focus" or plan is not None]
    higher = {m: metric_objs[m].higher_is_better for m in metric_names}
    wanted_ids = {im.id for im in eval_images} | {im.id for im in mosaic_items}
    rows_all = [r for r in store.rows if r.image in wanted_ids]
    by_key: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows_all:
        by_key.setdefault((r.method, r.metric), {})[r.image] = r.score
    summaries = {key: summarise(list(v.values()), seed=seed) for key, v in sorted(by_key.items())}
    differences = _differences(specs, metrics_order, by_key, higher, seed)
    for label, msg in failed.items():
        if not any(label in n for n in notes):
            notes.append(f"{label} skipped: {msg}")
    result = EvaluationResult(
        rows=rows_all,
        methods=methods_order,
        metrics=metrics_order,
        summaries=summaries,
        differences=differences,
        higher_is_better=higher,
        notes=notes,
        config=store.config,
        out=store.out,
        seconds=time.perf_counter() - start,
        computed_rows=computed,
    )
    if store.out is not None:
        from semantic_pullbacks.evaluation.report import write_reports

        result.files = write_reports(result, chart=chart)
    return result


class _NullBar:
    """Stands in for tqdm when progress is off or tqdm is not installed."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, initial: int, enabled: bool) -> Any:
    """A tqdm bar on stderr (counting scores, i.e. (batch, method, metric) units), or a silent stand-in."""
    if not enabled:
        return _NullBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NullBar()
    return tqdm(total=total, initial=initial, desc="evaluate", unit="task", file=sys.stderr)


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


def _explainer(
    spec: MethodSpec, method: Any, net: nn.Module, cache: _OutputCache, kwargs: Mapping[str, Any]
) -> Callable[[Any, Tensor, Tensor], Tensor]:
    """``explain_func`` for metrics that re-explain: the built method for our model, a fresh one for another
    (the randomised copy of ModelParameterRandomisation)."""

    def explain(model: Any, x: Tensor, t: Tensor) -> Tensor:
        m = method if model is net or model is cache else get_method(spec.method)(model, **kwargs)
        return m.attribute(x, target=t)

    return explain


def _differences(
    specs: Sequence[MethodSpec],
    metrics: Sequence[str],
    by_key: Mapping[tuple[str, str], Mapping[str, float]],
    higher: Mapping[str, bool],
    seed: int,
) -> list[PairedDifference]:
    """Each pullback method (and variant) against its gradient counterpart, when both were run."""
    labels = {s.label for s in specs}
    out = []
    for s in specs:
        base = counterpart(s.method)
        if base is None or base not in labels:
            continue
        for metric in metrics:
            a, b = by_key.get((s.label, metric)), by_key.get((base, metric))
            if a and b:
                out.append(
                    paired_difference(
                        a, b, method=s.label, baseline=base, metric=metric, higher_is_better=higher[metric], seed=seed
                    )
                )
    return out
