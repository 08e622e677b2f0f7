"""Semantic Pullbacks: faithful, class-conditional explanations of PyTorch models at the cost of one backward pass.

>>> from semantic_pullbacks import pullback_mode
>>> with pullback_mode() as pb:          # doctest: +SKIP
...     model(x)[0, target].backward()   # x.grad is now the soft pullback, not the gradient
"""

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
    SemanticPullbacksError,
    UnknownClassError,
    UnknownModelError,
    UnsupportedModelError,
    WeightsUnavailableError,
)

__version__ = "0.1.0"

__all__ = [
    "FAMILIES",
    "BySize",
    "CoverageReport",
    "ImageLoadError",
    "InvalidInputError",
    "PullbackSession",
    "Relative",
    "SemanticPullbacksError",
    "Temperatures",
    "UnknownClassError",
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
