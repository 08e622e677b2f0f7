"""Robustness: how much an explanation changes under small input noise."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

from torch import Tensor

from semantic_pullbacks.errors import InvalidInputError
from semantic_pullbacks.metrics.batched import model_outputs
from semantic_pullbacks.metrics.perturbations import NoiseSampler, uniform_sampler
from semantic_pullbacks.metrics.statistics import normalise_by_max, with_nan
from semantic_pullbacks.metrics.template import Batch, Metric
from semantic_pullbacks.metrics.validation import check_positive_int

__all__ = ["MaxSensitivity"]


@dataclass(eq=False)
class MaxSensitivity(Metric):
    """Max-sensitivity (Yeh et al. 2019), as Quantus's ``MaxSensitivity`` with its default norms.

    ``nr_samples`` inputs ``x̃ = x + u`` with ``u`` i.i.d. uniform in ``[-radius, radius]`` per element (no
    clipping) are explained for the same target; the score is ``max ‖a(x̃) − a(x)‖_F / ‖a(x)‖_F``. Lower is
    better. The relative norm makes the score independent of the attribution's scale.

    ``abs``/``normalise`` (max-abs per map) are applied to both maps when set (Quantus defaults: off).
    ``nan_on_prediction_change=True`` gives NaN when any noisy input changes the predicted class (Quantus's
    ``return_nan_when_prediction_changes``). ``sampler`` is called once with shape ``(nr_samples, *x.shape)``.
    """

    name = "max_sensitivity"
    higher_is_better = False
    category = "robustness"
    needs_explainer = True

    nr_samples: int = 10
    radius: float = 0.02
    _: KW_ONLY
    abs: bool = False
    normalise: bool = False
    nan_on_prediction_change: bool = False
    sampler: NoiseSampler | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("nr_samples", self.nr_samples)
        if not self.radius > 0:
            raise InvalidInputError(f"radius must be positive, got {self.radius!r}")
        self.radius = float(self.radius)

    def _post(self, a: Tensor) -> Tensor:
        if self.normalise:
            a = normalise_by_max(a)
        return a.abs() if self.abs else a

    def score(self, data: Batch) -> Tensor:
        model, x, t, a, explain = data.model, data.inputs, data.targets, data.attributions, data.explain
        zero = self._zero_mask(a)
        batch = x.shape[0]
        sampler = self.sampler or uniform_sampler(-self.radius, self.radius)
        noise = sampler((self.nr_samples, *x.shape), self._generator(x.device), x.device, x.dtype)
        x_tilde = (x.unsqueeze(0) + noise).flatten(0, 1)
        t_rep = t.repeat(self.nr_samples)
        a_tilde = self._explain(explain, model, x_tilde, t_rep).reshape(self.nr_samples, batch, -1)
        a_ref = self._post(a).reshape(1, batch, -1)
        a_tilde = self._post(a_tilde.reshape(-1, *x.shape[1:])).reshape(self.nr_samples, batch, -1)
        ratio = (a_tilde - a_ref).norm(dim=2) / a_ref.norm(dim=2)
        score = ratio.amax(dim=0)
        if self.nan_on_prediction_change:
            pred = model_outputs(model, x, batch_size=self.batch_size).argmax(1)
            pred_tilde = model_outputs(model, x_tilde, batch_size=self.batch_size).argmax(1)
            changed = (pred_tilde.reshape(self.nr_samples, batch) != pred).any(0)
            score = with_nan(score, changed)
        return with_nan(score, zero)
