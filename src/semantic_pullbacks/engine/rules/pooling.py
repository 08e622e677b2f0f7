"""Soft max pooling: each window's incoming gradient is spread over the window by ``softmax(window / tau)``.

Overlapping windows add up. As tau -> 0 the weights become the one-hot argmax, i.e. the ordinary max-pool
gradient (tau = 0 is routed to the ordinary op).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
import torch.nn.functional as F

from ..coverage import ORDINARY, SOFTENED
from ..mode import PassContext
from ..registry import NOT_HANDLED, register_rule
from ..temperatures import resolve_temperature
from ._common import Binder, compute_dtype, plain_ops, soft_backward, wants_grad


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, (list, tuple)):
        return tuple(int(i) for i in v) if len(v) == n else tuple(int(v[0]) for _ in range(n))
    return (int(v),) * n


def _pad_spec(nd: int, lo, hi) -> list[int]:  # type: ignore[no-untyped-def]
    """``F.pad``'s argument for the last ``nd`` dims: (low, high) pairs, last dim first."""
    pad: list[int] = []
    for i in reversed(range(nd)):
        pad += [lo[i], hi[i]]
    return pad


def _unpad(t: torch.Tensor, nd: int, lo, sizes) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """The inverse of padding by ``lo`` at the low end: the region of original ``sizes`` in the last ``nd`` dims."""
    index = [slice(None)] * (t.dim() - nd) + [slice(lo[i], lo[i] + sizes[i]) for i in range(nd)]
    return t[tuple(index)]


def _windows(x: torch.Tensor, nd: int, k, s, d, pads_lo, pads_hi, out_sizes) -> torch.Tensor:
    """Strided view of every pooling window: ``(*lead, *out_sizes, *k)``; padding reads as -inf."""
    pad = _pad_spec(nd, pads_lo, pads_hi)
    xp = F.pad(x, pad, value=float("-inf")) if any(pad) else x
    lead = x.dim() - nd
    for i in range(nd):
        span = (k[i] - 1) * d[i] + 1
        xp = xp.unfold(lead + i, span, s[i])
        if d[i] > 1:
            xp = xp[..., :: d[i]]
    index = [slice(None)] * lead + [slice(0, o) for o in out_sizes]
    return xp[tuple(index)]


#: Where the factored path cannot be exact (or on an accelerator), windows up to this many elements are handled offset
#: by offset (a few passes over output-sized views, no window tensor); larger ones go through one unfolded softmax.
_LOOP_MAX_WINDOW = 32


def _as_batch_of_one(fn):  # type: ignore[no-untyped-def]
    """Run an adjoint on an unbatched input as on a batch of one, so both give the same map (and a ``Relative``
    temperature is the same per-sample statistic)."""

    def adjoint(x, grad, nd, *args):  # type: ignore[no-untyped-def]
        if x.dim() == nd + 1:
            return fn(x.unsqueeze(0), grad.unsqueeze(0), nd, *args).squeeze(0)
        return fn(x, grad, nd, *args)

    return adjoint


@_as_batch_of_one
def soft_pool_grad(x: torch.Tensor, grad: torch.Tensor, nd: int, k, s, p, d, tau) -> torch.Tensor:
    """The soft adjoint of max pooling for input ``x`` and output gradient ``grad``.

    On CPU the factored path runs first; its exactness checks read two values on the host, which costs nothing
    there. On an accelerator such a read would stall the queue, so the per-window paths, exact without any
    check, run directly: no host synchronisation.
    """
    out_sizes = grad.shape[-nd:]
    sizes = x.shape[-nd:]
    pads_hi = [max(0, (out_sizes[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 - sizes[i] - p[i]) for i in range(nd)]
    dtype = compute_dtype(x)
    xd = x.detach().to(dtype)
    t = resolve_temperature(tau, xd)
    g = grad.to(dtype)
    gx = None
    if x.device.type == "cpu" and all(di == 1 for di in d):
        gx = _factored_grad(xd, t, g, nd, k, s, p, pads_hi, out_sizes)
    if gx is None:
        per_window = _offsetwise_grad if math.prod(k) <= _LOOP_MAX_WINDOW else _unfolded_grad
        gx = per_window(xd / t, g, nd, k, s, p, d, pads_hi, out_sizes)
    return gx.to(grad.dtype)


def _factored_grad(x, t, grad, nd, k, s, p, pads_hi, out_sizes) -> torch.Tensor | None:  # type: ignore[no-untyped-def]
    """The window softmax through one depthwise sum-convolution and its adjoint (the fast path).

    With one shift ``M`` per channel, ``softmax(window / t)_i = a_i / S_w`` where ``a = exp((x - M) / t)`` and
    ``S_w`` is the window's sum of ``a``; so the spread gradient is ``a * sum_{w contains i} grad_w / S_w``: the
    window sums are a depthwise convolution with a kernel of ones, and the inner sum is that convolution's adjoint,
    both native kernels over contiguous memory. It needs no dilation, and every window's ``S`` well inside the
    float range (a window far below its channel's maximum would underflow): otherwise it returns None and the
    per-window paths take over.
    """
    lead = x.dim() - nd
    if lead != 2:
        return None
    shift = x.amax(dim=tuple(range(lead, x.dim())), keepdim=True)
    if not bool(torch.isfinite(shift).all()):
        return None
    a = torch.sub(x, shift).mul_(1.0 / t).exp_()
    ones = torch.ones(x.shape[1], 1, *k, dtype=a.dtype, device=a.device)
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    if any(pads_hi[i] != p[i] for i in range(nd)):  # ceil_mode: the last windows reach further on the high side
        ap, conv_pad = F.pad(a, _pad_spec(nd, p, pads_hi)), [0] * nd
    else:
        ap, conv_pad = a, list(p)
    sums = conv(ap, ones, stride=s, padding=conv_pad, groups=x.shape[1])
    if tuple(sums.shape[2:]) != tuple(out_sizes) or not bool(sums.amin() > _TINY[x.dtype]):  # False for NaN too
        return None
    adjoint = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[nd - 1]
    extra = [ap.shape[2 + i] - ((out_sizes[i] - 1) * s[i] - 2 * conv_pad[i] + k[i]) for i in range(nd)]
    if any(e < 0 or e >= s[i] for i, e in enumerate(extra)):
        return None
    spread = adjoint(grad / sums, ones, stride=s, padding=conv_pad, output_padding=extra, groups=x.shape[1])
    if ap is not a:
        spread = _unpad(spread, nd, p, x.shape[lead:])
    return spread.mul_(a)


#: Window sums below this are too close to underflow for the factored path's accuracy.
_TINY = {torch.float32: 1e-30, torch.float64: 1e-290}


def _offsetwise_grad(z, grad, nd, k, s, p, d, pads_hi, out_sizes) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """``softmax`` over each window, one kernel offset at a time.

    For offset ``o`` the elements at that position of every window form a strided view of the padded input with
    the output's shape, so the window softmax is a handful of elementwise passes per offset, and the spread
    gradient is added back into the same views. It does the work of the unfolded softmax without building the
    ``prod(kernel)``-times-larger window tensor or differentiating through ``unfold``.
    """
    pad = _pad_spec(nd, p, pads_hi)
    zp = F.pad(z, pad, value=float("-inf")) if any(pad) else z
    lead = z.dim() - nd

    def view(t: torch.Tensor, offset: tuple[int, ...]) -> torch.Tensor:
        index = [slice(None)] * lead
        for i in range(nd):
            start = offset[i] * d[i]
            index.append(slice(start, start + (out_sizes[i] - 1) * s[i] + 1, s[i]))
        return t[tuple(index)]

    offsets = list(itertools.product(*[range(ki) for ki in k]))
    top = view(zp, offsets[0]).clone()  # each window's max (the native kernel is slower: it computes indices)
    for o in offsets[1:]:
        torch.maximum(top, view(zp, o), out=top)
    # A window whose max is not finite (all -inf, or a nan/inf inside) gets no gradient, decided per window in
    # tensors rather than by a check on the host. Finite windows have total >= 1 (their max contributes 1).
    finite = torch.isfinite(top)
    top = torch.where(finite, top, torch.zeros_like(top))
    zero = top.new_zeros(())
    weights = [torch.where(finite, torch.sub(view(zp, o), top).exp_(), zero) for o in offsets]
    total = weights[0].clone()
    for w in weights[1:]:
        total.add_(w)
    share = grad / total.clamp_min_(1.0)
    gxp = torch.zeros_like(zp)
    for o, w in zip(offsets, weights):
        view(gxp, o).addcmul_(w, share)
    return _unpad(gxp, nd, p, z.shape[lead:]) if any(pad) else gxp


def _unfolded_grad(z, grad, nd, k, s, p, d, pads_hi, out_sizes) -> torch.Tensor:  # type: ignore[no-untyped-def]
    zd = z.detach().requires_grad_(True)
    with torch.enable_grad():
        win = _windows(zd, nd, k, s, d, p, pads_hi, out_sizes)
    weights = torch.softmax(win.detach().flatten(-nd), dim=-1)
    weights = torch.nan_to_num(weights, nan=0.0).view(win.shape)
    g = grad.view(*grad.shape, *([1] * nd)) * weights
    (gx,) = torch.autograd.grad(win, zd, g)
    return gx


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
    @soft_backward
    def backward(ctx, grad, *unused):  # type: ignore[no-untyped-def, override]
        (x,) = ctx.saved_tensors  # read first: under checkpointing this recomputes the forward, with the rules on
        with plain_ops():
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
def _adaptive_windows(size: int, out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output cell along one dim, the input positions of its window padded to the longest window.

    Cell ``i`` covers ``[floor(i·size/out), ceil((i+1)·size/out))``. Returns ``index`` ``(out, kmax)`` (positions,
    clamped into range) and ``valid`` (which of them belong to the window), built on ``device`` from sizes alone.
    """
    kmax = max(-((-(i + 1) * size) // out) - (i * size) // out for i in range(out))
    cells = torch.arange(out, device=device)
    start = (cells * size) // out
    end = -((-(cells + 1) * size) // out)
    index = start[:, None] + torch.arange(kmax, device=device)
    valid = index < end[:, None]
    return index.clamp_(max=size - 1), valid


@_as_batch_of_one
def soft_adaptive_pool_grad(x: torch.Tensor, grad: torch.Tensor, nd: int, tau) -> torch.Tensor:
    """Soft adjoint of adaptive max pooling, whose windows differ in size by a cell or two.

    Every window is gathered into a ``(cells, longest window)`` grid per dim, the missing places masked to
    ``-inf``, softmaxed at once, and summed back by a 0/1 matrix product: tensor ops whose sizes depend only on
    shapes, so there is neither a loop over cells nor a host synchronisation, and the sum is deterministic.
    """
    dtype = compute_dtype(x)
    xd = x.detach().to(dtype)
    out_sizes, sizes = tuple(grad.shape[-nd:]), tuple(x.shape[-nd:])
    if all(sz % o == 0 for sz, o in zip(sizes, out_sizes)):  # regular windows: the ordinary soft pooling
        k = tuple(sz // o for sz, o in zip(sizes, out_sizes))
        return soft_pool_grad(x, grad, nd, k, k, (0,) * nd, (1,) * nd, tau)
    z = xd / resolve_temperature(tau, xd)
    lead = z.dim() - nd
    grids = [_adaptive_windows(sz, o, z.device) for sz, o in zip(sizes, out_sizes)]
    win, valid = z, torch.ones((), dtype=torch.bool, device=z.device)
    for i, (index, ok) in enumerate(grids):  # (*lead, o1, k1, ..., oi, ki, size_{i+1}, ...)
        dim = lead + 2 * i
        win = win.index_select(dim, index.flatten()).unflatten(dim, tuple(index.shape))
        valid = valid.unsqueeze(-1).unsqueeze(-1) & ok
    win = win.masked_fill(~valid, float("-inf"))
    cells, offsets = [lead + 2 * i for i in range(nd)], [lead + 2 * i + 1 for i in range(nd)]
    grouped = win.permute(*range(lead), *cells, *offsets)  # (*lead, o..., k...)
    w = torch.softmax(grouped.reshape(*grouped.shape[: lead + nd], -1), dim=-1).view(grouped.shape)
    w = torch.nan_to_num(w, nan=0.0) * grad.to(dtype).view(*grad.shape, *([1] * nd))
    spread = w.permute(*_inverse(list(range(lead)) + cells + offsets))  # back to (*lead, o1, k1, o2, k2, ...)
    for i in reversed(range(nd)):  # sum each (cell, offset) pair back onto its input position
        index, ok = grids[i]
        positions = torch.arange(sizes[i], device=z.device)
        scatter = ((index.flatten()[:, None] == positions) & ok.flatten()[:, None]).to(dtype)  # (o·k, size)
        dim = lead + 2 * i
        moved = spread.flatten(dim, dim + 1).movedim(dim, -1)
        spread = (moved @ scatter).movedim(-1, dim)
    return spread.to(grad.dtype)


def _inverse(perm: list[int]) -> list[int]:
    out = [0] * len(perm)
    for i, p in enumerate(perm):
        out[p] = i
    return out


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
