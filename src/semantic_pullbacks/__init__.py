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
from typing import Any

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
    UnknownLayerError,
    UnknownModelError,
    UnsupportedModelError,
    WeightsUnavailableError,
)

#: what each subpackage lends the top level, imported on first access: the one list of these names
_LAZY_EXPORTS = {
    "semantic_pullbacks.methods": (
        "AscentResult", "DeepLift", "Direction", "DoublePullback", "Explainer", "Feature", "FusionGrad",
        "FusionPullback", "Gradient", "GradientAscent", "GradientShap", "GuidedGradCam", "GuidedPullbackCam",
        "IntegratedGradients", "IntegratedPullbacks", "LayerInfo", "LayerTarget", "Neuron", "PullbackAscent",
        "PullbackDeepLift", "PullbackShap", "SmoothGrad", "SmoothPullback", "SoftPullback", "available_methods",
        "get_method", "layer_names", "layer_output", "layer_shapes", "quantus_explain_func", "resolve_layer",
        "target_value",
    ),
    "semantic_pullbacks.models": ("LoadedModel", "NormalizedModel", "load", "wrap"),
    "semantic_pullbacks.calibration": ("Settings", "load_settings", "recommended_settings"),
}  # fmt: skip
#: public name -> the module it is imported from on first access
_LAZY = {name: module for module, names in _LAZY_EXPORTS.items() for name in names}
_SUBPACKAGES = ("calibration", "engine", "evaluation", "methods", "metrics", "models", "visualize")


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
    "BySize",
    "CoverageReport",
    "ImageLoadError",
    "InvalidInputError",
    "NotDifferentiableError",
    "PullbackSession",
    "Relative",
    "SemanticPullbacksError",
    "Temperatures",
    "UnexpectedArgumentError",
    "UnknownClassError",
    "UnknownLayerError",
    "UnknownModelError",
    "UnsupportedModelError",
    "WeightsUnavailableError",
    "__version__",
    "check_model_supported",
    "pullback_mode",
    "register_rule",
    "registered_rules",
    "unregister_rule",
]
__all__ += sorted(_LAZY)
