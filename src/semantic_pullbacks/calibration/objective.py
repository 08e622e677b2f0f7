"""What calibration optimises: every metric compared with the gradient, each under its own bound.

One metric alone is easy to buy with another: a search over infidelity and max-sensitivity (which perturb large
patches) once chose gates so soft that the maps became a checkerboard that survived randomising the model. So
each :class:`Criterion` compares SoftPullback with the gradient on one metric, image by image, reduces the
comparison to one number by the median over images, and bounds it. A configuration is *feasible* when every
criterion is within its bound; among feasible ones the search takes the lowest *loss*, the sum of every
criterion's loss; infeasible ones rank after all feasible ones, by how far they break their bounds.

Three kinds of comparison, all oriented so that lower is better:

- ``ratio``: median of SP / gradient per image (positive scores, lower better: infidelity, max-sensitivity,
  aliasing); loss ``log(ratio)``, so halving counts the same whatever the metric's scale.
- ``shortfall``: median of the per-image difference in the metric's bad direction (``gradient - SP`` for
  higher-is-better metrics such as faithfulness correlation, ``SP - gradient`` for random-logit); loss the
  shortfall itself (correlations and shares are already unitless).
- ``absolute``: median of SP's own score (top-layer randomisation: |Spearman| with the map of a model whose top
  layers were re-initialised); loss the score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import InvalidInputError

__all__ = ["DEFAULT_CRITERIA", "Criterion", "Verdict", "judge"]

Comparison = Literal["ratio", "shortfall", "absolute"]


@dataclass(frozen=True)
class Criterion:
    """One metric compared with the gradient (``compare``) and bounded: feasible when the value is <= ``bound``."""

    metric: str
    compare: Comparison
    bound: float
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.compare not in ("ratio", "shortfall", "absolute"):
            raise InvalidInputError(f"criterion {self.metric!r}: compare must be ratio, shortfall or absolute")
        if not math.isfinite(self.bound) or (self.compare == "ratio" and self.bound <= 0):
            raise InvalidInputError(f"criterion {self.metric!r}: bound must be finite (and positive for a ratio)")

    def value(self, sp: torch.Tensor, gradient: torch.Tensor | None, higher_is_better: bool) -> float:
        """The median comparison over the items both scored (NaN scores are left out)."""
        if self.compare == "absolute":
            kept = sp[torch.isfinite(sp)]
        else:
            if gradient is None:
                raise InvalidInputError(f"criterion {self.metric!r} compares with the gradient: pass its scores")
            both = torch.isfinite(sp) & torch.isfinite(gradient)
            s, g = sp[both], gradient[both]
            if self.compare == "ratio":
                s, g = s[g != 0], g[g != 0]  # a ratio to a zero score says nothing
                kept = s / g
            else:
                kept = g - s if higher_is_better else s - g
        # the mean of the two middle values for an even count: torch.median takes the lower one, which would lean
        # every lower-is-better comparison towards passing its bound
        return float(torch.quantile(kept.double(), 0.5)) if kept.numel() else math.nan

    def loss(self, value: float) -> float:
        if self.compare == "ratio":
            return self.weight * math.log(max(value, 1e-12))
        return self.weight * value

    def violation(self, value: float) -> float:
        """How far past the bound, relative to it (0 when within; a missing value counts as a full violation)."""
        if math.isnan(value):
            return 1.0
        return max(0.0, value - self.bound) / max(abs(self.bound), 0.1)

    def describe(self) -> str:
        what = {"ratio": "SP/gradient", "shortfall": "shortfall vs gradient", "absolute": "SP"}[self.compare]
        return f"{self.metric} ({what}) <= {self.bound:g}"


#: The targets of issue 14 for the embedded model, with a margin for fitting on few images (the reported figures
#: are checked against the targets themselves: infidelity <= 0.3, max-sensitivity <= 0.5, aliasing <= 1.25,
#: randomisation < 0.5, faithfulness correlation and monotonicity no worse than the gradient's).
DEFAULT_CRITERIA: tuple[Criterion, ...] = (
    Criterion("infidelity", "ratio", 0.3),
    Criterion("max_sensitivity", "ratio", 0.45),
    Criterion("aliasing", "ratio", 1.15),
    Criterion("top_layer_randomisation", "absolute", 0.45),
    Criterion("faithfulness_correlation", "shortfall", 0.02),
    Criterion("monotonicity_correlation", "shortfall", 0.02),
    Criterion("focus", "shortfall", 0.02),
    Criterion("random_logit", "shortfall", 0.05),
)


@dataclass(frozen=True)
class Verdict:
    """A configuration judged on a set of images: every criterion's value, feasibility, loss and violation."""

    values: Mapping[str, float]
    feasible: bool
    loss: float
    violation: float

    def rank(self) -> tuple[float, float]:
        """Sort key: feasible configurations by loss, then infeasible ones by violation."""
        return (0.0, self.loss) if self.feasible else (1.0, self.violation)


def judge(
    criteria: Sequence[Criterion],
    sp: Mapping[str, torch.Tensor],
    gradient: Mapping[str, torch.Tensor],
    higher_is_better: Mapping[str, bool],
) -> Verdict:
    """Judge SP's per-item scores ``sp[metric]`` against the gradient's on the same items."""
    values = {c.metric: c.value(sp[c.metric], gradient.get(c.metric), higher_is_better[c.metric]) for c in criteria}
    violation = sum(c.violation(values[c.metric]) for c in criteria)
    finite = [c.loss(values[c.metric]) for c in criteria if not math.isnan(values[c.metric])]
    return Verdict(values, violation == 0.0, sum(finite), violation)
