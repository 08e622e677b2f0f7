"""Normalisation with frozen statistics: with mean and variance held constant the op is affine.

Backward to the input is ``grad * weight / sqrt(var + eps)``; weight and bias get their frozen-statistics
gradients (``sum(grad * x_hat)`` and ``sum(grad)``), computed only when the backward pass asks for them.
LayerNorm's forward runs as ``torch.native_layer_norm``, the kernel ``F.layer_norm`` itself calls (same output,
bit for bit), which also returns the mean and 1/std, so the backward reuses them instead of recomputing the
statistics. Other norms recompute them from the saved input; none saves more than its ordinary backward would.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..coverage import ORDINARY, SOFTENED
from ..mode import PassContext
from ..registry import NOT_HANDLED, register_rule
from ._common import Binder, compute_dtype, grad_needed, plain_ops, soft_backward, wants_grad
from .rebuild import eval_batch_norm


def _stats(x: torch.Tensor, dims: tuple[int, ...], eps: float, rms: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if rms:
        mean = torch.zeros((), dtype=x.dtype, device=x.device)
        var = x.pow(2).mean(dim=dims, keepdim=True)
    else:
        mean = x.mean(dim=dims, keepdim=True)
        var = x.var(dim=dims, unbiased=False, keepdim=True)
    return mean, torch.rsqrt(var + eps)


class _FrozenNorm(torch.autograd.Function):
    """``layout(x)`` reshapes x so that the statistics run over ``dims``; weight/bias broadcast via ``affine``."""

    @staticmethod
    def forward(ctx, x, weight, bias, exact, kind, params):  # type: ignore[no-untyped-def, override]
        ctx.kind, ctx.params = kind, params
        ctx.has_bias = bias is not None
        if kind == "layer":  # native_layer_norm: (output, mean, rstd)
            out, mean, rstd = torch.native_layer_norm(x, params["shape"], weight, bias, params["eps"])
            ctx.save_for_backward(x, weight, mean, rstd)
            return out
        ctx.save_for_backward(x, weight)
        return exact()

    @staticmethod
    @soft_backward
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        saved = ctx.saved_tensors  # read first: under checkpointing this recomputes the forward, with the rules on
        with plain_ops():
            kind, p = ctx.kind, ctx.params
            want_w = grad_needed(ctx, 1)
            want_b = ctx.has_bias and grad_needed(ctx, 2)
            if kind == "layer":  # statistics from the forward; rstd is float32 for low-precision inputs
                x, weight, mean, rstd = saved
                gx = grad * rstd if weight is None else grad * rstd * weight
                gw = gb = None
                reduce_dims = tuple(range(x.dim() - p["nd"]))
                if want_w and weight is not None:
                    xhat = (x.to(rstd.dtype) - mean) * rstd
                    gw = (grad * xhat).sum(reduce_dims).reshape(weight.shape).to(weight.dtype)
                if want_b:
                    gb = grad.sum(reduce_dims).reshape(weight.shape if weight is not None else -1).to(grad.dtype)
                return gx.to(grad.dtype), gw, gb, None, None, None
            x, weight = saved
            dtype = compute_dtype(x)
            xf, g = x.to(dtype), grad.to(dtype)
            if kind == "rms":
                nd = p["nd"]
                dims = tuple(range(x.dim() - nd, x.dim()))
                mean, rstd = _stats(xf, dims, p["eps"], True)
                w = weight.to(dtype) if weight is not None else None
                xhat = (xf - mean) * rstd
                reduce_dims = tuple(range(x.dim() - nd))
            else:  # channel groups: group_norm, instance_norm, batch_norm with batch statistics
                groups = p["groups"]
                n = 1 if kind == "batch" else x.shape[0]
                c = x.shape[1]
                if kind == "batch":
                    xv = xf.transpose(0, 1).reshape(c, -1)
                    mean, rstd = _stats(xv, (1,), p["eps"], False)
                    shape = (1, c) + (1,) * (x.dim() - 2)
                    mean, rstd = mean.view(shape), rstd.view(shape)
                else:
                    xv = xf.reshape(n, groups, -1)
                    mean, rstd = _stats(xv, (2,), p["eps"], False)
                    mean = mean.repeat_interleave(c // groups, dim=1).view(n, c, *([1] * (x.dim() - 2)))
                    rstd = rstd.repeat_interleave(c // groups, dim=1).view(n, c, *([1] * (x.dim() - 2)))
                shape = (1, c) + (1,) * (x.dim() - 2)
                w = weight.to(dtype).view(shape) if weight is not None else None
                xhat = (xf - mean) * rstd
                reduce_dims = tuple(i for i in range(x.dim()) if i != 1)
            gx = g * rstd if w is None else g * w * rstd
            gw = gb = None
            if want_w and weight is not None:
                gw = (g * xhat).sum(reduce_dims).reshape(weight.shape).to(weight.dtype)
            if want_b:
                gb = g.sum(reduce_dims).reshape(weight.shape if weight is not None else -1).to(grad.dtype)
            return gx.to(grad.dtype), gw, gb, None, None, None


def _norm_handler(op: str, kind: str, binder: Binder, params_of):  # type: ignore[no-untyped-def]
    def handler(func, args, kwargs, ctx: PassContext):  # type: ignore[no-untyped-def]
        p = binder(args, kwargs)
        x, weight, bias = p["input"], p.get("weight"), p.get("bias")
        if not wants_grad(x, weight, bias):
            return NOT_HANDLED
        params = params_of(p, x)
        if params is None:  # eval-mode batch norm: already affine, nothing to freeze
            return eval_batch_norm(func, args, kwargs, p) if kind == "batch" else NOT_HANDLED
        if ctx.temperature("norm") is None:
            ctx.record(op, ORDINARY)
            return NOT_HANDLED
        ctx.record(op, SOFTENED)
        return _FrozenNorm.apply(x, weight, bias, lambda: func(*args, **kwargs), kind, params)

    return handler


def _layer_params(p: dict[str, Any], x: torch.Tensor) -> dict[str, Any]:
    shape = p["normalized_shape"]
    shape = [shape] if isinstance(shape, int) else list(shape)
    return {"nd": len(shape), "eps": p["eps"], "shape": shape}


def _rms_params(p: dict[str, Any], x: torch.Tensor) -> dict[str, Any]:
    params = _layer_params(p, x)
    if params["eps"] is None:
        params["eps"] = torch.finfo(compute_dtype(x)).eps  # as torch: float32's epsilon for half types
    return params


register_rule(F.layer_norm, op="layer_norm", family="norm")(
    _norm_handler(
        "layer_norm",
        "layer",
        Binder(["input", "normalized_shape", "weight", "bias", "eps"], weight=None, bias=None, eps=1e-5),
        _layer_params,
    )
)
if hasattr(F, "rms_norm"):
    register_rule(F.rms_norm, op="rms_norm", family="norm")(
        _norm_handler(
            "rms_norm",
            "rms",
            Binder(["input", "normalized_shape", "weight", "eps"], weight=None, eps=None),
            _rms_params,
        )
    )
register_rule(F.group_norm, op="group_norm", family="norm")(
    _norm_handler(
        "group_norm",
        "group",
        Binder(["input", "num_groups", "weight", "bias", "eps"], weight=None, bias=None, eps=1e-5),
        lambda p, x: {"groups": p["num_groups"], "eps": p["eps"]},
    )
)
register_rule(F.instance_norm, op="instance_norm", family="norm")(
    _norm_handler(
        "instance_norm",
        "group",
        Binder(
            ["input", "running_mean", "running_var", "weight", "bias", "use_input_stats", "momentum", "eps"],
            running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True, momentum=0.1, eps=1e-5,
        ),
        lambda p, x: {"groups": x.shape[1], "eps": p["eps"]} if p["use_input_stats"] else None,
    )
)  # fmt: skip
register_rule(F.batch_norm, op="batch_norm", family="norm")(
    _norm_handler(
        "batch_norm",
        "batch",
        Binder(
            ["input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"],
            weight=None, bias=None, training=False, momentum=0.1, eps=1e-5,
        ),
        lambda p, x: {"groups": x.shape[1], "eps": p["eps"]} if (p["training"] or p["running_mean"] is None) else None,
    )
)  # fmt: skip
