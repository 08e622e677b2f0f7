"""The benchmark as a pipeline: plan → shard → compute → store → report.

The same code runs in one process and on every rank of a torchrun job; one process is the world of size 1, and
images and texts are two modalities of it (:mod:`.modality`: :mod:`.images`, :mod:`.texts`).
Every rank builds the same :class:`~.plan.Plan` (items × methods × metrics and their settings); rank 0 opens the
results folder, finds the scores still missing and :func:`~.shard.share` s them out; each rank computes its share
(:class:`~.compute.Scorer`), appending rows to its own part file (:mod:`.store`) while a
:class:`~.job.JobBoard` watches the other ranks; rank 0 then reports the merged table (:mod:`.report`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from semantic_pullbacks.calibration import recommended_settings
from semantic_pullbacks.engine import Temperatures
from semantic_pullbacks.errors import InvalidInputError
from semantic_pullbacks.evaluation.compute import Scorer, collapse_skips
from semantic_pullbacks.evaluation.images import ImageModality, compose_mosaics
from semantic_pullbacks.evaluation.items import decoded
from semantic_pullbacks.evaluation.job import JobBoard, JobFailedError, RankStatus
from semantic_pullbacks.evaluation.language import LanguageModality, is_causal_lm
from semantic_pullbacks.evaluation.modality import Modality, resolve_metrics
from semantic_pullbacks.evaluation.plan import Plan, Unit, check_ascent, item_records, resolve_methods
from semantic_pullbacks.evaluation.report import write_reports
from semantic_pullbacks.evaluation.result import EvaluationResult
from semantic_pullbacks.evaluation.seeds import check_seed
from semantic_pullbacks.evaluation.shard import share
from semantic_pullbacks.evaluation.specs import MethodSpec
from semantic_pullbacks.evaluation.statistics import PairedDifference, paired_difference, summarise
from semantic_pullbacks.evaluation.store import ResultsStore, Row, fingerprint
from semantic_pullbacks.evaluation.texts import TextModality
from semantic_pullbacks.evaluation.world import DEFAULT_TIMEOUT, World
from semantic_pullbacks.methods import counterpart
from semantic_pullbacks.metrics.presets import get_preset
from semantic_pullbacks.text.model import TextModel

__all__ = ["EvaluationResult", "compose_mosaics", "evaluate", "resolve_methods", "resolve_metrics"]


def evaluate(
    model: Any = None,
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] = "examples",
    methods: Sequence[str | MethodSpec] | None = None,
    metrics: Sequence[str] | None = None,
    *,
    texts: Any = None,
    classes: Sequence[str] | Mapping[str, str] | None = None,
    template: str | None = None,
    split: str | None = None,
    n_texts: int | None = None,
    n_pairs: int | None = None,
    out: str | os.PathLike[str] | None = None,
    preset: str | None = None,
    n_images: int | None = None,
    labels: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
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
    workers: int = 1,
    world: World | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> EvaluationResult:
    """Score ``methods`` × ``metrics`` on ``images`` (or ``texts``) and summarise (mean ± std, bootstrap CIs,
    paired differences against the gradient counterparts), in this process or spread over a torchrun job.

    Images (``model``: a name :func:`semantic_pullbacks.models.load` takes, or a loaded model; default
    ``efficientnet_lite0``): ``images`` is ``"examples"`` (bundled, labelled), a folder, an ImageFolder tree
    (``root/<wnid|index|name>/``), ImageNet's flat validation folder with ``labels`` (the devkit's ground truth) or
    a list of files; targets are the labels when known, else the top-1 class. ``n_images`` picks a seeded subset.
    ``methods``: names or :class:`MethodSpec` (default: every method); ``metrics``: names (default: the paper's
    seven). ``preset``: ``"fast"`` (default for the bundled set; fewer noise samples and integration steps for the
    sampling methods, except where a ``MethodSpec``'s own settings name them) or ``"paper"`` (default otherwise).
    ``batch_size``: inputs per model call inside the metrics. ``temperatures=None`` uses the model family's
    recommended settings (pass ``Temperatures()`` for the paper's); ``ascent_temperatures`` (default: the
    recommended settings' own) are used by PullbackAscent and DoublePullback.

    Texts (``texts=`` given, or ``model`` a :class:`~semantic_pullbacks.text.TextModel`; default model: the
    embedded all-MiniLM-L6-v2): ``texts`` is ``"examples"`` (80 bundled reviews), a ``.jsonl``/``.json``/``.csv``/
    ``.tsv``/``.txt`` file of ``text,label`` rows or a dataset folder (``split`` picks one of its splits); each
    text is explained for its label's class (else the model's prediction), and ``n_texts`` picks a seeded
    subset. A sequence classifier explains its logit; an embedding model the cosine similarity to the class's
    description, from ``classes`` (names, or name -> description) and ``template`` (``"This example is {}."``
    unless the data gives its own). Metrics: comprehensiveness, sufficiency, deletion_abc and pointing_game (on
    ``n_pairs`` joined pairs of texts of different classes, default one per text); methods default to
    SoftPullback, IntegratedPullbacks and their gradient counterparts; the preset to ``"paper"``.

    With ``out``, every score is appended to a file of ``out/parts/`` as it finishes, and a rerun with
    ``resume=True`` skips the scores found there, whatever number of processes computed them (other settings
    are refused unless ``force``); ``scores.csv``, ``summary.md``, ``summary.json`` and ``chart.png`` are written
    at the end. ``on_row`` is called after each stored row; ``on_error="skip"`` notes a method (or metric) failing
    on an item, skips that item's scores and goes on, ``"raise"`` stops. ``workers``: processes decoding images
    ahead of use (0: none).

    Distributed: under torchrun (or with ``torch.distributed`` already initialised, or a ``world`` handed in)
    each rank computes a share of the missing scores and rank 0 writes the reports; ``out`` must then be a folder
    every rank can reach. Scores do not depend on the number of processes. ``timeout``: seconds a start-up
    collective waits for the other ranks.

    >>> result = evaluate(methods=["SoftPullback", "Gradient"], metrics=["infidelity"], out="runs/q")  # doctest: +SKIP
    >>> result = evaluate(texts="examples", out="runs/text")                                          # doctest: +SKIP
    >>> print(result.markdown())                                                    # doctest: +SKIP
    """
    start = time.perf_counter()
    modality, options = _modality(
        model, images, texts,
        images_options={"n_images": n_images, "labels": labels, "n_mosaics": n_mosaics, "weights": weights},
        text_options={"classes": classes, "template": template, "split": split, "n_texts": n_texts,
                      "n_pairs": n_pairs},
    )  # fmt: skip
    request = _Request.checked(methods, metrics, modality, options, preset, ascent, on_error, batch_size, seed, workers)
    home = device if device is not None else getattr(model, "device", None) if not isinstance(model, str) else None
    with _joined(world, home, timeout) as w:
        if w.size > 1 and out is None:
            raise InvalidInputError("a run spread over several processes needs out= (a folder every rank can reach)")
        source = modality.load(model, w.device, **request.options)
        plan = _plan(request, source, temperatures, ascent_temperatures, w)
        store, job, shares = _open(plan, out, w, resume=resume, force=force)
        try:
            statuses = _compute(plan, source, store, job, shares[w.rank], w, request, progress, on_row)
            return _report(plan, store, statuses, w, start, chart)
        finally:
            store.close()


# ------------------------------------------------------------------------------------------------ the steps
def _modality(
    model: Any, images: Any, texts: Any, *, images_options: dict[str, Any], text_options: dict[str, Any]
) -> tuple[type[Modality], dict[str, Any]]:
    """Which modality the arguments ask for, with its options; an option of the other one is refused by name."""
    text = texts is not None or isinstance(model, TextModel)
    chosen, other = (text_options, images_options) if text else (images_options, text_options)
    stray = [k for k, v in other.items() if v is not None]
    if text and not (isinstance(images, str) and images == "examples"):
        stray.insert(0, "images")
    if stray:
        mode, fix = ("a text run", "pass images= for an image run") if text else ("an image run", "pass texts=")
        raise InvalidInputError(f"{', '.join(f'{k}=' for k in stray)} cannot be used in {mode}; {fix}")
    if text and is_causal_lm(model):
        return LanguageModality, {"texts": "examples" if texts is None else texts, **chosen}  # type: ignore[return-value]
    if text:
        return TextModality, {"texts": "examples" if texts is None else texts, **chosen}  # type: ignore[return-value]
    return ImageModality, {"images": images, **chosen}  # type: ignore[return-value]


@dataclass(frozen=True)
class _Request:
    """The arguments that need no model, checked before anything is loaded."""

    modality: Any
    options: dict[str, Any]
    specs: list[MethodSpec]
    metrics: list[str]
    preset: Any
    ascent: dict[str, Any]
    on_error: str
    batch_size: int
    seed: int
    workers: int

    @classmethod
    def checked(  # type: ignore[no-untyped-def]
        cls, methods, metrics, modality, options, preset, ascent, on_error, batch_size, seed, workers
    ) -> _Request:
        if on_error not in ("skip", "raise"):
            raise InvalidInputError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        for name, value, least in (("batch_size", batch_size, 1), ("workers", workers, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise InvalidInputError(f"{name} must be an int >= {least}, got {value!r}")
        check_seed(seed)
        specs = resolve_methods(methods if methods is not None else modality.default_methods())
        names = resolve_metrics(metrics, modality)
        chosen = get_preset(preset if preset is not None else modality.default_preset(options))
        ascent = check_ascent(ascent)
        options = modality.prepare(**options)
        return cls(modality, options, specs, names, chosen, ascent, on_error, batch_size, seed, workers)


def _joined(world: World | None, device: Any, timeout: float) -> contextlib.AbstractContextManager[World]:
    return contextlib.nullcontext(world) if world is not None else World.join(device, timeout=timeout)


def _plan(  # type: ignore[no-untyped-def]
    request: _Request, source: Modality, temperatures, ascent_temperatures, w: World
) -> Plan:
    """Items (from the modality), the methods' and metrics' settings, the config; the same on every rank, which is
    checked."""
    items, notes = source.items(w, metrics=request.metrics, seed=request.seed, workers=request.workers)
    # like the CLI: the model family's recommended temperatures unless told otherwise (Temperatures() = paper's)
    if temperatures is None:
        recommended = recommended_settings(source.model_name)
        base = recommended.temperatures
        if ascent_temperatures is None:
            ascent_temperatures = recommended.ascent.temperatures
    else:
        base = Temperatures.coerce(temperatures)
    plan = Plan.build(
        items,
        request.specs,
        request.metrics,
        modality=source,
        preset=request.preset,
        temperatures=base,
        ascent_temperatures=Temperatures.coerce(ascent_temperatures) if ascent_temperatures is not None else None,
        ascent=request.ascent,
        seed=request.seed,
        batch_size=request.batch_size,
        notes=notes,
    )
    prints = w.all_gather(fingerprint(plan.config), "the plan")
    odd = [r for r, p in enumerate(prints) if p != prints[0]]
    if odd:
        raise InvalidInputError(
            f"rank {odd[0]} of {w.size} planned other work than rank 0 (settings fingerprint {prints[odd[0]]} vs "
            f"{prints[0]}): start every rank with the same arguments, on the same {source.noun}"
        )
    return plan


def _open(
    plan: Plan, out: str | os.PathLike[str] | None, w: World, *, resume: bool, force: bool
) -> tuple[ResultsStore, str, list[list[Unit]]]:
    """Rank 0 opens the results folder, finds what is done and shares out the rest; every rank learns the
    outcome (or rank 0's error) from one broadcast."""
    decision: dict[str, Any] = {}
    store: ResultsStore | None = None
    failure: Exception | None = None
    if w.is_main:
        try:
            job = uuid.uuid4().hex[:12]
            if out is None:
                store = ResultsStore(None, plan.config)
            else:
                store = ResultsStore.open(out, plan.config, resume=resume, force=force, job=job)
                JobBoard.clear(store.folder)
            finished = {r.key for r in store.rows(plan.digests())} & plan.keys()
            todo = plan.todo(finished)
            decision = {"job": job, "shares": share(todo, w.size)}
            if store.damaged:
                plan.notes.append(f"{store.damaged} damaged lines in {out}/parts were ignored; their scores recomputed")
            if store.stale:
                plan.notes.append(f"{store.stale} stored scores were of files changed since; computed again")
        except Exception as err:  # the other ranks must stop too, with the same message
            if store is not None:
                store.close()
            failure = err
            decision = {"error": (type(err).__name__, str(err), isinstance(err, InvalidInputError))}
    decision = w.broadcast(decision, "the share-out of the work")
    if "error" in decision:
        if w.is_main:
            raise failure
        name, message, invalid = decision["error"]
        raise InvalidInputError(message) if invalid else JobFailedError(f"rank 0 failed: {name}: {message}")
    if store is None:
        store = ResultsStore.attach(out, plan.config) if out is not None else ResultsStore(None, plan.config)
    return store, decision["job"], decision["shares"]


def _compute(
    plan: Plan,
    source: Modality,
    store: ResultsStore,
    job: str,
    units: list[Unit],
    w: World,
    request: _Request,
    progress: bool,
    on_row: Callable[[Row], None] | None,
) -> list[RankStatus]:
    """This rank's share: decode each item ahead of use, score its units, append the rows; then wait for the
    other ranks. Returns every rank's final status."""
    by_item: dict[int, list[Unit]] = {}
    for u in units:
        by_item.setdefault(u.item, []).append(u)
    items = [plan.items[i] for i in by_item]
    position = {it.id: i for i, it in zip(by_item, items)}
    scorer = Scorer(source, plan, seed=request.seed, batch_size=request.batch_size, on_error=request.on_error)
    lock = store.lock
    board = JobBoard(store.out, job, w.rank, w.size, on_beat=lock.refresh if lock is not None else None)
    writer = store.writer(w.rank, job)
    computed = 0
    bar = _progress(sum(len(u.metrics) for u in units), progress and w.is_main, w)
    started = time.perf_counter()
    with board:
        try:
            for item, inputs in decoded(items, source.decoder(), source.device, workers=request.workers):
                for unit in by_item[position[item.id]]:
                    board.check()
                    bar.set_postfix_str(f"{unit.method} / {item.id}")
                    for row in scorer.score(item, inputs, unit):
                        writer.append([row])
                        computed += 1
                        if on_row is not None:
                            on_row(row)
                        board.check()  # between metrics too: another rank's failure stops this one within a score
                    bar.update(len(unit.metrics))
            writer.close()
            board.done(scorer.notes, computed, time.perf_counter() - started)
            return board.wait()
        except JobFailedError:
            board.stopped()
            raise
        except KeyboardInterrupt:
            board.fail(KeyboardInterrupt("interrupted"))
            raise
        except BaseException as err:
            board.fail(err)
            raise
        finally:
            writer.close()
            bar.close()


def _report(
    plan: Plan,
    store: ResultsStore,
    statuses: list[RankStatus],
    w: World,
    start: float,
    chart: bool,
) -> EvaluationResult:
    """The merged rows in plan order, their statistics and notes; rank 0 writes the report files."""
    wanted = plan.keys()
    order = {key: i for i, key in enumerate(_ordered_keys(plan))}
    rows = sorted((r for r in store.rows(plan.digests()) if r.key in wanted), key=lambda r: order[r.key])
    by_key: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        by_key.setdefault((r.method, r.metric), {})[r.item] = r.score
    seed = int(plan.config["seed"])
    higher = plan.higher_is_better
    notes = list(plan.notes)
    for s in statuses:
        notes += [n for n in s.notes if n not in notes]
    notes = collapse_skips(notes)
    result = EvaluationResult(
        rows=rows,
        methods=[s.label for s in plan.specs],
        metrics=list(plan.metrics),
        summaries={key: summarise(list(v.values()), seed=seed) for key, v in sorted(by_key.items())},
        differences=_differences(plan.specs, plan.metrics, by_key, higher, seed),
        higher_is_better=higher,
        uses_pullback={s.label: s.method_class.uses_pullback for s in plan.specs},
        notes=notes,
        config=store.config,
        items=item_records(plan.items),
        out=store.out,
        seconds=time.perf_counter() - start,
        computed_rows=sum(s.computed for s in statuses),
        ranks=[{"rank": s.rank, "host": s.host, "computed": s.computed, "seconds": s.seconds} for s in statuses],
    )
    if store.out is not None and w.is_main:
        result.files = write_reports(result, chart=chart)
    return result


def _ordered_keys(plan: Plan) -> Iterator[tuple[str, str, str]]:
    for u in plan.units():
        for m in u.metrics:
            yield (plan.items[u.item].id, u.method, m)


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
        base = counterpart(s.method_class)
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


class _NullBar:
    """Stands in for tqdm when progress is off or tqdm is not installed."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, w: World) -> Any:
    """A tqdm bar on stderr counting this rank's scores, or a silent stand-in."""
    if not enabled:
        return _NullBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NullBar()
    desc = "evaluate" if w.size == 1 else f"evaluate (rank 0 of {w.size})"
    return tqdm(total=total, desc=desc, unit="score", file=sys.stderr)
