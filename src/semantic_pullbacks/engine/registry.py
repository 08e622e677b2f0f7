"""The rule registry: which torch functions the engine intercepts, and how.

A rule is looked up by the exact function object the torch-function layer hands to the mode (``F.relu``,
``torch.relu_``, ``torch.Tensor.relu`` are three different objects). Users add rules for ops of their own with
:func:`register_rule`; tests parametrise over :func:`registered_rules`, so every entry gets tested.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .context import PassContext
from .families import rules_read

__all__ = [
    "NOT_HANDLED",
    "Rule",
    "RuleHandler",
    "register_nonlinear",
    "register_rule",
    "registered_rules",
    "rule_for",
    "unregister_rule",
]


class _NotHandled:
    """Returned by a handler that decides at run time that a call is not its business (e.g. a plain mul)."""

    def __repr__(self) -> str:
        return "NOT_HANDLED"


NOT_HANDLED: Any = _NotHandled()

#: ``handler(func, args, kwargs, ctx) -> output or NOT_HANDLED``; ``ctx.temperature(family)`` gives the
#: temperature and ``ctx.record(op, status)`` feeds the coverage report.
RuleHandler = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any], PassContext], Any]


@dataclass(frozen=True)
class Rule:
    """How one op is treated: its report name, the temperature family it reads, and its handler."""

    op: str
    family: str
    handler: RuleHandler
    description: str = ""


_RULES: dict[Any, Rule] = {}
#: Nonlinear torch functions without a rule: reported as met with their ordinary gradient.
_NONLINEAR: dict[Any, str] = {}


def register_rule(
    funcs: Any | Iterable[Any], *, op: str, family: str, description: str = "", replace: bool = False
) -> Callable[[RuleHandler], RuleHandler]:
    """Decorator: route calls of ``funcs`` inside :func:`pullback_mode` to the decorated handler.

    >>> import torch
    >>> @register_rule(torch.clamp, op="clamp", family="relu", replace=True)  # doctest: +SKIP
    ... def soft_clamp(func, args, kwargs, ctx): ...
    """
    targets = list(funcs) if isinstance(funcs, (list, tuple, set, frozenset)) else [funcs]
    targets = list({id(f): f for f in targets}.values())  # aliases such as F.relu_ is torch.relu_

    def decorate(handler: RuleHandler) -> RuleHandler:
        for func in targets:
            if func is None:
                continue
            if func in _RULES and not replace:
                raise ValueError(f"a rule for {_name(func)} exists already; pass replace=True to override it")
            _RULES[func] = Rule(op=op, family=family, handler=handler, description=description)
            _NONLINEAR.pop(func, None)
        _families_changed()
        return handler

    return decorate


def unregister_rule(func: Any) -> None:
    """Remove the rule for ``func`` (its ordinary gradient is used again)."""
    _RULES.pop(func, None)
    _families_changed()


def _families_changed() -> None:
    rules_read(rule.family for rule in _RULES.values())


def register_nonlinear(funcs: Iterable[Any], op: str) -> None:
    """Declare functions that are nonlinear but keep their ordinary gradient, so the report can name them."""
    for func in funcs:
        if func is not None and func not in _RULES:
            _NONLINEAR[func] = op


def rule_for(func: Any) -> Rule | None:
    try:
        return _RULES.get(func)
    except TypeError:  # unhashable callables are never registered
        return None


def has_business_with(func: Any) -> bool:
    """Whether ``func`` has a rule or is a declared nonlinearity: one lookup, so that the mode hands every other
    call (tensor properties, shapes, convolutions) straight back to torch."""
    try:
        return func in _RULES or func in _NONLINEAR
    except TypeError:
        return False


def nonlinear_name(func: Any) -> str | None:
    try:
        return _NONLINEAR.get(func)
    except TypeError:
        return None


def registered_rules() -> list[tuple[Any, Rule]]:
    """Every (torch function, rule) pair, in registration order."""
    return list(_RULES.items())


def _name(func: Any) -> str:
    module = getattr(func, "__module__", None) or ""
    return f"{module}.{getattr(func, '__qualname__', repr(func))}".lstrip(".")
