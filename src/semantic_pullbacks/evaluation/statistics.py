"""Summary statistics of per-image scores: mean ± std, seeded bootstrap intervals, paired differences.

A benchmark on a few hundred images is noisy; a mean without an interval invites over-reading small gaps. The
bootstrap is percentile-based and seeded, so the same scores always give the same interval. NaN scores
(undefined for an all-zero map, for example) are left out and counted, never silently averaged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from semantic_pullbacks.errors import InvalidInputError

__all__ = ["PairedDifference", "Summary", "bootstrap_ci", "paired_difference", "summarise"]

#: bootstrap resamples: enough for stable 2.5/97.5 percentiles at the precision the tables print
N_BOOTSTRAP = 2000


@dataclass(frozen=True)
class Summary:
    """Scores of one (method, metric): ``n`` finite scores, ``n_nan`` left out, mean, std (ddof=1), 95% CI."""

    n: int
    n_nan: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class PairedDifference:
    """A method against its baseline on the images both scored: ``mean(method − baseline)`` with a bootstrap
    CI, the ratio of the two means (the form the paper reports, e.g. SoftPullback / Gradient), and the median of
    the per-image ratios (robust to one image dominating the means)."""

    method: str
    baseline: str
    metric: str
    n: int
    mean_method: float
    mean_baseline: float
    mean_diff: float
    ci_low: float
    ci_high: float
    ratio: float
    higher_is_better: bool
    median_ratio: float = math.nan

    @property
    def method_better(self) -> bool | None:
        """True/False when the CI excludes 0 in the method's favour/against it; None when it straddles 0."""
        if not (math.isfinite(self.ci_low) and math.isfinite(self.ci_high)) or self.ci_low <= 0 <= self.ci_high:
            return None
        return (self.ci_low > 0) == self.higher_is_better


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    return arr[np.isfinite(arr)]


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    seed: int = 0,
    n_resamples: int = N_BOOTSTRAP,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of the finite ``values`` (NaN, NaN when there are none).

    Seeded with its own generator: deterministic, and the global numpy RNG is not touched.
    """
    if not 0 < level < 1:
        raise InvalidInputError(f"level must be in (0, 1), got {level!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise InvalidInputError(f"n_resamples must be a positive int, got {n_resamples!r}")
    arr = _finite(values)
    if arr.size == 0:
        return math.nan, math.nan
    if arr.size == 1:
        return float(arr[0]), float(arr[0])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.size, size=(n_resamples, arr.size))
    means = arr[idx].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    # float rounding of the resampled means must not put the sample mean outside its own interval
    mean = float(arr.mean())
    return min(float(low), mean), max(float(high), mean)


def summarise(values: Sequence[float] | np.ndarray, *, seed: int = 0, n_resamples: int = N_BOOTSTRAP) -> Summary:
    """Mean, standard deviation (ddof=1, 0 for one value) and bootstrap CI of the finite values."""
    raw = np.asarray(values, dtype=np.float64).reshape(-1)
    arr = _finite(raw)
    if arr.size == 0:
        return Summary(0, int(raw.size), math.nan, math.nan, math.nan, math.nan)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    low, high = bootstrap_ci(arr, seed=seed, n_resamples=n_resamples)
    return Summary(int(arr.size), int(raw.size - arr.size), float(arr.mean()), std, low, high)


def paired_difference(
    method_scores: Mapping[str, float],
    baseline_scores: Mapping[str, float],
    *,
    method: str,
    baseline: str,
    metric: str,
    higher_is_better: bool,
    seed: int = 0,
    n_resamples: int = N_BOOTSTRAP,
) -> PairedDifference:
    """Compare two methods image by image (keys are image ids); only images both scored finitely count.

    Pairing removes the between-image variance that dominates unpaired comparisons of two means.
    """
    common = sorted(k for k in method_scores.keys() & baseline_scores.keys())
    a = np.array([method_scores[k] for k in common], dtype=np.float64)
    b = np.array([baseline_scores[k] for k in common], dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size == 0:
        nan = math.nan
        return PairedDifference(method, baseline, metric, 0, nan, nan, nan, nan, nan, nan, higher_is_better)
    diff = a - b
    low, high = bootstrap_ci(diff, seed=seed, n_resamples=n_resamples)
    mean_a, mean_b = float(a.mean()), float(b.mean())
    ratio = mean_a / mean_b if mean_b != 0 else math.nan
    nonzero = b != 0
    median_ratio = float(np.median(a[nonzero] / b[nonzero])) if nonzero.any() else math.nan
    return PairedDifference(
        method, baseline, metric, int(a.size), mean_a, mean_b, float(diff.mean()), low, high, ratio, higher_is_better,
        median_ratio,
    )  # fmt: skip
