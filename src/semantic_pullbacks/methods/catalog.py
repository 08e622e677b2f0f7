"""Every method by name, and which gradient method each pullback method is compared against.

Front ends, the evaluation and the Quantus adapter take methods by name; this is where a name becomes a class.
"""

from __future__ import annotations

from ..errors import InvalidInputError
from .ascent import GradientAscent, PullbackAscent
from .base import Explainer
from .deeplift import DeepLift, PullbackDeepLift
from .guided_gradcam import GuidedGradCam, GuidedPullbackCam
from .noise import FusionGrad, FusionPullback, SmoothGrad, SmoothPullback
from .paths import GradientShap, IntegratedGradients, IntegratedPullbacks, PullbackShap
from .peers import PEERS, get_peer
from .pullback import DoublePullback, Gradient, SoftPullback

__all__ = ["METHODS", "PAIRS", "available_methods", "counterpart", "get_method"]

#: name -> (pullback method, its gradient counterpart or None)
PAIRS: dict[str, type[Explainer] | None] = {
    "SoftPullback": Gradient,
    "PullbackAscent": GradientAscent,
    "DoublePullback": Gradient,
    "SmoothPullback": SmoothGrad,
    "FusionPullback": FusionGrad,
    "IntegratedPullbacks": IntegratedGradients,
    "PullbackShap": GradientShap,
    "PullbackDeepLift": DeepLift,
    "GuidedPullbackCam": GuidedGradCam,
}

METHODS: dict[str, type[Explainer]] = {
    cls.__name__: cls
    for cls in (
        SoftPullback, PullbackAscent, DoublePullback, SmoothPullback, FusionPullback, IntegratedPullbacks,
        PullbackShap, PullbackDeepLift, GuidedPullbackCam, Gradient, GradientAscent, SmoothGrad, FusionGrad,
        IntegratedGradients, GradientShap, DeepLift, GuidedGradCam,
    )
}  # fmt: skip


def available_methods() -> list[str]:
    return list(METHODS)


def get_method(name: str) -> type[Explainer]:
    """Look a method up by name, case- and separator-insensitively (``soft-pullback`` works); other projects'
    methods (:mod:`.peers`) by their table names, so they can be baselines wherever ours are."""
    key = name.replace("-", "").replace("_", "").lower()
    for k, cls in METHODS.items():
        if k.lower() == key:
            return cls
    try:
        return get_peer(name)
    except InvalidInputError:
        raise InvalidInputError(
            f"unknown method {name!r}; available: {', '.join(METHODS)}; peers (the 'peers' extra): {', '.join(PEERS)}"
        ) from None


def counterpart(method: str | type[Explainer]) -> str | None:
    """The gradient baseline a pullback method (a name or the class) is compared against (``None`` for baselines
    themselves)."""
    cls = PAIRS.get((get_method(method) if isinstance(method, str) else method).__name__)
    return cls.__name__ if cls is not None else None
