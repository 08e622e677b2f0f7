"""Calibration: search temperatures (and ascent K, alpha) that make SP faithful on *this* model and data.

The paper's absolute temperatures were tuned on networks whose pre-activations are of order one; other models
need other values. The search is a coordinate descent over the op families the model actually uses, scored by
the median over images of ``metric(SP) / metric(Gradient)`` (infidelity by default), on a calibration split;
the chosen settings are then reported on the held-out split, so the numbers quoted are not fitted ones.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..engine import Relative, TemperatureLike, Temperatures
from ..engine.registry import registered_rules
from ..errors import InvalidInputError
from ..methods import Gradient, PullbackAscent, SoftPullback
from ..methods.base import Explainer
from .settings import AscentSettings, Settings

__all__ = ["DEFAULT_CANDIDATES", "CalibrationResult", "Trial", "active_families", "calibrate"]

#: Candidate values per family; relative values scale with each layer's spread (``Relative``).
DEFAULT_CANDIDATES: dict[str, tuple[TemperatureLike, ...]] = {
    "relu": (0.6, Relative(1.0), Relative(1.5), Relative(2.0), Relative(2.5), Relative(3.0), Relative(4.0)),
    "gelu": (1.0, Relative(0.5), Relative(1.0), Relative(2.0), Relative(4.0)),
    "silu": (1.6, Relative(0.5), Relative(1.0), Relative(2.0), Relative(4.0)),
    "maxpool": (0.3, Relative(0.25), Relative(0.5), Relative(1.0), Relative(2.0)),
    "attention": (1.0, 0.5, 2.0, None),
}
ASCENT_CANDIDATES: tuple[tuple[int, float], ...] = ((3, 20.0), (5, 20.0), (5, 10.0), (5, 40.0), (8, 20.0))


@dataclass(frozen=True)
class Trial:
    """One configuration tried on the calibration split."""

    temperatures: Temperatures
    ascent: AscentSettings | None
    score: float  # median per-image ratio to the gradient; lower is better
    seconds: float
    #: constrained metrics' median ratios to the gradient, and whether all stay under their bounds
    constraints: dict[str, float] = field(default_factory=dict)
    feasible: bool = True

    @property
    def label(self) -> str:
        changed = {k: v for k, v in self.temperatures.to_dict().items() if v != Temperatures().to_dict().get(k)}
        text = ", ".join(f"{k}={v}" for k, v in changed.items()) or "paper defaults"
        if self.ascent is not None:
            text += f"; ascent K={self.ascent.steps}, alpha={self.ascent.alpha}"
        return text


@dataclass(frozen=True)
class CalibrationResult:
    settings: Settings
    trials: tuple[Trial, ...]
    calibration_indices: tuple[int, ...]
    report_indices: tuple[int, ...]
    #: held-out medians of per-image ratios to the gradient, for the paper defaults and for the chosen settings
    report: dict[str, dict[str, float]] = field(default_factory=dict)
    budget_exhausted: bool = False
    seconds: float = 0.0

    def markdown(self) -> str:
        lines = [
            f"Calibration: {len(self.trials)} configurations on images {list(self.calibration_indices)}, "
            f"reported on held-out images {list(self.report_indices)}"
            + (" (time budget reached)" if self.budget_exhausted else ""),
            "",
            "| configuration | objective (median ratio to gradient, calibration split) | constraints | seconds |",
            "|---|---|---|---|",
        ]
        for t in self.trials:
            chosen = (
                t.temperatures == self.settings.temperatures
                if t.ascent is None
                else (t.ascent.steps, t.ascent.alpha) == (self.settings.ascent.steps, self.settings.ascent.alpha)
            )
            mark = " **(chosen)**" if chosen else ""
            cons = ", ".join(f"{k} {v:.3f}" for k, v in t.constraints.items()) + ("" if t.feasible else " (violated)")
            lines.append(f"| {t.label}{mark} | {t.score:.3f} | {cons or '-'} | {t.seconds:.1f} |")
        if self.report:
            metrics = sorted({m for r in self.report.values() for m in r})
            lines += ["", "Held-out images, median per-image ratio SP / Gradient (lower is better):", ""]
            lines += ["| settings | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
            for name, r in self.report.items():
                lines.append(f"| {name} | " + " | ".join(f"{r.get(m, math.nan):.3f}" for m in metrics) + " |")
        return "\n".join(lines) + "\n"

    def plot(self, path: Any) -> Any:
        """Bar chart of every trial's objective (matplotlib Figure API, no global pyplot state)."""
        from matplotlib.figure import Figure

        from ..visualize import save_figure

        fig = Figure(figsize=(8, 0.35 * len(self.trials) + 1.2))
        ax = fig.add_subplot(1, 1, 1)
        labels = [t.label for t in self.trials]
        scores = [t.score for t in self.trials]
        chosen = [t.temperatures == self.settings.temperatures for t in self.trials]
        colors = ["#c0392b" if c else ("#7f8c8d" if t.feasible else "#d5d8dc") for c, t in zip(chosen, self.trials)]
        ax.barh(range(len(scores)), scores, color=colors)
        ax.set_yticks(range(len(scores)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xlabel("median infidelity ratio to the gradient (calibration split; lower is better)")
        fig.tight_layout()
        return save_figure(fig, path)


def active_families(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The temperature families whose ops a forward pass of ``model`` meets (only these are worth searching)."""
    sp = SoftPullback(model)
    sp.attribute(x[:1], target=None)
    op_family = {rule.op: rule.family for _, rule in registered_rules()}
    fams = {op_family.get(op, "") for op in sp.coverage.softened}
    order = ["relu", "gelu", "silu", "maxpool", "attention"]
    return [f for f in order if f in fams]


def _split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    if n < 2:
        raise InvalidInputError(f"calibration needs at least 2 images (one to fit, one to report on), got {n}")
    if not 0 < fraction < 1:
        raise InvalidInputError(f"calibration_fraction must be strictly between 0 and 1, got {fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    k = min(max(1, round(n * fraction)), n - 1)
    return sorted(perm[:k]), sorted(perm[k:])


def calibrate(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor | Sequence[int] | None = None,
    *,
    families: Sequence[str] | None = None,
    candidates: dict[str, Sequence[TemperatureLike]] | None = None,
    start: Settings | None = None,
    metric: Any = None,
    constraints: dict[str, float] | None = None,
    tune_ascent: bool = False,
    calibration_fraction: float = 0.5,
    budget_s: float = 600.0,
    rounds: int = 1,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> CalibrationResult:
    """Search temperatures for ``model`` on ``inputs`` (and, with ``tune_ascent``, PullbackAscent's K and alpha).

    ``constraints`` bounds other metrics' median ratios to the gradient, e.g. ``{"max_sensitivity": 0.5}``: a
    configuration that breaks a bound is only chosen if none keeps them all (then the least violating one).

    >>> result = calibrate(model, images, budget_s=120)     # doctest: +SKIP
    >>> save_settings(result.settings, "settings.json")     # doctest: +SKIP
    """
    from ..metrics import Infidelity, MaxSensitivity, as_explainer, get_metric

    t0 = time.monotonic()
    say = progress or (lambda _msg: None)
    if not isinstance(inputs, torch.Tensor) or inputs.dim() < 2:
        raise InvalidInputError("inputs must be a batched tensor of images")
    if budget_s <= 0:
        raise InvalidInputError(f"budget_s must be positive, got {budget_s}")
    metric = metric if metric is not None else Infidelity(seed=seed)
    with torch.no_grad():
        y = model(inputs).argmax(1) if targets is None else torch.as_tensor(targets, device=inputs.device).long()
    cal, rep = _split(inputs.shape[0], calibration_fraction, seed)
    xc, yc = inputs[cal], y[cal]
    fams = list(families) if families is not None else active_families(model, inputs)
    cands = {**DEFAULT_CANDIDATES, **(candidates or {})}
    unknown = [f for f in fams if f not in cands]
    if unknown:
        raise InvalidInputError(f"no candidate temperatures for families {unknown}; pass candidates={{...}}")
    current = start or Settings(model=None)

    def score_of(method: Explainer, x: torch.Tensor, yy: torch.Tensor, base: torch.Tensor, m: Any = None) -> float:
        m = m or metric
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if getattr(m, "name", "") == "max_sensitivity":
                s = m(model, x, yy, explain_func=as_explainer(method))
            else:
                s = m(model, x, yy, attributions=method.attribute(x, target=yy))
        return float((s / base).median())

    def baseline(x: torch.Tensor, yy: torch.Tensor, m: Any) -> torch.Tensor:
        grad = Gradient(model)
        if getattr(m, "name", "") == "max_sensitivity":
            return m(model, x, yy, explain_func=as_explainer(grad))
        return m(model, x, yy, attributions=grad.attribute(x, target=yy))

    base_c = baseline(xc, yc, metric)
    bounds = dict(constraints or {})
    try:
        bound_metrics = {name: get_metric(name, seed=seed) for name in bounds}
    except (KeyError, ValueError) as e:
        raise InvalidInputError(f"unknown constraint metric: {e}") from None
    bound_bases = {name: baseline(xc, yc, m) for name, m in bound_metrics.items()}
    trials: list[Trial] = []
    seen: dict[str, Trial] = {}
    exhausted = False

    def rank(trial: Trial) -> tuple[float, float]:
        """Feasible trials by objective; infeasible ones after them, by how far they break their bounds."""
        if trial.feasible:
            return (0.0, trial.score)
        return (1.0, sum(max(0.0, trial.constraints[k] / bounds[k] - 1.0) for k in bounds))

    def evaluate(temps: Temperatures, ascent: AscentSettings | None) -> Trial:
        key = repr((temps.to_dict(), ascent))
        if key in seen:
            return seen[key]
        t = time.monotonic()
        method: Explainer = (
            SoftPullback(model, temps)
            if ascent is None
            else PullbackAscent(model, temps, steps=ascent.steps, alpha=ascent.alpha)
        )
        s = score_of(method, xc, yc, base_c)
        ratios = {k: score_of(method, xc, yc, bound_bases[k], m) for k, m in bound_metrics.items()}
        feasible = all(ratios[k] <= bounds[k] for k in bounds)
        trial = Trial(temps, ascent, s, time.monotonic() - t, ratios, feasible)
        trials.append(trial)
        seen[key] = trial
        say(f"{trial.label}: {s:.3f}" + "".join(f", {k} {v:.3f}" for k, v in ratios.items()))
        return trial

    best_trial = evaluate(current.temperatures, None)
    for _ in range(rounds):
        for fam in fams:
            for value in cands[fam]:
                if time.monotonic() - t0 > budget_s:
                    exhausted = True
                    break
                trial = evaluate(best_trial.temperatures.replace(**{fam: value}), None)
                if rank(trial) < rank(best_trial):
                    best_trial = trial
    best_t, best = best_trial.temperatures, best_trial.score
    # Stepping methods keep the starting temperatures: gates soft enough to make one map most faithful can make the
    # network so nearly linear that steps along the map stop raising the target. Only their K and alpha are tuned.
    ascent_t = current.ascent.temperatures or current.temperatures
    best_ascent = AscentSettings(current.ascent.steps, current.ascent.alpha, ascent_t)
    if tune_ascent and not exhausted:
        best_a: Trial | None = None
        for steps, alpha in ASCENT_CANDIDATES:
            if time.monotonic() - t0 > budget_s:
                exhausted = True
                break
            trial = evaluate(ascent_t, AscentSettings(steps, alpha))
            if best_a is None or rank(trial) < rank(best_a):
                best_a = trial
        if best_a is not None and best_a.ascent is not None:
            best_ascent = AscentSettings(best_a.ascent.steps, best_a.ascent.alpha, ascent_t)

    report: dict[str, dict[str, float]] = {}
    xr, yr = inputs[rep], y[rep]
    sens = MaxSensitivity(seed=seed)
    base_r = {"infidelity": baseline(xr, yr, metric), "max_sensitivity": baseline(xr, yr, sens)}
    for name, temps in (("paper defaults", Temperatures()), ("calibrated", best_t)):
        sp = SoftPullback(model, temps)
        report[name] = {
            "infidelity": score_of(sp, xr, yr, base_r["infidelity"]),
            "max_sensitivity": score_of(sp, xr, yr, base_r["max_sensitivity"], sens),
        }
    evidence = {
        "objective": f"median per-image ratio {getattr(metric, 'name', type(metric).__name__)}(SP) / (Gradient)",
        "calibration_images": cal,
        "report_images": rep,
        "calibration_score": best,
        "constraints": bounds,
        "held_out": report,
        "seed": seed,
    }
    settings = Settings(best_t, best_ascent, current.model, evidence)
    return CalibrationResult(settings, tuple(trials), tuple(cal), tuple(rep), report, exhausted, time.monotonic() - t0)
