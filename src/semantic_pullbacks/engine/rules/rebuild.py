"""ReLU gates rebuilt in the backward pass from tensors the graph keeps anyway, instead of stored.

In a conv -> eval-mode BatchNorm -> ReLU stack (ResNets, VGG-BN, DenseNets), the ReLU's input is a per-channel
affine map of the BatchNorm's input, which the BatchNorm backward keeps; after a residual sum it is that plus the
block's input, which the block's first layer keeps. The soft ReLU backward needs ``Phi(x / tau)``, so rather than
storing a gate per element (half an activation in float16 per ReLU, plus a dtype conversion each way), it rebuilds
``x`` from those tensors when the backward pass reaches it: no memory beyond the ordinary gradient's, and the gate
is exact in the input's precision.

Eval-mode BatchNorm runs as its own Function here, both to mark its outputs as rebuildable and because its adjoint
is one per-channel multiply, several times cheaper on CPU than the generic ``native_batch_norm_backward``. Sums
are only tagged (their output is the exact op's), so models pay a dictionary lookup per addition.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch

from ..mode import PassContext
from ..registry import NOT_HANDLED, register_rule
from ..temperatures import Relative, resolve_temperature
from ._common import grad_needed, plain_ops, soft_backward
from ._phi import erf_scale, phi_adjoint, window_adjoint

__all__ = ["rebuildable_terms", "rebuilt_soft_relu", "saved_tensor_hooks_active"]

#: A sum of at most this many terms is rebuilt; longer sums keep the stored gate.
_MAX_TERMS = 3
_REBUILT_DTYPES = (torch.float32, torch.float64)


class _ChannelAffine(torch.autograd.Function):
    """Eval-mode BatchNorm: forward the exact op; backward ``grad * weight / sqrt(var + eps)`` per channel."""

    @staticmethod
    def forward(ctx, x, weight, bias, exact, mean, var, eps):  # type: ignore[no-untyped-def, override]
        out = exact()
        constants = _channel_constants(mean, var, weight, bias, eps, x.dim())  # scale, shift, mean, 1/std
        ctx.has_weight, ctx.has_bias = weight is not None, bias is not None
        # x as the ordinary backward saves it; a following ReLU rebuilds its input from x, scale and shift, unless
        # saved-tensor hooks hold them (activation checkpointing, CPU offloading): reading them then is not free.
        ctx.hooked = saved_tensor_hooks_active()
        ctx.save_for_backward(x, *constants)
        return out

    @staticmethod
    @soft_backward
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        gx = gw = gb = None
        x, scale, _, mean, invstd = ctx.saved_tensors
        with plain_ops():
            if ctx.needs_input_grad[0]:
                gx = torch.mul(grad, scale)
                gx = gx if gx.dtype == grad.dtype else gx.to(grad.dtype)
            if ctx.has_weight and grad_needed(ctx, 1):
                gw = (grad * ((x - mean) * invstd)).sum(_non_channel_dims(grad)).to(grad.dtype)
            if ctx.has_bias and grad_needed(ctx, 2):
                gb = grad.sum(_non_channel_dims(grad))
        return gx, gw, gb, None, None, None, None


_top_hooks = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", lambda ignore_is_tracing: None)


def saved_tensor_hooks_active() -> bool:
    """Whether saved tensors are being packed by hooks (``torch.utils.checkpoint``, ``save_on_cpu``)."""
    return _top_hooks(False) is not None


def _non_channel_dims(t: torch.Tensor) -> tuple[int, ...]:
    return (0, *range(2, t.dim()))


#: id(running_var) -> (weak reference to it, the other statistics, their versions, the per-channel constants);
#: reused while none of them changes, so a model in eval mode pays for them once rather than on every pass.
#: (Keyed by id: tensors compare elementwise, so they cannot be dictionary keys themselves.)
_CONSTANTS: dict[int, tuple[Any, ...]] = {}


def _channel_constants(mean, var, weight, bias, eps, ndim):  # type: ignore[no-untyped-def]
    """``(scale, shift, mean, 1/std)``, each shaped ``(1, C, 1, ...)``: the op is ``x * scale + shift``."""
    tensors = (mean, weight, bias)
    state = (eps, ndim, *(t._version if t is not None else -1 for t in (mean, var, weight, bias)))
    hit = _CONSTANTS.get(id(var))
    if hit is not None and hit[0]() is var and hit[2] == state and all(a is b for a, b in zip(hit[1], tensors)):
        return hit[3]
    with torch.no_grad():
        shape = (1, var.shape[0]) + (1,) * (ndim - 2)
        invstd = torch.rsqrt(var + eps)
        scale = invstd if weight is None else invstd * weight
        shift = -mean * scale
        if bias is not None:
            shift = shift + bias
        value = (scale.view(shape), shift.view(shape), mean.view(shape), invstd.view(shape))
    key = id(var)
    _CONSTANTS[key] = (weakref.ref(var, lambda _, key=key: _CONSTANTS.pop(key, None)), tensors, state, value)
    return value


_ChannelAffineNode = _ChannelAffine._backward_cls  # type: ignore[attr-defined]


def eval_batch_norm(func, args, kwargs, p: dict[str, Any]) -> Any:  # type: ignore[no-untyped-def]
    """``F.batch_norm`` with running statistics, its arguments bound in ``p`` by the batch-norm rule (which also
    handles the training-mode case, as a frozen norm, and checks that a gradient is wanted)."""
    x = p["input"]
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        return NOT_HANDLED
    exact = lambda: func(*args, **kwargs)
    out = _ChannelAffine.apply(x, p["weight"], p["bias"], exact, p["running_mean"], p["running_var"], p["eps"])
    out.grad_fn.out_version = out._version
    return out


# --- sums ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plain:
    """A term used as it is (a residual's identity), valid while its version is unchanged."""

    tensor: torch.Tensor
    version: int


@dataclass(frozen=True)
class _SumTag:
    terms: tuple[Any, ...]  # _ChannelAffineNode or _Plain
    version: int


_TAG = "_semantic_pullbacks_sum"


def rebuildable_terms(t: Any) -> tuple[Any, ...] | None:
    """The terms ``t`` is the sum of, if it can still be rebuilt from them (nothing modified in place since)."""
    if not isinstance(t, torch.Tensor) or t.dtype not in _REBUILT_DTYPES or saved_tensor_hooks_active():
        return None
    node = t.grad_fn
    if type(node) is _ChannelAffineNode:
        return (node,) if getattr(node, "out_version", None) == t._version and not node.hooked else None
    tag = t.__dict__.get(_TAG) if node is not None else None
    if tag is None or tag.version != t._version:
        return None
    if any(isinstance(term, _Plain) and term.tensor._version != term.version for term in tag.terms):
        return None
    return tag.terms


def _add_rule(func, args, kwargs, ctx: PassContext):  # type: ignore[no-untyped-def]
    if kwargs or len(args) != 2:
        return NOT_HANDLED
    a, b = args
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return NOT_HANDLED
    ta, tb = rebuildable_terms(a), rebuildable_terms(b)
    if ta is None and tb is None:
        return NOT_HANDLED
    if a.shape != b.shape or a.dtype != b.dtype:
        return NOT_HANDLED
    inplace = func in _INPLACE_ADD
    if inplace and ta is None:  # a's old value, a term of the sum, is overwritten by the op
        return NOT_HANDLED
    terms = (ta or (_Plain(a, a._version),)) + (tb or (_Plain(b, b._version),))
    out = func(a, b)
    if len(terms) <= _MAX_TERMS and isinstance(out, torch.Tensor) and out.grad_fn is not None:
        out.__dict__[_TAG] = _SumTag(terms, out._version)
    return out


_INPLACE_ADD = {torch.Tensor.add_, torch.Tensor.__iadd__}


# --- the rebuilt soft ReLU -----------------------------------------------------------------------------------
class _RebuiltSoftReLU(torch.autograd.Function):
    """Forward: the exact ReLU (or ReLU6/Hardtanh). Backward: ``grad * Phi(x / tau)`` (or the window gate) with
    ``x`` rebuilt from the terms of its sum."""

    @staticmethod
    def forward(ctx, x, exact, c, inplace, terms, window):  # type: ignore[no-untyped-def, override]
        tensors, coefs, offset = [], [], None
        for term in sorted(terms, key=lambda t: isinstance(t, _Plain)):  # an affine term first: it carries the offset
            if isinstance(term, _Plain):
                tensors.append(term.tensor)
                coefs.append(c)
            else:
                z, scale, shift, _, _ = term.saved_tensors
                tensors.append(z)
                coefs.append(scale * c)
                offset = shift * c if offset is None else offset + shift * c
        lo, hi = window if window is not None else (0.0, None)
        if lo != 0.0:
            offset = -lo * c if offset is None else offset - lo * c
        if isinstance(offset, float):
            offset = torch.tensor(offset, dtype=x.dtype, device=x.device)
        # Tensor coefficients, the offset and the window's width are per pass: saved like the terms, so autograd
        # frees them after the backward pass; number coefficients stay on ctx.
        width = None if hi is None else (hi - lo) * c
        ctx.terms = len(tensors)
        ctx.coefs = [None if isinstance(coef, torch.Tensor) else coef for coef in coefs]
        extra = [coef for coef in coefs if isinstance(coef, torch.Tensor)]
        ctx.has_offset = offset is not None
        ctx.window = window is not None
        ctx.width = width if not isinstance(width, torch.Tensor) else None
        widths = [width] if isinstance(width, torch.Tensor) else []
        ctx.save_for_backward(*tensors, *extra, *widths, *([offset] if offset is not None else []))
        out = exact(x)
        if inplace:
            ctx.mark_dirty(x)
        return out

    @staticmethod
    @soft_backward
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        saved = list(ctx.saved_tensors)
        with plain_ops():
            return _rebuilt_adjoint(ctx, grad, saved), None, None, None, None, None


def _rebuilt_adjoint(ctx, grad, saved):  # type: ignore[no-untyped-def]
    """``grad`` times the gate of ``x``, with ``x`` rebuilt from the saved terms."""
    offset = saved.pop() if ctx.has_offset else None
    width = saved.pop() if ctx.window and ctx.width is None else ctx.width
    zs, extra = saved[: ctx.terms], iter(saved[ctx.terms :])
    coefs = [next(extra) if coef is None else coef for coef in ctx.coefs]
    # multiply, then add in place: a broadcast addcmul has no vectorised CPU path and costs two passes' time
    u = torch.mul(zs[0], coefs[0])
    if offset is not None:
        u.add_(offset)
    for z, coef in zip(zs[1:], coefs[1:]):
        if isinstance(coef, float):
            u.add_(z, alpha=coef)
        else:
            u.addcmul_(z, coef)
    return phi_adjoint(grad, u) if not ctx.window else window_adjoint(grad, u, width)


def rebuilt_soft_relu(x: torch.Tensor, exact, tau: float | Relative, inplace: bool, terms, window=None) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """The soft ReLU of ``x`` whose backward rebuilds ``x`` from ``terms`` (see :func:`rebuildable_terms`);
    ``window = (lo, hi)`` for a clipped ReLU (ReLU6, Hardtanh)."""
    return _RebuiltSoftReLU.apply(x, exact, erf_scale(resolve_temperature(tau, x)), inplace, terms, window)


register_rule(
    [torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__, *_INPLACE_ADD],
    op="add",
    family="relu",
    description="tags residual sums of eval-mode BatchNorm outputs so a following ReLU can rebuild its input",
)(_add_rule)
