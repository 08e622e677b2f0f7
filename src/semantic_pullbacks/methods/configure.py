"""Which constructor settings a method gets from a set of temperatures and ascent parameters.

One mapping for every front end: the CLI, the web app and Python (``SoftPullback(loaded)``,
``loaded.explainer("PullbackAscent")``) all turn the same settings into the same keyword arguments, so a map made
in a script equals the one the CLI draws.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..engine import Temperatures
from .base import Explainer
from .catalog import get_method

__all__ = ["STEPPING_METHODS", "accepted_settings", "method_settings", "temperatures_for"]

#: Methods that step along the pullback before reading it: they use the ascent's own temperatures when given.
STEPPING_METHODS = frozenset({"PullbackAscent", "DoublePullback"})


def temperatures_for(method: str, temperatures: Temperatures, ascent_temperatures: Temperatures | None) -> Temperatures:
    """The temperatures ``method`` runs with: the ascent's own for stepping methods, when given."""
    if ascent_temperatures is not None and method in STEPPING_METHODS:
        return ascent_temperatures
    return temperatures


def accepted_settings(method: str | type[Explainer]) -> set[str]:
    """Keyword names a method's constructor accepts (following ``**kwargs`` up to the base classes that consume
    them), so front ends can offer one set of shared settings (temperatures, steps, seed, ...) to any method."""
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


def method_settings(
    method: str | type[Explainer],
    temperatures: Temperatures,
    *,
    ascent_temperatures: Temperatures | None = None,
    steps: int = 5,
    alpha: float | None = 20.0,
    domain: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """The keyword arguments ``method``'s constructor accepts among: its temperatures (the ascent's own for the
    stepping methods, when given), ascent ``steps`` and ``alpha``, and the input ``domain``."""
    cls = get_method(method) if isinstance(method, str) else method
    stepping = next((k.__name__ for k in cls.__mro__ if k.__name__ in STEPPING_METHODS), cls.__name__)
    offered: dict[str, Any] = {
        "temperatures": temperatures_for(stepping, temperatures, ascent_temperatures),
        "steps": steps,
        "alpha": alpha,
    }
    if domain is not None:
        offered["domain"] = domain
    accepted = accepted_settings(cls)
    return {k: v for k, v in offered.items() if k in accepted}
