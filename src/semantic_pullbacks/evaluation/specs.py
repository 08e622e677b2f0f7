"""What a benchmark row's "method" is: a method class with settings, and the ablation grid built from them.

A label names each configured method in the results (``SoftPullback``, ``SoftPullback[relu=0.3]``), so one
run can hold a method next to its variants, and resumed runs find their rows by label.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

from semantic_pullbacks.engine import FAMILIES, Temperatures
from semantic_pullbacks.errors import InvalidInputError
from semantic_pullbacks.methods import Explainer, accepted_settings
from semantic_pullbacks.text.peers import get_text_method

__all__ = ["ABLATION_METHODS", "MethodSpec", "ablation_specs", "parse_ablation", "temperatures_record"]

#: the methods an ablation sweeps by default: the two the paper ablates
ABLATION_METHODS = ("SoftPullback", "PullbackAscent")
_ASCENT_PARAMS = {"k": "steps", "steps": "steps", "alpha": "alpha", "α": "alpha", "a": "alpha"}


@dataclass(frozen=True)
class MethodSpec:
    """``method`` (a class name of :mod:`semantic_pullbacks.methods`) under ``label`` with constructor
    ``settings``; ``settings["temperatures"]`` (family -> value) changes only those families.

    The name is looked up once, here (an unknown one fails before any model loads): ``method_class`` is what the
    plan, the scorer and the report use.
    """

    label: str
    method: str
    settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    method_class: type[Explainer] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "method_class", get_text_method(self.method))

    @classmethod
    def of(cls, name: str, settings: Mapping[str, Any] | None = None) -> MethodSpec:
        """The method called ``name`` (any spelling :func:`~semantic_pullbacks.text.peers.get_text_method` accepts,
        text peers too), labelled by its class name."""
        canonical = get_text_method(name).__name__
        return cls(canonical, canonical, MappingProxyType(dict(settings or {})))

    def resolved(
        self,
        *,
        temperatures: Temperatures,
        ascent: Mapping[str, Any],
        seed: int,
        domain: tuple[float, float] | None = None,
    ) -> dict[str, Any]:
        """The keyword arguments the method's constructor gets: shared settings it accepts, then its own
        (``domain``: the input's value range, where it has one: images do, token embeddings do not)."""
        own = dict(self.settings)
        temps = temperatures.replace(**own.pop("temperatures", {})) if "temperatures" in own else temperatures
        offered: dict[str, Any] = {"temperatures": temps, **ascent, "seed": seed}
        if domain is not None:
            offered["domain"] = domain
        accepted = accepted_settings(self.method_class)
        kwargs = {k: v for k, v in offered.items() if k in accepted}
        kwargs.update(own)
        return kwargs

    def build(self, model: nn.Module, **shared: Any) -> Explainer:
        """An instance bound to ``model`` (``shared``: see :meth:`resolved`)."""
        return self.method_class(model, **self.resolved(**shared))


def temperatures_record(temperatures: Temperatures) -> dict[str, Any]:
    """Temperatures as plain JSON values (a fingerprint must not depend on object identity)."""
    return {k: (v if v is None or isinstance(v, (int, float)) else repr(v)) for k, v in temperatures.items()}


def _value(param: str, text: str) -> Any:
    """A swept value: a temperature in any form ``--temperatures`` takes (``0.3``, ``3*std``, ``none``, staged),
    validated like one; a positive whole K; a positive alpha or ``none``."""
    if param in FAMILIES:
        try:
            return Temperatures.coerce({param: text.strip()}).get(param)
        except InvalidInputError as error:
            raise InvalidInputError(f"--ablate {param}={text.strip()}: {error}") from None
    t = text.strip().lower()
    if t in ("none", "off", "null"):
        if param == "steps":
            raise InvalidInputError("--ablate K: the number of steps cannot be 'none'")
        return None
    try:
        v = float(t)
    except ValueError:
        raise InvalidInputError(f"--ablate {param}: {text!r} is not a number (or 'none')") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and param in ("steps", "alpha")):
        raise InvalidInputError(f"--ablate {param}: values must be positive, got {text!r}")
    if param == "steps":
        if v != int(v):
            raise InvalidInputError(f"--ablate K: the number of steps must be a whole number, got {text!r}")
        return int(v)
    return v


def parse_ablation(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["relu=0.3,0.6,3*std", "K=3,5"]`` -> ``{"relu": [0.3, 0.6, Relative(3.0)], "steps": [3, 5]}``.

    Parameters: a temperature family (``relu``, ``gelu``, ``silu``, ``maxpool``, ``attention``, ``gate``,
    ``norm``; values in any form ``--temperatures`` takes, ``none`` keeping that family's ordinary gradient),
    ``K`` (ascent steps) or ``alpha`` (step length; ``none`` for raw steps).
    """
    out: dict[str, list[Any]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        key = name.strip().lower()
        if not sep or not key or not values.strip():
            raise InvalidInputError(f"--ablate {item!r}: write PARAM=V1,V2,... e.g. 'relu=0.3,0.6,1.0' or 'K=3,5'")
        param = _ASCENT_PARAMS.get(key, key)
        if param not in FAMILIES and param not in ("steps", "alpha"):
            known = ", ".join([*FAMILIES, "K", "alpha"])
            raise InvalidInputError(f"--ablate {item!r}: unknown parameter {name.strip()!r}; known: {known}")
        parsed = [_value(param, v) for v in values.split(",") if v.strip()]
        out.setdefault(param, [])
        out[param] += [v for v in parsed if v not in out[param]]
    if not out:
        raise InvalidInputError("--ablate needs at least one PARAM=V1,V2,... sweep")
    return out


def _fmt(v: Any) -> str:
    """A swept value in a row label, written as the user would type it (``0.3``, ``3*std``, ``none``)."""
    if v is None:
        return "none"
    if isinstance(v, (int, float)):
        return f"{v:g}"
    return str(Temperatures.coerce({"relu": v}).to_dict()["relu"])


def ablation_specs(
    sweeps: Mapping[str, Sequence[Any]],
    methods: Sequence[str] = ABLATION_METHODS,
    *,
    temperatures: Temperatures,
    ascent: Mapping[str, Any],
) -> list[MethodSpec]:
    """One factor at a time: each method at its base settings, then one variant per swept value.

    A temperature sweep applies to every method that takes temperatures, ``K``/``alpha`` to the ascent
    methods; values equal to the base setting are not repeated (the base row is that variant).
    """
    specs: list[MethodSpec] = []
    for name in methods:
        base = MethodSpec.of(name)
        accepted = accepted_settings(base.method_class)
        specs.append(base)
        for param, values in sweeps.items():
            for v in values:
                if param in FAMILIES and "temperatures" in accepted:
                    if temperatures.get(param) == v:
                        continue
                    settings: dict[str, Any] = {"temperatures": {param: v}}
                elif param in ("steps", "alpha") and param in accepted:
                    if ascent.get(param) == v:
                        continue
                    settings = {param: v}
                else:
                    continue
                label = f"{base.label}[{'K' if param == 'steps' else param}={_fmt(v)}]"
                specs.append(MethodSpec(label, base.method, MappingProxyType(settings)))
    return specs
