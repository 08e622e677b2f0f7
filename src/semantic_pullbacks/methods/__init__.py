"""Explanation methods with Captum's interface: SP, pullback ascent, and pullback versions of classic methods.

>>> from semantic_pullbacks.methods import SoftPullback
>>> attr = SoftPullback(model).attribute(x, target=285)   # doctest: +SKIP
"""

from __future__ import annotations

from .ascent import AscentResult, GradientAscent, PullbackAscent
from .base import Explainer
from .classic import (
    DeepLift,
    FusionGrad,
    FusionPullback,
    GradientShap,
    GuidedGradCam,
    GuidedPullbackCam,
    IntegratedGradients,
    IntegratedPullbacks,
    PullbackDeepLift,
    PullbackShap,
    SmoothGrad,
    SmoothPullback,
)
from .pullback import DoublePullback, Gradient, SoftPullback
from .quantus_adapter import quantus_explain_func
from .targets import TargetType

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
    """Look a method up by name, case- and separator-insensitively (``soft-pullback`` works)."""
    from ..errors import InvalidInputError

    key = name.replace("-", "").replace("_", "").lower()
    for k, cls in METHODS.items():
        if k.lower() == key:
            return cls
    from ..peers import PEERS, get_peer  # other projects' methods (Zennit, pytorch-grad-cam, Captum's LRP)

    try:
        return get_peer(name)
    except InvalidInputError:
        raise InvalidInputError(
            f"unknown method {name!r}; available: {', '.join(METHODS)}; peers (the 'peers' extra): {', '.join(PEERS)}"
        ) from None


def accepted_settings(method: str | type[Explainer]) -> set[str]:
    """Keyword names a method's constructor accepts (following ``**kwargs`` up to the base classes that consume
    them), so front ends can offer one set of shared settings (temperatures, steps, seed, ...) to any method."""
    import inspect

    cls = get_method(method) if isinstance(method, str) else method
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters
        names |= {n for n, p in parameters.items() if p.kind is not p.VAR_KEYWORD and n != "self"}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            break
    # Captum-based methods take their settings through **settings, validated against their declared defaults
    return names | set(getattr(cls, "defaults", {}))


def counterpart(name: str) -> str | None:
    """The gradient baseline a pullback method is compared against (``None`` for baselines themselves)."""
    cls = PAIRS.get(get_method(name).__name__)
    return cls.__name__ if cls is not None else None


__all__ = [
    "METHODS",
    "PAIRS",
    "AscentResult",
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
    "IntegratedGradients",
    "IntegratedPullbacks",
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
    "quantus_explain_func",
]
