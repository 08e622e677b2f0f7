"""Faithfulness metrics: does the attribution predict how the model's output reacts to perturbations?

All four compare attribution mass over a set of features with the change of the target output ``f_c`` when
those features are replaced. Perturbed inputs are streamed to the model in full batches of ``batch_size``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Literal

import torch
from torch import Tensor

from semantic_pullbacks.errors import InvalidInputError
from semantic_pullbacks.metrics.batched import ScoreStream
from semantic_pullbacks.metrics.perturbations import (
    NoiseSampler,
    default_patch_size,
    patch_masks,
    step_ids,
    uniform_sampler,
)
from semantic_pullbacks.metrics.statistics import pearson, spearman, with_nan
from semantic_pullbacks.metrics.template import Batch, Metric
from semantic_pullbacks.metrics.validation import check_positive_int

__all__ = ["FaithfulnessCorrelation", "FaithfulnessEstimate", "Infidelity", "MonotonicityCorrelation"]

Fill = Literal["constant", "pixel"]


def _check_fill(fill: str) -> None:
    if fill not in ("constant", "pixel"):
        raise InvalidInputError(f"fill must be 'constant' or 'pixel', got {fill!r}")


def _check_range(low: float, high: float) -> None:
    if not high > low:
        raise InvalidInputError(f"high must be greater than low, got low={low}, high={high}")


def _image_hw(inputs: Tensor, metric: str) -> tuple[int, int]:
    if inputs.ndim != 4:
        raise InvalidInputError(f"{metric} needs image inputs (B, C, H, W), got shape {tuple(inputs.shape)}")
    return inputs.shape[2], inputs.shape[3]


@dataclass(eq=False)
class Infidelity(Metric):
    """Infidelity with optimal scaling under square-patch replacement (Yeh et al. 2019, as in the paper).

    For every patch position a perturbed input ``x̃`` replaces the patch by uniform noise; with
    ``a = Σ attr·(x − x̃)`` and ``b = f_c(x) − f_c(x̃)`` the score is ``E[(βa − b)²]`` with the optimal scale
    ``β = E[ab] / E[a²]`` (``β = 1`` with ``optimal_scaling=False``). Lower is better. Optimal scaling
    makes the
    score invariant to the attribution's scale, which otherwise dominates unscaled infidelity.

    Settings (paper defaults for 224×224 inputs in [-1, 1]):

    - ``patch_sizes``: explicit sizes; default ``patch_fractions`` (1/2, 1/4) of the input (112 and 56 at
    224).
    - ``stride``: grid step; default the patch size (a non-overlapping grid: "every position" of the paper's
      research code, which perturbs Quantus's block grid).
    - ``accumulate=True``: the k-th perturbation keeps patches 1..k replaced (row-major), exactly as Quantus's
      Infidelity builds them and as the paper measured; ``False`` replaces one patch at a time.
    - ``fill="constant"``: each patch becomes one uniform value in ``[low, high]`` per sample (what Quantus's
      batched ``"uniform"`` baseline draws, hence the paper's numbers); ``"pixel"``: i.i.d. noise per element.
    - ``n_draws``: independent repetitions (5). ``size_weighting="pooled"`` takes expectations over all
      perturbations together (the paper's code); ``"equal"`` gives each patch size equal weight (Quantus's
      mean
      of per-size means; identical for a single size).
    - ``sampler``: noise source; called once per patch size with shape ``(n_draws, P, B)`` (constant fill) or
      ``(n_draws, B, C, H, W)`` (pixel fill; a patch takes the field's values at its pixels). Overrides
      ``low``/``high``.

    Example: ``Infidelity()(model, x, y, attributions=a)`` returns a tensor of shape ``(B,)``.
    """

    name = "infidelity"
    higher_is_better = False
    category = "faithfulness"

    patch_sizes: Sequence[int] | None = None
    _: KW_ONLY
    patch_fractions: Sequence[float] = (0.5, 0.25)
    stride: int | None = None
    n_draws: int = 5
    low: float = -1.0
    high: float = 1.0
    fill: Fill = "constant"
    accumulate: bool = True
    optimal_scaling: bool = True
    size_weighting: Literal["pooled", "equal"] = "pooled"
    softmax: bool = False
    sampler: NoiseSampler | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("n_draws", self.n_draws)
        _check_fill(self.fill)
        if self.size_weighting not in ("pooled", "equal"):
            raise InvalidInputError(f"size_weighting must be 'pooled' or 'equal', got {self.size_weighting!r}")
        if self.patch_sizes is not None:
            self.patch_sizes = tuple(self.patch_sizes)
            for p in self.patch_sizes:
                check_positive_int("patch_sizes[i]", p)
            if not self.patch_sizes:
                raise InvalidInputError("patch_sizes must not be empty")
        if not self.patch_fractions or any(not 0 < f <= 1 for f in self.patch_fractions):
            raise InvalidInputError(f"patch_fractions must be in (0, 1], got {self.patch_fractions!r}")
        self.patch_fractions = tuple(self.patch_fractions)
        _check_range(self.low, self.high)

    def resolved_patch_sizes(self, height: int, width: int) -> tuple[int, ...]:
        """The patch sizes used for an input of this size."""
        if self.patch_sizes is not None:
            return self.patch_sizes
        return tuple(default_patch_size(height, width, f) for f in self.patch_fractions)

    def score(self, data: Batch) -> Tensor:
        model, x, t, a = data.model, data.inputs, data.targets, data.attributions
        height, width = _image_hw(x, type(self).__name__)
        zero = self._zero_mask(a)
        gen = self._generator(x.device)
        sampler = self.sampler or uniform_sampler(self.low, self.high)
        stream = ScoreStream(model, batch_size=self.batch_size, softmax=self.softmax)
        stream.push(x, t)
        a_terms, weights = [], []
        sizes = self.resolved_patch_sizes(height, width)
        for size in sizes:
            masks = patch_masks(height, width, size, self.stride, device=x.device)[:, None, None]  # (P,1,1,H,W)
            n_patch = masks.shape[0]
            shape = (self.n_draws, n_patch, x.shape[0]) if self.fill == "constant" else (self.n_draws, *x.shape)
            noise = sampler(shape, gen, x.device, x.dtype)
            for d in range(self.n_draws):
                fills = noise[d].reshape(n_patch, -1, 1, 1, 1) if self.fill == "constant" else noise[d].unsqueeze(0)
                x_tilde = self._perturb(x, masks, fills)  # (P, B, C, H, W)
                a_terms.append(((x.unsqueeze(0) - x_tilde) * a.unsqueeze(0)).flatten(2).sum(2).T)  # (B, P)
                stream.push(x_tilde.flatten(0, 1), t.repeat(n_patch))
                w = 1.0 if self.size_weighting == "pooled" else 1.0 / (len(sizes) * self.n_draws * n_patch)
                weights.append(torch.full((n_patch,), w, device=x.device, dtype=x.dtype))
        scores = stream.result()
        f_x, f_tilde = scores[: x.shape[0]], scores[x.shape[0] :].reshape(-1, x.shape[0]).T  # (B, N)
        a_all = torch.cat(a_terms, dim=1)
        b_all = f_x[:, None] - f_tilde
        w = torch.cat(weights)
        w = w / w.sum()
        if self.optimal_scaling:
            a2 = (w * a_all.square()).sum(1)
            beta = (w * a_all * b_all).sum(1) / torch.where(a2 != 0, a2, torch.ones_like(a2))
        else:
            beta = torch.ones_like(f_x)
        score = (w * (beta[:, None] * a_all - b_all).square()).sum(1)
        return with_nan(score, zero)

    def _perturb(self, x: Tensor, masks: Tensor, fills: Tensor) -> Tensor:
        """Stack of perturbed inputs, one per patch: single patches, or cumulative in grid order."""
        if not self.accumulate:
            return torch.where(masks, fills, x.unsqueeze(0))
        out, cur = [], x
        for p in range(masks.shape[0]):
            fill_p = fills[p] if fills.shape[0] > 1 else fills[0]
            cur = torch.where(masks[p], fill_p, cur)
            out.append(cur)
        return torch.stack(out)


def _as_feature_masks(masks: Tensor, inputs: Tensor) -> Tensor:
    """Custom masks ``(R, H, W)``, ``(R, C, H, W)`` or ``(B, R, C, H, W)`` as a bool ``(R, B|1, C|1, H,
    W)``.
    """
    m = masks.to(device=inputs.device, dtype=torch.bool)
    if m.ndim == 3:
        m = m[:, None, None]
    elif m.ndim == 4:
        m = m[:, None]
    elif m.ndim == 5:
        m = m.transpose(0, 1)
    else:
        raise InvalidInputError(f"masks must be (R, H, W), (R, C, H, W) or (B, R, C, H, W), got {tuple(m.shape)}")
    try:
        torch.broadcast_shapes(m.shape[1:], inputs.shape)
    except RuntimeError as err:
        raise InvalidInputError(f"masks {tuple(masks.shape)} do not fit inputs {tuple(inputs.shape)}") from err
    if m.shape[0] < 2:
        raise InvalidInputError("masks must hold at least two feature sets to correlate")
    return m


@dataclass(eq=False)
class FaithfulnessCorrelation(Metric):
    """Faithfulness correlation over patches (Bhatt et al. 2020, patch variant of the paper).

    Each square patch in turn is set to ``baseline`` (0); the score is the Pearson correlation, over patches,
    between the attribution mass inside the patch (``Σ|attr|``; signed with ``abs=False``) and the drop
    ``f_c(x) − f_c(x̃)``. Higher is better. Patches rather than random pixel subsets make the perturbations
    semantically meaningful and the score deterministic.

    ``patch_size`` defaults to ``patch_fraction`` (1/4) of the input: 56 at 224. ``__call__`` also accepts
    ``masks`` (custom feature subsets, e.g. Quantus-style random subsets) instead of the grid.
    """

    name = "faithfulness_correlation"
    higher_is_better = True
    category = "faithfulness"
    call_options = ("masks",)

    patch_size: int | None = None
    _: KW_ONLY
    patch_fraction: float = 0.25
    stride: int | None = None
    baseline: float = 0.0
    abs: bool = True
    softmax: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.patch_size is not None:
            check_positive_int("patch_size", self.patch_size)
        if not 0 < self.patch_fraction <= 1:
            raise InvalidInputError(f"patch_fraction must be in (0, 1], got {self.patch_fraction!r}")
        self.baseline = float(self.baseline)

    def score(self, data: Batch) -> Tensor:
        model, x, t, a = data.model, data.inputs, data.targets, data.attributions
        masks = data.options.get("masks")
        zero = self._zero_mask(a)
        if masks is None:
            height, width = _image_hw(x, type(self).__name__)
            size = self.patch_size or default_patch_size(height, width, self.patch_fraction)
            m = patch_masks(height, width, size, self.stride, device=x.device)[:, None, None]
        else:
            m = _as_feature_masks(masks, x)
        rel = a.abs() if self.abs else a
        att = (m * rel.unsqueeze(0)).flatten(2).sum(2).T  # (B, R)
        stream = ScoreStream(model, batch_size=self.batch_size, softmax=self.softmax)
        stream.push(x, t)
        for r in range(m.shape[0]):  # one mask at a time keeps memory at one input batch per mask
            stream.push(torch.where(m[r], torch.tensor(self.baseline, dtype=x.dtype, device=x.device), x), t)
        scores = stream.result()
        drops = scores[: x.shape[0], None] - scores[x.shape[0] :].reshape(-1, x.shape[0]).T
        return with_nan(pearson(att, drops), zero)


@dataclass(eq=False)
class _StepMetric(Metric):
    """Shared parts of the metrics that perturb features in steps of ``features_in_step`` sorted features."""

    features_in_step: int | None = None
    _: KW_ONLY
    abs: bool = True
    softmax: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.features_in_step is not None:
            check_positive_int("features_in_step", self.features_in_step)

    def _steps(self, x: Tensor, a: Tensor, *, descending: bool) -> tuple[Tensor, Tensor, int, Tensor]:
        """Features sorted by attribution and cut into steps: ``(x_flat, step_ids, n_steps, attribution per
        step)``."""
        batch = x.shape[0]
        a_flat = (a.abs() if self.abs else a).reshape(batch, -1)
        ids, n_steps = step_ids(a_flat, self.resolved_features_in_step(x), descending=descending)
        att = torch.zeros(batch, n_steps, dtype=a.dtype, device=a.device).scatter_add_(1, ids, a_flat)
        return x.reshape(batch, -1), ids, n_steps, att

    def resolved_features_in_step(self, inputs: Tensor) -> int:
        """Default: one sixteenth of the spatial size (3136 = 56² at 224×224)."""
        if self.features_in_step is not None:
            return self.features_in_step
        spatial = inputs.shape[2:].numel() if inputs.ndim > 2 else inputs.shape[1]
        return max(1, spatial // 16)


@dataclass(eq=False)
class FaithfulnessEstimate(_StepMetric):
    """Faithfulness estimate (Alvarez-Melis & Jaakkola 2018), as Quantus's ``FaithfulnessEstimate``.

    Features (elements of the attribution broadcast to the input's shape) are sorted by attribution, most
    relevant first, and cut into steps of ``features_in_step``; each step alone is set to ``baseline`` (0).
    The
    score is the Pearson correlation between each step's attribution sum and the drop of ``f_c``. Higher is
    better. ``abs=True`` ranks by ``|attr|`` as in the paper.
    """

    name = "faithfulness_estimate"
    higher_is_better = True
    category = "faithfulness"

    _: KW_ONLY
    baseline: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.baseline = float(self.baseline)

    def score(self, data: Batch) -> Tensor:
        model, x, t, a = data.model, data.inputs, data.targets, data.attributions
        zero = self._zero_mask(a)
        batch = x.shape[0]
        x_flat, ids, n_steps, att = self._steps(x, a, descending=True)
        stream = ScoreStream(model, batch_size=self.batch_size, softmax=self.softmax)
        stream.push(x, t)
        base = torch.tensor(self.baseline, dtype=x.dtype, device=x.device)
        for step in range(n_steps):
            stream.push(torch.where(ids == step, base, x_flat).reshape(x.shape), t)
        scores = stream.result()
        drops = scores[:batch, None] - scores[batch:].reshape(n_steps, batch).T
        return with_nan(pearson(att, drops), zero)


@dataclass(eq=False)
class MonotonicityCorrelation(_StepMetric):
    """Monotonicity correlation (Nguyen & Martínez 2020), as Quantus's ``MonotonicityCorrelation``.

    Features sorted by attribution (least relevant first) are cut into steps of ``features_in_step``; each
    step
    alone is replaced ``nr_samples`` times by uniform values in ``[low, high]``, and the output variance
    ``E[(f_c(x̃) − f_c(x))²]`` is measured. The score is the Spearman correlation between each step's
    attribution
    sum and that variance. Higher is better. ``softmax=True`` (probabilities) as in Quantus.

    ``fill="constant"`` replaces a step by one value per sample and draw (Quantus's batched ``"uniform"``
    baseline); ``"pixel"`` by i.i.d. values. ``sampler`` is called once per step with shape
    ``(nr_samples, B)`` or ``(nr_samples, B, F)``. Quantus also divides the variance by ``f_c(x)²``, a
    per-sample constant that cannot change a rank correlation, so it is left out.
    """

    name = "monotonicity_correlation"
    higher_is_better = True
    category = "faithfulness"

    _: KW_ONLY
    nr_samples: int = 10
    low: float = -1.0
    high: float = 1.0
    fill: Fill = "constant"
    softmax: bool = True
    sampler: NoiseSampler | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("nr_samples", self.nr_samples)
        _check_fill(self.fill)
        _check_range(self.low, self.high)

    def score(self, data: Batch) -> Tensor:
        model, x, t, a = data.model, data.inputs, data.targets, data.attributions
        zero = self._zero_mask(a)
        batch = x.shape[0]
        x_flat, ids, n_steps, att = self._steps(x, a, descending=False)
        gen = self._generator(x.device)
        sampler = self.sampler or uniform_sampler(self.low, self.high)
        stream = ScoreStream(model, batch_size=self.batch_size, softmax=self.softmax)
        stream.push(x, t)
        targets_rep = t.repeat(self.nr_samples)
        for step in range(n_steps):
            shape = (self.nr_samples, batch) if self.fill == "constant" else (self.nr_samples, batch, x_flat.shape[1])
            noise = sampler(shape, gen, x.device, x.dtype)
            fill = noise[..., None] if self.fill == "constant" else noise
            x_tilde = torch.where((ids == step).unsqueeze(0), fill, x_flat.unsqueeze(0))  # (S, B, F)
            stream.push(x_tilde.reshape(-1, *x.shape[1:]), targets_rep)
        scores = stream.result()
        f_tilde = scores[batch:].reshape(n_steps, self.nr_samples, batch)
        variance = (f_tilde - scores[:batch]).square().mean(1).T  # (B, n_steps)
        return with_nan(spearman(att, variance), zero)
