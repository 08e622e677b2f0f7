"""Explanation methods with Captum's interface: SP, pullback ascent, and pullback versions of classic methods.

>>> from semantic_pullbacks.methods import SoftPullback
>>> attr = SoftPullback(model).attribute(x, target=285)   # doctest: +SKIP
"""

from __future__ import annotations

from .ascent import AscentResult, GradientAscent, PullbackAscent
from .base import Explainer
from .catalog import METHODS, PAIRS, available_methods, counterpart, get_method
from .configure import accepted_settings
from .deeplift import DeepLift, PullbackDeepLift
from .guided_gradcam import GuidedGradCam, GuidedPullbackCam
from .layer_targets import (
    Direction,
    Feature,
    LayerInfo,
    LayerTarget,
    Neuron,
    layer_names,
    layer_output,
    layer_shapes,
    resolve_layer,
    target_value,
)
from .noise import FusionGrad, FusionPullback, SmoothGrad, SmoothPullback
from .paths import GradientShap, IntegratedGradients, IntegratedPullbacks, PullbackShap
from .pullback import DoublePullback, Gradient, SoftPullback
from .quantus_adapter import quantus_explain_func
from .targets import TargetType

__all__ = [
    "METHODS",
    "PAIRS",
    "AscentResult",
    "DeepLift",
    "Direction",
    "DoublePullback",
    "Explainer",
    "Feature",
    "FusionGrad",
    "FusionPullback",
    "Gradient",
    "GradientAscent",
    "GradientShap",
    "GuidedGradCam",
    "GuidedPullbackCam",
    "IntegratedGradients",
    "IntegratedPullbacks",
    "LayerInfo",
    "LayerTarget",
    "Neuron",
    "PullbackAscent",
    "PullbackDeepLift",
    "PullbackShap",
    "SmoothGrad",
    "SmoothPullback",
    "SoftPullback",
    "TargetType",
    "accepted_settings",
    "available_methods",
    "counterpart",
    "get_method",
    "layer_names",
    "layer_output",
    "layer_shapes",
    "quantus_explain_func",
    "resolve_layer",
    "target_value",
]
