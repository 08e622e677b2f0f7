"""Calibration: choose temperatures that make SP trustworthy on *this* model, and measure how well the choice
generalises by cross-validation.

The paper's absolute temperatures were tuned on networks whose pre-activations are of order one; other models
need other values. Every candidate configuration is scored on every image with every metric of the objective
(:mod:`.objective`: each metric compared with the gradient under its own bound, so none is bought with another).
The images are split into ``folds``; for each fold the candidate that is best on the other folds is chosen and
judged on the fold itself, and those held-out figures are what the report quotes. The settings returned are the
candidate best on all images (the procedure the folds measured, fitted once more on everything).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..engine import Relative, TemperatureLike, Temperatures
from ..engine.registry import registered_rules
from ..errors import InvalidInputError
from ..methods import SoftPullback
from ..metrics import get_metric, presets
from ..visualize import save_figure
from .objective import DEFAULT_CRITERIA, Criterion, Verdict, judge
from .settings import Settings
from .table import ScoreTable

__all__ = [
    "CALIBRATION_METRIC_SETTINGS",
    "DEFAULT_CANDIDATES",
    "CalibrationResult",
    "Candidate",
    "Fold",
    "active_families",
    "calibrate",
    "grid",
]

#: Candidate values per family; relative values scale with each layer's spread (``Relative``).
DEFAULT_CANDIDATES: dict[str, tuple[TemperatureLike, ...]] = {
    "relu": (0.6, Relative(0.5), Relative(1.0), Relative(1.5), Relative(2.0), Relative(3.0)),
    "gelu": (1.0, Relative(0.5), Relative(1.0), Relative(2.0), Relative(4.0)),
    "silu": (1.6, Relative(0.5), Relative(1.0), Relative(2.0), Relative(4.0)),
    "maxpool": (0.3, Relative(0.25), Relative(0.5), Relative(1.0)),
    "attention": (1.0, 0.5, 2.0, None),
}

#: Metric settings while searching, on top of the paper's: fewer noise samples for the metrics that re-explain
#: or re-rank per sample, and monotonicity in 4x larger steps (their cost grows with every candidate; the other
#: metrics' model outputs are shared between candidates or cheap). The held-out report uses the paper's own.
CALIBRATION_METRIC_SETTINGS: dict[str, dict[str, Any]] = {
    "max_sensitivity": {"nr_samples": 4},
    "monotonicity_correlation": {"nr_samples": 3, "step_scale": 4},
}


@dataclass(frozen=True)
class Candidate:
    """One configuration with its verdict on all images (``None`` if the budget ran out before it)."""

    temperatures: Temperatures
    verdict: Verdict | None
    seconds: float

    @property
    def label(self) -> str:
        return _label(self.temperatures)


@dataclass(frozen=True)
class Fold:
    """One fold: the images fitted on, the held-out ones, the choice and its verdicts on both."""

    train: tuple[int, ...]
    test: tuple[int, ...]
    chosen: Temperatures
    train_verdict: Verdict
    test_verdict: Verdict


@dataclass(frozen=True)
class CalibrationResult:
    settings: Settings
    candidates: tuple[Candidate, ...]
    folds: tuple[Fold, ...]
    #: the held-out images of every fold pooled, each judged with its own fold's choice
    held_out: Verdict
    #: the paper's temperatures judged the same way (no choice to make), for comparison
    paper_held_out: Verdict
    criteria: tuple[Criterion, ...]
    budget_exhausted: bool = False
    seconds: float = 0.0
    #: the per-image scores behind the choice (search settings) and behind the held-out report (paper settings)
    table: ScoreTable | None = field(default=None, repr=False, compare=False)
    report_table: ScoreTable | None = field(default=None, repr=False, compare=False)

    def markdown(self) -> str:
        names = [c.metric for c in self.criteria]
        head = "| " + " | ".join(names) + " |"
        rule = "|---" * (len(names) + 2) + "|"  # label, the metrics, one more column

        def row(label: str, v: Verdict) -> str:
            cells = " | ".join(f"{v.values[n]:.3g}" for n in names)
            return f"| {label} | {cells} | {'yes' if v.feasible else 'no'} |"

        lines = [
            f"Calibration: {sum(c.verdict is not None for c in self.candidates)} configurations, "
            f"{len(self.folds)}-fold cross-validation" + (" (time budget reached)" if self.budget_exhausted else ""),
            "",
            "Criteria (median over images of the comparison with the gradient): "
            + "; ".join(c.describe() for c in self.criteria),
            "",
            "Held-out folds (each fold judged with the configuration chosen on the other folds):",
            "",
            "| fold: held-out images | chosen | " + " | ".join(names) + " | within bounds |",
            "|---" * (len(names) + 3) + "|",
        ]
        for i, f in enumerate(self.folds):
            cells = " | ".join(f"{f.test_verdict.values[n]:.3g}" for n in names)
            ok = "yes" if f.test_verdict.feasible else "no"
            lines.append(f"| {i}: {list(f.test)} | {_label(f.chosen)} | {cells} | {ok} |")
        lines += ["", "All held-out images pooled:", "", "| settings " + head + " within bounds |", rule]
        lines.append(row("chosen per fold", self.held_out))
        lines.append(row("paper defaults", self.paper_held_out))
        lines += ["", "Every configuration on all images (in-sample):", "", "| configuration " + head + " loss |", rule]
        for c in self.candidates:
            if c.verdict is None:
                continue
            mark = " **(chosen)**" if c.temperatures == self.settings.temperatures else ""
            cells = " | ".join(f"{c.verdict.values[n]:.3g}" for n in names)
            loss = f"{c.verdict.loss:.3f}" if c.verdict.feasible else f"infeasible ({c.verdict.violation:.2f})"
            lines.append(f"| {c.label}{mark} | {cells} | {loss} |")
        return "\n".join(lines) + "\n"

    def plot(self, path: Any) -> Any:
        """Bar chart of every configuration's loss on all images (matplotlib Figure API, no global state)."""
        from matplotlib.figure import Figure

        done = [c for c in self.candidates if c.verdict is not None]
        fig = Figure(figsize=(8, 0.3 * len(done) + 1.4))
        ax = fig.add_subplot(1, 1, 1)
        losses = [c.verdict.loss if c.verdict is not None else math.nan for c in done]
        chosen = self.settings.temperatures
        colors = [
            "#c0392b" if c.temperatures == chosen else "#7f8c8d" if c.verdict and c.verdict.feasible else "#d5d8dc"
            for c in done
        ]
        ax.barh(range(len(done)), losses, color=colors)
        ax.set_yticks(range(len(done)), [c.label for c in done], fontsize=6)
        ax.invert_yaxis()
        ax.set_xlabel("loss on all images (lower is better; light grey: breaks a bound; red: chosen)")
        fig.tight_layout()
        return save_figure(fig, path)


def _label(temperatures: Temperatures) -> str:
    changed = {k: v for k, v in temperatures.to_dict().items() if v != Temperatures().to_dict().get(k)}
    return ", ".join(f"{k}={v}" for k, v in changed.items()) or "paper defaults"


def active_families(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The temperature families whose ops a forward pass of ``model`` meets (only these are worth searching)."""
    sp = SoftPullback(model)
    sp.attribute(x[:1], target=None)
    op_family = {rule.op: rule.family for _, rule in registered_rules()}
    fams = {op_family.get(op, "") for op in sp.coverage.softened}
    order = ["relu", "gelu", "silu", "maxpool", "attention"]
    return [f for f in order if f in fams]


def grid(values: Mapping[str, Sequence[TemperatureLike]], base: Temperatures | None = None) -> list[Temperatures]:
    """Every combination of the given families' values on top of ``base`` (the paper's temperatures)."""
    base = base or Temperatures()
    names = list(values)
    return [base.replace(**dict(zip(names, combo))) for combo in itertools.product(*(values[n] for n in names))]


def _folds(n: int, k: int, seed: int) -> list[tuple[int, ...]]:
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise InvalidInputError(f"folds must be an integer >= 2, got {k!r}")
    if n < k:
        raise InvalidInputError(f"{k}-fold cross-validation needs at least {k} images, got {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return [tuple(sorted(order[i::k])) for i in range(k)]


def _metrics(names: Sequence[str], size: int, overrides: Mapping[str, Mapping[str, Any]], seed: int) -> dict:
    """The metrics at the paper's settings for ``size``-px inputs, with ``overrides`` per metric (``step_scale``
    multiplies the features per step of the step-wise metrics, as the evaluation presets do)."""
    paper = presets.get_preset("paper")
    out = {}
    for name in names:
        settings = presets.metric_settings(name, size, paper)
        own = dict(overrides.get(name, {}))
        scale = own.pop("step_scale", 1)
        if "features_in_step" in settings:
            settings["features_in_step"] *= scale
        out[name] = get_metric(name, **{**settings, **own}, seed=seed)
    return out


def _pooled(table: ScoreTable, parts: Sequence[tuple[Temperatures | None, Sequence[int]]], criteria) -> Verdict:  # type: ignore[no-untyped-def]
    """One verdict over several (configuration, images) parts, their per-item comparisons pooled."""
    sp: dict[str, list[torch.Tensor]] = {}
    grad: dict[str, list[torch.Tensor]] = {}
    for temps, images in parts:
        for name, s in table.scores(temps, images).items():
            sp.setdefault(name, []).append(s)
        for name, s in table.scores(None, images).items():
            grad.setdefault(name, []).append(s)
    cat = lambda d: {k: torch.cat(v) for k, v in d.items()}
    return judge(criteria, cat(sp), cat(grad), table.higher_is_better)


def calibrate(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor | Sequence[int] | None = None,
    *,
    candidates: Sequence[Temperatures] | Mapping[str, Sequence[TemperatureLike]] | None = None,
    families: Sequence[str] | None = None,
    criteria: Sequence[Criterion] = DEFAULT_CRITERIA,
    folds: int = 3,
    metric_settings: Mapping[str, Mapping[str, Any]] | None = None,
    report_metric_settings: Mapping[str, Mapping[str, Any]] | None = None,
    start: Settings | None = None,
    budget_s: float = 3600.0,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> CalibrationResult:
    """Choose temperatures for ``model`` on ``inputs`` by ``criteria``, with ``folds``-fold cross-validation.

    ``candidates``: explicit configurations, or family -> values whose every combination is tried (default:
    :data:`DEFAULT_CANDIDATES` for the ``families`` the model uses). Candidates are scored in order until
    ``budget_s`` runs out; the folds then choose among those scored. ``metric_settings`` overrides the metrics'
    settings while searching (default :data:`CALIBRATION_METRIC_SETTINGS` on top of the paper's);
    ``report_metric_settings`` those of the held-out report (default: the paper's own). ``start`` supplies the
    ascent settings and model name carried into the result.

    >>> result = calibrate(model, images, folds=3, budget_s=1800)    # doctest: +SKIP
    >>> print(result.markdown()); save_settings(result.settings, "settings.json")   # doctest: +SKIP
    """
    t0 = time.monotonic()
    say = progress or (lambda _msg: None)
    _check_arguments(inputs, budget_s, criteria)
    fold_sets = _folds(inputs.shape[0], folds, seed)
    with torch.no_grad():
        y = model(inputs).argmax(1) if targets is None else _checked_targets(targets, inputs, model)
    configs = _candidates(model, inputs, candidates, families)
    search_settings = CALIBRATION_METRIC_SETTINGS if metric_settings is None else metric_settings
    table, report = _score_tables(model, inputs, y, criteria, search_settings, report_metric_settings or {}, seed, say)

    scored, exhausted = _search(table, configs, criteria, t0, budget_s)
    usable = [c.temperatures for c in scored if c.verdict is not None]
    fold_results = _cross_validate(table, report, usable, fold_sets, criteria, say)
    held_out = _pooled(report, [(f.chosen, f.test) for f in fold_results], criteria)
    paper_held_out = _pooled(report, [(Temperatures(), f.test) for f in fold_results], criteria)
    final, _ = _choose(table, usable, criteria, list(range(inputs.shape[0])))

    current = start or Settings(model=None)
    evidence = _evidence(
        criteria, fold_results, held_out, paper_held_out, search_settings, report_metric_settings or {}, seed
    )
    return CalibrationResult(
        Settings(final, current.ascent, current.model, evidence),
        tuple(scored),
        tuple(fold_results),
        held_out,
        paper_held_out,
        tuple(criteria),
        exhausted,
        time.monotonic() - t0,
        table,
        report,
    )


def _check_arguments(inputs: Any, budget_s: Any, criteria: Sequence[Criterion]) -> None:
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
        raise InvalidInputError("inputs must be a batch of images (N, C, H, W)")
    if not (isinstance(budget_s, (int, float)) and budget_s > 0):
        raise InvalidInputError(f"budget_s must be positive, got {budget_s}")
    if not criteria:
        raise InvalidInputError("criteria must not be empty")


def _score_tables(
    model: nn.Module,
    inputs: torch.Tensor,
    y: torch.Tensor,
    criteria: Sequence[Criterion],
    search_settings: Mapping[str, Mapping[str, Any]],
    report_settings: Mapping[str, Mapping[str, Any]],
    seed: int,
    say: Callable[[str], None],
) -> tuple[ScoreTable, ScoreTable]:
    """The per-image scores the search chooses by (search settings) and those the held-out report quotes."""
    names, size = [c.metric for c in criteria], inputs.shape[-1]
    table = ScoreTable(model, inputs, y, _metrics(names, size, search_settings, seed), seed=seed, progress=say)
    report_metrics = _metrics(names, size, report_settings, seed)
    report = ScoreTable(model, inputs, y, report_metrics, seed=seed, progress=lambda m: say(f"report: {m}"))
    return table, report


def _search(
    table: ScoreTable, configs: Sequence[Temperatures], criteria: Sequence[Criterion], t0: float, budget_s: float
) -> tuple[list[Candidate], bool]:
    """Every configuration judged on all images, in order, until the time budget runs out (the first always is)."""
    everything = list(range(table.inputs.shape[0]))
    scored: list[Candidate] = []
    exhausted = False
    for temps in configs:
        if time.monotonic() - t0 > budget_s and scored:
            exhausted = True
            scored.append(Candidate(temps, None, 0.0))
            continue
        t = time.monotonic()
        sp, grad = table.scores(temps, everything), table.scores(None, everything)
        verdict = judge(criteria, sp, grad, table.higher_is_better)
        scored.append(Candidate(temps, verdict, time.monotonic() - t))
    return scored, exhausted


def _choose(
    table: ScoreTable, usable: Sequence[Temperatures], criteria: Sequence[Criterion], images: Sequence[int]
) -> tuple[Temperatures, Verdict]:
    """The configuration that ranks best on ``images``, with its verdict there."""
    grad = table.scores(None, images)
    verdicts = [(judge(criteria, table.scores(t, images), grad, table.higher_is_better), t) for t in usable]
    best = min(range(len(verdicts)), key=lambda i: verdicts[i][0].rank())
    return verdicts[best][1], verdicts[best][0]


def _cross_validate(
    table: ScoreTable,
    report: ScoreTable,
    usable: Sequence[Temperatures],
    fold_sets: Sequence[tuple[int, ...]],
    criteria: Sequence[Criterion],
    say: Callable[[str], None],
) -> list[Fold]:
    """Per fold: the choice on the other folds (search scores), judged on the fold itself (report scores)."""
    everything = range(table.inputs.shape[0])
    fold_results = []
    for i, test in enumerate(fold_sets):
        train = tuple(j for j in everything if j not in test)
        chosen, train_verdict = _choose(table, usable, criteria, train)
        test_verdict = judge(criteria, report.scores(chosen, test), report.scores(None, test), table.higher_is_better)
        fold_results.append(Fold(train, test, chosen, train_verdict, test_verdict))
        say(f"fold {i}: chose {_label(chosen)}; held out {list(test)}: feasible {test_verdict.feasible}")
    return fold_results


def _evidence(
    criteria: Sequence[Criterion],
    fold_results: Sequence[Fold],
    held_out: Verdict,
    paper_held_out: Verdict,
    search_settings: Mapping[str, Mapping[str, Any]],
    report_settings: Mapping[str, Mapping[str, Any]],
    seed: int,
) -> dict[str, Any]:
    """What the settings file records of how its temperatures were chosen and how well that held out."""
    return {
        "objective": "every criterion feasible, then the lowest sum of losses (see calibration.objective)",
        "criteria": [c.describe() for c in criteria],
        "folds": [
            {
                "held_out_images": list(f.test),
                "chosen": f.chosen.to_dict(),
                "held_out": {k: _round(v) for k, v in f.test_verdict.values.items()},
                "held_out_within_bounds": f.test_verdict.feasible,
            }
            for f in fold_results
        ],
        "held_out_pooled": {k: _round(v) for k, v in held_out.values.items()},
        "paper_defaults_held_out_pooled": {k: _round(v) for k, v in paper_held_out.values.items()},
        "search_metric_settings": {k: dict(v) for k, v in search_settings.items()},
        "report_metric_settings": {k: dict(v) for k, v in report_settings.items()} or "the paper's",
        "seed": seed,
    }


def _round(v: float) -> float | None:
    return None if math.isnan(v) else round(v, 4)


def _candidates(
    model: nn.Module,
    inputs: torch.Tensor,
    candidates: Sequence[Temperatures] | Mapping[str, Sequence[TemperatureLike]] | None,
    families: Sequence[str] | None,
) -> list[Temperatures]:
    if candidates is not None and not isinstance(candidates, Mapping):
        configs = [Temperatures.coerce(c) for c in candidates]
    else:
        fams = list(families) if families is not None else active_families(model, inputs)
        values = {**DEFAULT_CANDIDATES, **(candidates or {})}
        unknown = [f for f in fams if f not in values]
        if unknown:
            raise InvalidInputError(f"no candidate temperatures for families {unknown}; pass candidates={{...}}")
        configs = grid({f: values[f] for f in fams})
    if not configs:
        raise InvalidInputError("no candidate configurations to try")
    unique = {repr(sorted(c.to_dict().items())): c for c in reversed(configs)}  # first occurrence wins
    return [c for c in configs if unique.get(repr(sorted(c.to_dict().items()))) is c]


def _checked_targets(targets: Any, inputs: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """One class index per input, each within the model's outputs: checked here, where the mistake can be named."""
    try:
        y = torch.as_tensor(targets, device=inputs.device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise InvalidInputError(f"targets must be class indices, one per input, got {type(targets).__name__}") from err
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool or y.shape != (inputs.shape[0],):
        raise InvalidInputError(
            f"targets must be {inputs.shape[0]} integer class indices, one per input; got {y.dtype} of shape "
            f"{tuple(y.shape)}"
        )
    classes = model(inputs[:1]).shape[-1]
    if bool(((y < 0) | (y >= classes)).any()):
        raise InvalidInputError(f"targets must lie in [0, {classes}) for this model, got {y.tolist()}")
    return y.long()
