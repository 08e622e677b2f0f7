"""Max and min over whole dimensions (``x.amax(dims)``, ``torch.max(x, dim).values``): global max pooling by hand.

This is max pooling with one window spanning the reduced dims, so it gets the max-pooling rule: the incoming
gradient is spread over the reduced elements with weights ``softmax(x / tau)`` (``softmax(-x / tau)`` for min),
temperature family ``maxpool``; ``tau = 0`` keeps the ordinary (hard, argmax) gradient. The elementwise forms
(``torch.max(a, b)``) are not pooling and are reported as unhandled nonlinearities.
"""

from __future__ import annotations

from typing import Any

import torch

from ..coverage import NO_RULE, ORDINARY, SOFTENED
from ..mode import PassContext
from ..registry import NOT_HANDLED, register_rule
from ..temperatures import resolve_temperature
from ._common import compute_dtype
from ._expr import Pending, make, pending_of, root_of, set_expr
from .pooling import _SoftPool

__all__ = ["soft_reduce_grad"]


def soft_reduce_grad(x: torch.Tensor, grad: torch.Tensor, dims: tuple[int, ...], keepdim: bool, sign: float, tau):  # type: ignore[no-untyped-def]
    """The soft adjoint of a max (``sign=1``) or min (``sign=-1``) over ``dims``."""
    dtype = compute_dtype(x)
    xd = x.detach().to(dtype)
    t = resolve_temperature(tau, xd)
    z = xd * sign / t
    shift = z.amax(dim=dims, keepdim=True)
    w = torch.exp(z - shift)
    w = w / w.sum(dim=dims, keepdim=True)
    w = torch.nan_to_num(w, nan=0.0)
    g = grad.to(dtype)
    if not keepdim:
        for d in sorted(dims):
            g = g.unsqueeze(d)
    return (w * g).to(grad.dtype)


def _bind(func, args, kwargs) -> tuple[torch.Tensor, Any, bool, bool] | None:  # type: ignore[no-untyped-def]
    """``(input, dim, keepdim, returns_indices)``, or None for the elementwise two-tensor form."""
    x = args[0] if args else kwargs.get("input", kwargs.get("self"))
    rest = list(args[1:])
    if func in _AMAX:
        dim = rest[0] if rest else kwargs.get("dim", ())
        keepdim = rest[1] if len(rest) > 1 else kwargs.get("keepdim", False)
        return x, dim, bool(keepdim), False
    other = rest[0] if rest else kwargs.get("other", kwargs.get("dim"))
    if isinstance(other, torch.Tensor):
        return None
    if other is None:
        return x, (), False, False
    keepdim = rest[1] if len(rest) > 1 else kwargs.get("keepdim", False)
    return x, other, bool(keepdim), True


def _reduction_rule(op: str, sign: float):  # type: ignore[no-untyped-def]
    def handler(func, args, kwargs, ctx: PassContext):  # type: ignore[no-untyped-def]
        bound = _bind(func, args, kwargs)
        x = bound[0] if bound else (args[0] if args else None)
        if not isinstance(x, torch.Tensor) or not (torch.is_grad_enabled() and x.requires_grad):
            return NOT_HANDLED
        if bound is None:
            ctx.record("max/min/abs", NO_RULE)
            return NOT_HANDLED
        _, dim, keepdim, with_indices = bound
        if x.dim() == 0:
            return NOT_HANDLED
        dims = (
            tuple(range(x.dim()))
            if dim in ((), None, [])
            else tuple(int(d) % x.dim() for d in (dim if isinstance(dim, (list, tuple)) else (dim,)))
        )
        tau = ctx.temperature("maxpool")
        if tau is None or (isinstance(tau, float) and tau == 0.0):
            status = ORDINARY if tau is None else SOFTENED
            ctx.record(op, status)
            out = func(*args, **kwargs)
        else:
            status = SOFTENED
            ctx.record(op, status)
            adjoint = lambda t, grad: soft_reduce_grad(t, grad, dims, keepdim, sign, tau)
            out = _SoftPool.apply(x, lambda: func(*args, **kwargs), adjoint)
            if with_indices:  # Function.apply returns a plain tuple; callers read .values / .indices
                out = (torch.return_types.max if sign > 0 else torch.return_types.min)(out)
        values = out[0] if with_indices else out
        negative_dims = tuple(sorted(d - x.dim() for d in dims))
        pending = (*pending_of(x), Pending(op, status))
        stat = "max" if sign > 0 else "min"
        set_expr(values, make("stat", root_of(x), stat=stat, dims=negative_dims, pending=pending))
        return out

    return handler


_AMAX = {torch.amax, torch.Tensor.amax, torch.amin, torch.Tensor.amin}
register_rule([torch.amax, torch.Tensor.amax], op="amax", family="maxpool")(_reduction_rule("amax", 1.0))
register_rule([torch.amin, torch.Tensor.amin], op="amin", family="maxpool")(_reduction_rule("amin", -1.0))
register_rule([torch.max, torch.Tensor.max], op="max", family="maxpool")(_reduction_rule("max", 1.0))
register_rule([torch.min, torch.Tensor.min], op="min", family="maxpool")(_reduction_rule("min", -1.0))
