"""Gated MLPs (SwiGLU, GeGLU, ReGLU, ``F.glu``): the activated branch is a frozen gate.

A gated MLP computes ``act(x W_g) * (x W_u)``. Read as the paper reads a network (gates held fixed, the rest
affine), the activated branch ``a = act(x W_g)`` is the gate, exactly as a squeeze-excitation gate is: with it held
at its value the block is linear in ``x``. So the product's adjoint sends ``grad * a`` into the linear branch and
nothing into the gate branch; the activation's own soft rule is not used (its coverage entry is replaced by the
product's: ``swiglu``, ``geglu``, ``reglu``). Temperature family ``gate`` (``None`` keeps the ordinary product
rule). ``F.glu(x) = a * sigmoid(b)`` is the same rule with the sigmoid half as the gate.

The rule fires for a product of an activation's output with any other input-dependent tensor that is not built
from the same pre-activation (``x * sigmoid(x)`` is a SiLU, handled in :mod:`.gating` and :mod:`.composites`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..coverage import ORDINARY, SOFTENED
from ..mode import PassContext
from ..registry import NOT_HANDLED, register_rule
from ._common import wants_grad
from ._expr import Pending, chain_rule, common_root, retract

__all__ = ["glu_product", "mark_activation"]

_KEY = "_semantic_pullbacks_activation"
_GLU_NAMES = {"silu": "swiglu", "gelu": "geglu", "relu": "reglu"}


@dataclass(frozen=True)
class _Activation:
    name: str
    pending: tuple[Pending, ...]


def mark_activation(out: Any, name: str | None = None, pending: tuple[Pending, ...] = (), like: Any = None) -> None:
    """Remember that ``out`` is an activation's output (or a cast of one, ``like``), for a later gated product."""
    if not isinstance(out, torch.Tensor):
        return
    if like is not None:
        act = like.__dict__.get(_KEY) if isinstance(like, torch.Tensor) else None
        if act is not None:
            out.__dict__[_KEY] = act
        return
    if name is not None:
        out.__dict__[_KEY] = _Activation(name, pending)


def glu_product(func, args, kwargs, ctx: PassContext, a: torch.Tensor, b: torch.Tensor) -> Any:  # type: ignore[no-untyped-def]
    """``act * linear``: freeze the activated factor; NOT_HANDLED when the product is not a gated MLP's."""
    acts = [(t, t.__dict__.get(_KEY)) for t in (a, b)]
    for (gate, act), other in zip(acts, (b, a)):
        if act is None or not wants_grad(other) or other.__dict__.get(_KEY) is not None:
            continue
        if common_root(gate, other) is not None or gate.shape != torch.broadcast_shapes(a.shape, b.shape):
            continue
        if func in (torch.Tensor.mul_, torch.Tensor.__imul__) and gate is a:
            return NOT_HANDLED  # the gate itself is overwritten: nothing to freeze it against
        op = _GLU_NAMES.get(act.name, "glu")
        retract(ctx.coverage, act.pending)
        if ctx.temperature("gate") is None:
            ctx.record(op, ORDINARY)
            return NOT_HANDLED
        ctx.record(op, SOFTENED)
        frozen = gate.detach()
        new_args = [frozen if t is gate else t for t in args]
        return func(*new_args, **{k: frozen if v is gate else v for k, v in kwargs.items()})
    return NOT_HANDLED


def _marking(name: str):  # type: ignore[no-untyped-def]
    """Layer over an activation's own rule: run it, then mark its output as an activation."""

    def handler(func, args, kwargs, ctx: PassContext, previous):  # type: ignore[no-untyped-def]
        before = ctx.coverage.counts[(name, SOFTENED)]
        out = previous(func, args, kwargs, ctx)
        if out is NOT_HANDLED:
            out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.requires_grad:
            softened = ctx.coverage.counts[(name, SOFTENED)] > before
            mark_activation(out, name, (Pending(name, SOFTENED),) if softened else ())
        return out

    return handler


chain_rule([F.silu], op="silu", family="silu")(_marking("silu"))
chain_rule([F.gelu], op="gelu", family="gelu")(_marking("gelu"))
chain_rule([torch.relu, torch.Tensor.relu, F.relu], op="relu", family="relu")(_marking("relu"))


@register_rule(F.glu, op="glu", family="gate")
def _glu_rule(func, args, kwargs, ctx: PassContext):  # type: ignore[no-untyped-def]
    x = args[0] if args else kwargs.get("input")
    dim = args[1] if len(args) > 1 else kwargs.get("dim", -1)
    if not wants_grad(x):
        return NOT_HANDLED
    if ctx.temperature("gate") is None:
        ctx.record("glu", ORDINARY)
        return NOT_HANDLED
    ctx.record("glu", SOFTENED)
    with torch.no_grad():
        exact = func(*args, **kwargs)
    value, gate = x.chunk(2, dim=dim)
    surrogate = value * torch.sigmoid(gate.detach())
    return exact + (surrogate - surrogate.detach())
