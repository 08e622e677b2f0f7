"""Soft max pooling: each window's incoming gradient is spread over the window by ``softmax(window / tau)``.

Overlapping windows add up. As tau -> 0 the weights become the one-hot argmax, i.e. the ordinary max-pool
gradient (tau = 0 is routed to the ordinary op).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ..coverage import ORDINARY, SOFTENED
from ..mode import PassContext, rules_suspended
from ..registry import NOT_HANDLED, register_rule
from ..temperatures import resolve_temperature
from ._common import Binder, compute_dtype, wants_grad


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, (list, tuple)):
        return tuple(int(i) for i in v) if len(v) == n else tuple(int(v[0]) for _ in range(n))
    return (int(v),) * n


def _windows(x: torch.Tensor, nd: int, k, s, d, pads_lo, pads_hi, out_sizes) -> torch.Tensor:
    """Strided view of every pooling window: ``(*lead, *out_sizes, *k)``; padding reads as -inf."""
    pad: list[int] = []
    for i in reversed(range(nd)):
        pad += [pads_lo[i], pads_hi[i]]
    xp = F.pad(x, pad, value=float("-inf")) if any(pad) else x
    lead = x.dim() - nd
    for i in range(nd):
        span = (k[i] - 1) * d[i] + 1
        xp = xp.unfold(lead + i, span, s[i])
        if d[i] > 1:
            xp = xp[..., :: d[i]]
    index = [slice(None)] * lead + [slice(0, o) for o in out_sizes]
    return xp[tuple(index)]


def soft_pool_grad(x: torch.Tensor, grad: torch.Tensor, nd: int, k, s, p, d, tau) -> torch.Tensor:
    """The soft adjoint of max pooling for input ``x`` and output gradient ``grad``."""
    out_sizes = grad.shape[-nd:]
    sizes = x.shape[-nd:]
    pads_hi = [max(0, (out_sizes[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 - sizes[i] - p[i]) for i in range(nd)]
    dtype = compute_dtype(x)
    xd = x.detach().to(dtype).requires_grad_(True)
    with torch.enable_grad():
        win = _windows(xd, nd, k, s, d, p, pads_hi, out_sizes)
    flat = win.detach().flatten(-nd)
    t = resolve_temperature(tau, x.detach().to(dtype))
    if isinstance(t, torch.Tensor):
        t = t.view(t.shape[0], *([1] * (flat.dim() - 1))) if x.dim() > nd + 1 else t.reshape(())
    weights = torch.softmax(flat / t, dim=-1)
    weights = torch.nan_to_num(weights, nan=0.0).view(win.shape)
    g = grad.to(dtype).view(*grad.shape, *([1] * nd)) * weights
    (gx,) = torch.autograd.grad(win, xd, g)
    return gx.to(grad.dtype)


class _SoftPool(torch.autograd.Function):
    """Forward: the exact pooling op. Backward: ``adjoint(x, grad)``, the soft spreading of each window's gradient."""

    @staticmethod
    def forward(ctx, x, exact, adjoint):  # type: ignore[no-untyped-def, override]
        ctx.save_for_backward(x)
        ctx.adjoint = adjoint
        out = exact()
        if isinstance(out, tuple):  # with indices: only the values are differentiable
            ctx.mark_non_differentiable(out[1])
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, *unused):  # type: ignore[no-untyped-def, override]
        with rules_suspended():
            (x,) = ctx.saved_tensors
            return ctx.adjoint(x, grad), None, None


def _pool_rule(op: str, binder: Binder, adjoint_of):  # type: ignore[no-untyped-def]
    """A handler for one pooling op; ``adjoint_of(bound_args, tau)`` returns its ``(x, grad) -> grad_x``."""

    def handler(func, args, kwargs, ctx: PassContext):  # type: ignore[no-untyped-def]
        p = binder(args, kwargs)
        if not wants_grad(p["input"]):
            return NOT_HANDLED
        tau = ctx.temperature("maxpool")
        if tau is None or (isinstance(tau, float) and tau == 0.0):  # tau = 0: the hard max is the ordinary op
            ctx.record(op, ORDINARY if tau is None else SOFTENED)
            return NOT_HANDLED
        ctx.record(op, SOFTENED)
        return _SoftPool.apply(p["input"], lambda: func(*args, **kwargs), adjoint_of(p, tau))

    return handler


def _window_adjoint(nd: int):  # type: ignore[no-untyped-def]
    def adjoint_of(p, tau):  # type: ignore[no-untyped-def]
        k = _tuple(p["kernel_size"], nd)
        stride = p["stride"]
        s = k if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) else _tuple(stride, nd)
        pad, dil = _tuple(p["padding"], nd), _tuple(p["dilation"], nd)
        return lambda x, grad: soft_pool_grad(x, grad, nd, k, s, pad, dil, tau)

    return adjoint_of


# --- adaptive max pooling -----------------------------------------------------------------------------------
def _adaptive_bounds(size: int, out: int) -> list[tuple[int, int]]:
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def soft_adaptive_pool_grad(x: torch.Tensor, grad: torch.Tensor, nd: int, tau) -> torch.Tensor:
    """Soft adjoint of adaptive max pooling: windows of uneven size, handled one output cell at a time per dim."""
    dtype = compute_dtype(x)
    xd = x.detach().to(dtype)
    out_sizes, sizes = grad.shape[-nd:], x.shape[-nd:]
    if all(sz % o == 0 for sz, o in zip(sizes, out_sizes)):  # regular windows: the ordinary soft pooling
        k = tuple(sz // o for sz, o in zip(sizes, out_sizes))
        return soft_pool_grad(x, grad, nd, k, k, (0,) * nd, (1,) * nd, tau)
    t = resolve_temperature(tau, xd)
    if isinstance(t, torch.Tensor):
        t = t.view(t.shape[0], *([1] * (xd.dim() - 1))) if x.dim() > nd + 1 else t.reshape(())
    z = xd / t
    gx = torch.zeros_like(xd)
    lead = x.dim() - nd
    bounds = [_adaptive_bounds(sz, o) for sz, o in zip(sizes, out_sizes)]
    for cell in itertools.product(*[range(o) for o in out_sizes]):
        sl = tuple(slice(*bounds[i][c]) for i, c in enumerate(cell))
        region = z[(Ellipsis, *sl)]
        w = torch.softmax(region.flatten(lead), dim=-1).view(region.shape)
        g = grad.to(dtype)[(Ellipsis, *cell)].view(*grad.shape[:lead], *([1] * nd))
        gx[(Ellipsis, *sl)] += w * g
    return gx.to(grad.dtype)


for _nd in (1, 2, 3):
    register_rule(
        [
            getattr(F, f"max_pool{_nd}d"),
            getattr(F, f"max_pool{_nd}d_with_indices"),
            getattr(torch, f"max_pool{_nd}d", None),
            getattr(torch, f"max_pool{_nd}d_with_indices", None),
        ],
        op=f"max_pool{_nd}d",
        family="maxpool",
    )(
        _pool_rule(
            f"max_pool{_nd}d",
            Binder(
                ["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"],
                stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False,
            ),
            _window_adjoint(_nd),
        )
    )  # fmt: skip
    register_rule(
        [getattr(F, f"adaptive_max_pool{_nd}d"), getattr(F, f"adaptive_max_pool{_nd}d_with_indices")],
        op=f"adaptive_max_pool{_nd}d",
        family="maxpool",
    )(
        _pool_rule(
            f"adaptive_max_pool{_nd}d",
            Binder(["input", "output_size", "return_indices"], return_indices=False),
            lambda p, tau, nd=_nd: lambda x, grad: soft_adaptive_pool_grad(x, grad, nd, tau),
        )
    )
