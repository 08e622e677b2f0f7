"""Presets: the paper's exact evaluation settings, and a fast variant for a first look on a laptop CPU.

The paper's settings cost thousands of model passes per (image, method): right for a publication, wrong for
checking an installation or a new model in a few minutes. ``fast`` keeps every method and metric but cuts
sample counts (noise draws, integration steps, perturbation draws) and coarsens the faithfulness steps. Its
numbers are noisier and not directly comparable with the paper's; ``paper`` reproduces the paper's table.
They sit beside the metrics because both the evaluation and the calibration read them.

=========================  ================================  ============================
setting                    paper                             fast
=========================  ================================  ============================
SmoothGrad / -Pullback     50 noise samples, sigma 0.15      4 samples
FusionGrad / -Pullback     10 models x 10 noise samples      2 x 2
IntegratedGradients / -PB  50 steps                          4 steps
GradientShap / PullbackSh  20 samples                        4 samples
infidelity                 patches 1/2, 1/4 of side, 5 draws 1 draw
faithfulness_estimate      (side/4)^2 features per step      4x larger steps
monotonicity_correlation   (side/4)^2 per step, 10 samples   4x larger steps, 2 samples
max_sensitivity            10 samples, radius 0.02           2 samples
faithfulness_correlation,  as in the paper                   as in the paper
random_logit, focus,
aliasing,
top_layer_randomisation
=========================  ================================  ============================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from semantic_pullbacks.errors import InvalidInputError

__all__ = ["PRESETS", "Preset", "get_preset", "metric_settings"]

#: the paper's table, in its column order, then the diagnostics reported beside it (aliasing: free; top-layer
#: randomisation: one explanation per image); the cascading model_parameter_randomisation only on request
DEFAULT_METRICS = (
    "infidelity",
    "faithfulness_correlation",
    "faithfulness_estimate",
    "monotonicity_correlation",
    "max_sensitivity",
    "random_logit",
    "focus",
    "aliasing",
    "top_layer_randomisation",
)


def _frozen(d: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Mapping[str, Any]]:
    return MappingProxyType({k: MappingProxyType(dict(v)) for k, v in d.items()})


@dataclass(frozen=True)
class Preset:
    """Per-method constructor settings and per-metric overrides on top of the paper's metric settings.

    ``step_scale`` multiplies the features per step of the step-wise metrics (1 = the paper's).
    """

    name: str
    method_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    metric_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    step_scale: int = 1


_SMOOTH_FAST = {"nt_samples": 4, "nt_samples_batch_size": 4}
_FUSION_FAST = {"model_samples": 2, "nt_samples": 2, "nt_samples_batch_size": 2}
_IG_FAST = {"n_steps": 4, "internal_batch_size": 16}
_SHAP_FAST = {"n_samples": 4}

PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        "paper": Preset("paper"),
        "fast": Preset(
            "fast",
            method_settings=_frozen(
                {
                    "SmoothGrad": _SMOOTH_FAST,
                    "SmoothPullback": _SMOOTH_FAST,
                    "FusionGrad": _FUSION_FAST,
                    "FusionPullback": _FUSION_FAST,
                    "IntegratedGradients": _IG_FAST,
                    "IntegratedPullbacks": _IG_FAST,
                    "GradientShap": _SHAP_FAST,
                    "PullbackShap": _SHAP_FAST,
                }
            ),
            metric_overrides=_frozen(
                {
                    "infidelity": {"n_draws": 1},
                    "monotonicity_correlation": {"nr_samples": 2},
                    "max_sensitivity": {"nr_samples": 2},
                }
            ),
            step_scale=4,
        ),
    }
)


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise InvalidInputError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


def metric_settings(name: str, input_size: int, preset: Preset) -> dict[str, Any]:
    """Constructor settings of metric ``name`` for square inputs of ``input_size`` under ``preset``.

    The paper's settings are those of :func:`semantic_pullbacks.metrics.paper_suite` (sizes scale with the
    input: patches of 1/2 and 1/4 of the side, steps of ``(side/4)²`` features).
    """
    half, quarter = max(1, input_size // 2), max(1, input_size // 4)
    step = max(1, quarter * quarter)
    paper: dict[str, dict[str, Any]] = {
        "infidelity": {"patch_sizes": (half, quarter), "n_draws": 5},
        "faithfulness_correlation": {"patch_size": quarter},
        "faithfulness_estimate": {"features_in_step": step},
        "monotonicity_correlation": {"features_in_step": step, "nr_samples": 10},
        "max_sensitivity": {"nr_samples": 10, "radius": 0.02},
    }
    settings = dict(paper.get(name, {}))
    if "features_in_step" in settings:
        settings["features_in_step"] = step * preset.step_scale
    settings.update(preset.metric_overrides.get(name, {}))
    return settings
