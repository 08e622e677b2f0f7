"""Semantic Pullbacks: faithful, class-conditional explanations of PyTorch models at the cost of one backward pass.

>>> from semantic_pullbacks import SoftPullback, load
>>> loaded = load()                                        # doctest: +SKIP
>>> attr = SoftPullback(loaded).attribute(x, target=285)   # doctest: +SKIP

>>> from semantic_pullbacks import pullback_mode
>>> with pullback_mode() as pb:          # doctest: +SKIP
...     model(x)[0, target].backward()   # x.grad is now the soft pullback, not the gradient

The methods, models and settings below are imported on first use, so ``import semantic_pullbacks`` costs little
more than ``import torch`` and never loads Captum, torchvision, timm or matplotlib.
"""

import importlib
from typing import TYPE_CHECKING, Any

from .engine import (
    FAMILIES,
    BySize,
    CoverageReport,
    PullbackSession,
    Relative,
    Temperatures,
    check_model_supported,
    pullback_mode,
    register_rule,
    registered_rules,
    unregister_rule,
)
from .errors import (
    ImageLoadError,
    InvalidInputError,
    NotDifferentiableError,
    SemanticPullbacksError,
    UnexpectedArgumentError,
    UnknownClassError,
    UnknownModelError,
    UnsupportedModelError,
    WeightsUnavailableError,
)

#: public names imported on first access: name -> module
_LAZY = {
    **dict.fromkeys(
        (
            "AscentResult", "DeepLift", "DoublePullback", "Explainer", "FusionGrad", "FusionPullback", "Gradient",
            "GradientAscent", "GradientShap", "GuidedGradCam", "GuidedPullbackCam", "IntegratedGradients",
            "IntegratedPullbacks", "PullbackAscent", "PullbackDeepLift", "PullbackShap", "SmoothGrad",
            "SmoothPullback", "SoftPullback", "available_methods", "get_method", "quantus_explain_func",
        ),
        "semantic_pullbacks.methods",
    ),
    **dict.fromkeys(("LoadedModel", "NormalizedModel", "load", "wrap"), "semantic_pullbacks.models"),
    **dict.fromkeys(("Settings", "load_settings", "recommended_settings"), "semantic_pullbacks.calibration"),
}  # fmt: skip
_SUBPACKAGES = ("calibration", "engine", "evaluation", "methods", "metrics", "models", "visualize")

if TYPE_CHECKING:
    from .calibration import Settings, load_settings, recommended_settings
    from .methods import (
        AscentResult,
        DeepLift,
        DoublePullback,
        Explainer,
        FusionGrad,
        FusionPullback,
        Gradient,
        GradientAscent,
        GradientShap,
        GuidedGradCam,
        GuidedPullbackCam,
        IntegratedGradients,
        IntegratedPullbacks,
        PullbackAscent,
        PullbackDeepLift,
        PullbackShap,
        SmoothGrad,
        SmoothPullback,
        SoftPullback,
        available_methods,
        get_method,
        quantus_explain_func,
    )
    from .models import LoadedModel, NormalizedModel, load, wrap


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBPACKAGES})


__version__ = "0.1.0"

__all__ = [
    "FAMILIES",
    "AscentResult",
    "BySize",
    "CoverageReport",
    "DeepLift",
    "DoublePullback",
    "Explainer",
    "FusionGrad",
    "FusionPullback",
    "Gradient",
    "GradientAscent",
    "GradientShap",
    "GuidedGradCam",
    "GuidedPullbackCam",
    "ImageLoadError",
    "IntegratedGradients",
    "IntegratedPullbacks",
    "InvalidInputError",
    "LoadedModel",
    "NormalizedModel",
    "NotDifferentiableError",
    "PullbackAscent",
    "PullbackDeepLift",
    "PullbackSession",
    "PullbackShap",
    "Relative",
    "SemanticPullbacksError",
    "Settings",
    "SmoothGrad",
    "SmoothPullback",
    "SoftPullback",
    "Temperatures",
    "UnexpectedArgumentError",
    "UnknownClassError",
    "UnknownModelError",
    "UnsupportedModelError",
    "WeightsUnavailableError",
    "__version__",
    "available_methods",
    "check_model_supported",
    "get_method",
    "load",
    "load_settings",
    "pullback_mode",
    "quantus_explain_func",
    "recommended_settings",
    "register_rule",
    "registered_rules",
    "unregister_rule",
    "wrap",
]
