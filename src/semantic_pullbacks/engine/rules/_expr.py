"""Expression tags: what a tensor is, in terms of an earlier tensor, for composites written out op by op.

The mode sees a hand-written RMSNorm as ``pow``, ``mean``, ``add``, ``rsqrt``, ``mul``, one call at a time. Each
of those calls leaves a small :class:`Expr` on its output saying how it was built from a *root* tensor ``r``:

- ``lin``: ``c * r`` (scalar multiples and dtype casts of ``r``);
- ``fx``: an elementwise function of ``r`` (``flags`` remember what matters later: ``square``, ``centred``, ``exp``);
- ``stat``: a statistic of ``r`` over some dims (``mean``, ``meansq``, ``var``, ``max``, ``expsum``, ``rstd``,
  ``std``).

When a later call completes a known composite (a product of ``r`` with its own ``rstd``; ``r`` times an
elementwise gate of ``r``; ``exp(r)`` over its own sum) the rule for the whole composite takes over. The
nonlinear pieces met on the way were recorded in the coverage report as they came (honestly: with their
ordinary gradient); a completed composite *retracts* them (:class:`Pending`) and records itself instead, so the
report names what the engine understood, and nothing it did not understand is hidden.

Roots are held by weak reference, so tags never keep tensors alive.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..registry import NOT_HANDLED, register_rule, rule_for

__all__ = ["Expr", "Pending", "chain_rule", "expr_of", "retract", "root_of", "roots", "set_expr"]

_KEY = "_semantic_pullbacks_expr"


@dataclass
class Pending:
    """One coverage entry recorded by a piece of a composite, withdrawn if the composite completes."""

    op: str
    status: str
    retracted: bool = False


@dataclass(frozen=True)
class Expr:
    kind: str  # "lin" | "fx" | "stat"
    root: Callable[[], torch.Tensor | None]
    coef: float = 1.0  # lin: the scalar factor
    flags: frozenset[str] = frozenset()  # fx: square / centred / exp / ...
    stat: str = ""  # stat: which statistic
    dims: tuple[int, ...] | None = None  # stat: reduced dims (normalised to negative indices)
    pending: tuple[Pending, ...] = field(default=())

    def root_tensor(self) -> torch.Tensor | None:
        return self.root()


def _ref(t: torch.Tensor) -> Callable[[], torch.Tensor | None]:
    try:
        return weakref.ref(t)
    except TypeError:  # pragma: no cover - every torch.Tensor supports weak references
        return lambda: None


def make(kind: str, root: torch.Tensor, **fields: Any) -> Expr:
    return Expr(kind, _ref(root), **fields)


def expr_of(t: Any) -> Expr | None:
    if isinstance(t, torch.Tensor):
        return t.__dict__.get(_KEY)
    return None


def set_expr(t: Any, expr: Expr | None) -> Any:
    if expr is not None and isinstance(t, torch.Tensor):
        t.__dict__[_KEY] = expr
    return t


def root_of(t: torch.Tensor) -> torch.Tensor:
    """The tensor an elementwise function of ``t`` is a function of: ``t``'s own root for lin/fx tags."""
    e = expr_of(t)
    if e is not None and e.kind in ("lin", "fx"):
        r = e.root_tensor()
        if r is not None:
            return r
    return t


def roots(t: torch.Tensor) -> list[torch.Tensor]:
    """The tensors ``t`` is built from elementwise: itself and, if tagged lin/fx, its root."""
    out = [t]
    e = expr_of(t)
    if e is not None and e.kind in ("lin", "fx"):
        r = e.root_tensor()
        if r is not None and r is not t:
            out.append(r)
    return out


def common_root(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
    rb = roots(b)
    for r in roots(a):
        if any(r is s for s in rb):
            return r
    return None


def pending_of(*tensors: Any) -> tuple[Pending, ...]:
    out: list[Pending] = []
    for t in tensors:
        e = expr_of(t)
        if e is not None:
            out.extend(p for p in e.pending if all(p is not q for q in out))
    return tuple(out)


def retract(coverage: Any, pending: Iterable[Pending]) -> None:
    """Withdraw the coverage entries of a composite's pieces (each once)."""
    for p in pending:
        if not p.retracted:
            p.retracted = True
            key = (p.op, p.status)
            if coverage.counts[key] > 0:
                coverage.counts[key] -= 1
                if coverage.counts[key] == 0:
                    del coverage.counts[key]


# --- rules layered over earlier ones ------------------------------------------------------------------------
#: ``handler(func, args, kwargs, ctx, previous) -> output or NOT_HANDLED``.
ChainedHandler = Callable[..., Any]


def chain_rule(funcs: Iterable[Any], *, op: str, family: str, description: str = ""):  # type: ignore[no-untyped-def]
    """Register a handler in front of the rule each of ``funcs`` already has.

    The composites' bookkeeping rides on ops other rules own too (``mul`` for squeeze-excitation gates, ``add``
    for rebuilt ReLU inputs); layering keeps each concern in its own module instead of one handler knowing all.
    ``previous(func, args, kwargs, ctx)`` runs the earlier rule and returns its output, or ``NOT_HANDLED``.
    """

    def decorate(handler: ChainedHandler) -> ChainedHandler:
        for func in funcs:
            if func is None:
                continue
            earlier = rule_for(func)

            def previous(f, args, kwargs, ctx, earlier=earlier):  # type: ignore[no-untyped-def]
                return earlier.handler(f, args, kwargs, ctx) if earlier is not None else NOT_HANDLED

            def layered(f, args, kwargs, ctx, previous=previous):  # type: ignore[no-untyped-def]
                return handler(f, args, kwargs, ctx, previous)

            register_rule(func, op=op, family=family, description=description, replace=True)(layered)
        return handler

    return decorate
