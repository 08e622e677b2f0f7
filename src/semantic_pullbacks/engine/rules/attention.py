"""Softmax attention: the attention weights are frozen; values receive gradient through softmax(scores/tau).

Three spellings are covered: ``F.scaled_dot_product_attention`` (its own autograd function, recomputing the
weights only in backward), ``F.multi_head_attention_forward`` (a composite op the mode cannot see into: its
exact output plus a zero-valued surrogate branch that carries the soft adjoint), and explicit
``scores.softmax(-1) @ v`` (the softmax output is tagged; the product with it freezes it).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ...errors import InvalidInputError, UnsupportedModelError
from ..coverage import ORDINARY, SOFTENED
from ..mode import PassContext
from ..registry import NOT_HANDLED, register_rule
from ..temperatures import Relative
from ._common import (
    Binder,
    compute_dtype,
    copy_tag,
    first_tensor,
    plain_ops,
    reclassify_once,
    soft_backward,
    tag,
    tag_of,
    wants_grad,
)


def _as_float_tau(tau: Any) -> float:
    if isinstance(tau, Relative):  # Temperatures refuses this up front; a hand-made PassContext may not
        raise InvalidInputError("relative temperatures are not defined for attention; give a number")
    return float(tau)


def _refuse_dropout(op: str, p: float) -> None:
    """Dropout draws the forward's attention weights at random, and the soft adjoint is built from weights that
    the backward pass recomputes: they would not be the ones the forward used."""
    raise UnsupportedModelError(
        f"{op} with dropout (p={p:g}): the soft pullback freezes the attention weights the forward pass used, and "
        "dropout makes them random. Call model.eval() (attention dropout is off in eval mode), or set "
        "attention=None to keep the ordinary gradient of attention."
    )


def soften_weights(weights: torch.Tensor, tau: float, dim: int = -1) -> torch.Tensor:
    """``softmax(scores / tau)`` from ``softmax(scores)``: the same thing as ``normalise(weights ** (1/tau))``."""
    if tau == 1.0:
        return weights
    w = weights.to(compute_dtype(weights))
    if tau == 0.0:
        hard = (w == w.amax(dim=dim, keepdim=True)).to(w.dtype)
        return (hard / hard.sum(dim=dim, keepdim=True)).to(weights.dtype)
    out = torch.softmax(torch.log(w) / tau, dim=dim)
    return torch.nan_to_num(out, nan=0.0).to(weights.dtype)


def attention_weights(
    q: torch.Tensor,
    k: torch.Tensor,
    attn_mask: torch.Tensor | None,
    is_causal: bool,
    scale: float | None,
    tau: float,
) -> torch.Tensor:
    """Weights of SDPA with the softmax at temperature ``tau``; rows with every key masked get zero weight."""
    dtype = compute_dtype(q)
    qf, kf = q.to(dtype), k.to(dtype)
    if kf.shape[-3:-2] != qf.shape[-3:-2] and qf.dim() >= 3 and qf.shape[-3] % kf.shape[-3] == 0:
        kf = kf.repeat_interleave(qf.shape[-3] // kf.shape[-3], dim=-3)  # grouped-query attention
    s = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    scores = (qf @ kf.transpose(-2, -1)) * s
    L, S = scores.shape[-2], scores.shape[-1]
    if is_causal:
        keep = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask.to(dtype)
    if tau == 0.0:
        w = (scores == scores.amax(-1, keepdim=True)).to(dtype)
        w = w / w.sum(-1, keepdim=True)
    else:
        w = torch.softmax(scores / tau, dim=-1)
    return torch.nan_to_num(w, nan=0.0)


def _has_empty_rows(mask: Any) -> bool:
    """Whether some query attends to no key: the fused kernels give NaN there, the frozen weights give zero."""
    if not isinstance(mask, torch.Tensor):
        return False
    keep = mask if mask.dtype == torch.bool else mask != float("-inf")
    return bool((~keep.any(-1)).any())


def _values_pullback_by_kernel(q, k, mask, is_causal, scale, tau, grad, v_shape):  # type: ignore[no-untyped-def]
    """``softmax(q k^T s / tau)^T grad`` as the value gradient of an SDPA call with detached queries and keys.

    That is what SDPA's own backward computes for the values, so the fused kernels (flash, memory-efficient)
    do it without the seq x seq weights; the values' contents do not enter, so zeros stand in for them.
    Grouped-query keys are repeated to the queries' heads and the value gradient folded back.
    """
    heads = q.shape[-3] if q.dim() >= 3 else 1
    if k.dim() >= 3 and k.shape[-3] != heads:
        k = k.repeat_interleave(heads // k.shape[-3], dim=-3)
    s = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    shape = (*q.shape[:-2], k.shape[-2], v_shape[-1])
    zeros = torch.zeros(shape, dtype=grad.dtype, device=grad.device, requires_grad=True)
    qd, kd = q.detach().to(grad.dtype), k.detach().to(grad.dtype)
    with torch.enable_grad():
        out = F.scaled_dot_product_attention(qd, kd, zeros, attn_mask=mask, is_causal=is_causal, scale=s / tau)
        (gv,) = torch.autograd.grad(out, zeros, grad)
    return gv


class _FrozenSDPA(torch.autograd.Function):
    """Forward: the output the exact op already computed outside (see :func:`_sdpa_rule`). Backward: values
    through the frozen, softened weights, recomputed from the saved queries and keys."""

    @staticmethod
    def forward(ctx, q, k, v, exact, attn_mask, is_causal, scale, tau):  # type: ignore[no-untyped-def, override]
        ctx.save_for_backward(q, k, attn_mask if isinstance(attn_mask, torch.Tensor) else None)
        ctx.is_causal, ctx.scale, ctx.tau, ctx.v_shape = is_causal, scale, tau, v.shape
        return exact()  # handed over as a callable: an input returned as-is would be a view, closed to in-place ops

    @staticmethod
    @soft_backward
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        q, k, mask = ctx.saved_tensors  # read first: under checkpointing this recomputes the forward, with the rules on
        with plain_ops():
            if ctx.tau > 0.0 and not _has_empty_rows(mask):  # the kernels' path: no seq x seq weights kept
                gv = _values_pullback_by_kernel(q, k, mask, ctx.is_causal, ctx.scale, ctx.tau, grad, ctx.v_shape)
            else:
                w = attention_weights(q, k, mask, ctx.is_causal, ctx.scale, ctx.tau)
                gv = w.transpose(-2, -1) @ grad.to(w.dtype)
            if gv.shape != ctx.v_shape:  # grouped-query attention: fold the repeated heads back
                h_kv = ctx.v_shape[-3]
                gv = gv.unflatten(-3, (h_kv, gv.shape[-3] // h_kv)).sum(-3)
                gv = gv.sum_to_size(ctx.v_shape)
            return None, None, gv.to(grad.dtype), None, None, None, None, None


_sdpa_args = Binder(
    ["query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"],
    attn_mask=None,
    dropout_p=0.0,
    is_causal=False,
    scale=None,
    enable_gqa=False,
)


@register_rule(F.scaled_dot_product_attention, op="scaled_dot_product_attention", family="attention")
def _sdpa_rule(func, args, kwargs, ctx: PassContext):  # type: ignore[no-untyped-def]
    p = _sdpa_args(args, kwargs)
    q, k, v = p["query"], p["key"], p["value"]
    if not wants_grad(q, k, v):
        return NOT_HANDLED
    tau = ctx.temperature("attention")
    if tau is None:
        ctx.record("scaled_dot_product_attention", ORDINARY)
        return NOT_HANDLED
    if p["dropout_p"] > 0:
        _refuse_dropout("scaled_dot_product_attention", p["dropout_p"])
    ctx.record("scaled_dot_product_attention", SOFTENED)
    # The exact op runs here, in the caller's grad mode with inputs that require grad, exactly as in the plain
    # model: SDPA picks its kernel partly from those (on CUDA), and inside an autograd.Function's forward grad
    # mode is off, which could pick another kernel and change the output bits. Its own backward graph is dropped
    # with ``exact`` when this returns; only the detached output goes on.
    exact = func(*args, **kwargs).detach()
    return _FrozenSDPA.apply(q, k, v, lambda: exact, p["attn_mask"], p["is_causal"], p["scale"], _as_float_tau(tau))


# --- nn.MultiheadAttention ---------------------------------------------------------------------------------
_mha_args = Binder(
    [
        "query", "key", "value", "embed_dim_to_check", "num_heads", "in_proj_weight", "in_proj_bias",
        "bias_k", "bias_v", "add_zero_attn", "dropout_p", "out_proj_weight", "out_proj_bias", "training",
        "key_padding_mask", "need_weights", "attn_mask", "use_separate_proj_weight", "q_proj_weight",
        "k_proj_weight", "v_proj_weight", "static_k", "static_v", "average_attn_weights", "is_causal",
    ],
    training=True, key_padding_mask=None, need_weights=True, attn_mask=None, use_separate_proj_weight=False,
    q_proj_weight=None, k_proj_weight=None, v_proj_weight=None, static_k=None, static_v=None,
    average_attn_weights=True, is_causal=False,
)  # fmt: skip


def _mha_surrogate(p: dict[str, Any], tau: float) -> torch.Tensor:
    """The MHA output rebuilt from primitives with frozen, softened weights: only its gradient is used."""
    query, key, value = p["query"], p["key"], p["value"]
    batched = query.dim() == 3
    if not batched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
    L, N, E = query.shape
    S = key.shape[0]
    H = p["num_heads"]
    D = E // H
    if p["use_separate_proj_weight"]:
        wq, wk, wv = p["q_proj_weight"], p["k_proj_weight"], p["v_proj_weight"]
    else:
        wq, wk, wv = p["in_proj_weight"].chunk(3)
    bq = bk = bv = None
    if p["in_proj_bias"] is not None:
        bq, bk, bv = p["in_proj_bias"].chunk(3)
    with torch.no_grad():
        q = F.linear(query, wq, bq).reshape(L, N * H, D).transpose(0, 1)
        k = F.linear(key, wk, bk).reshape(S, N * H, D).transpose(0, 1)
        mask = _merged_mha_mask(p, N, H, L, S, q.dtype, q.device)
        w = attention_weights(q, k, mask, False, None, tau)
    v = F.linear(value, wv, bv).reshape(S, N * H, D).transpose(0, 1)
    out = (w.to(v.dtype) @ v).transpose(0, 1).reshape(L, N, E)
    out = F.linear(out, p["out_proj_weight"], p["out_proj_bias"])
    return out if batched else out.squeeze(1)


def _merged_mha_mask(p, N, H, L, S, dtype, device):  # type: ignore[no-untyped-def]
    mask = None
    if p["attn_mask"] is not None:
        m = p["attn_mask"]
        m = torch.zeros_like(m, dtype=dtype).masked_fill(m, float("-inf")) if m.dtype == torch.bool else m.to(dtype)
        mask = m if m.dim() == 3 else m.unsqueeze(0)
    elif p["is_causal"]:
        mask = torch.zeros(L, S, dtype=dtype, device=device).masked_fill(
            ~torch.ones(L, S, dtype=torch.bool, device=device).tril(), float("-inf")
        )[None]
    if p["key_padding_mask"] is not None:
        kpm = p["key_padding_mask"]
        if kpm.dim() == 1:
            kpm = kpm.unsqueeze(0)
        kpm = (
            torch.zeros_like(kpm, dtype=dtype).masked_fill(kpm, float("-inf"))
            if kpm.dtype == torch.bool
            else kpm.to(dtype)
        )
        kpm = kpm.view(N, 1, 1, S).expand(N, H, 1, S).reshape(N * H, 1, S)
        mask = kpm if mask is None else mask + kpm
    return mask


@register_rule(F.multi_head_attention_forward, op="multi_head_attention", family="attention")
def _mha_rule(func, args, kwargs, ctx: PassContext):  # type: ignore[no-untyped-def]
    p = _mha_args(args, kwargs)
    tensors = [p[n] for n in ("query", "key", "value", "in_proj_weight", "out_proj_weight", "q_proj_weight")]
    if not wants_grad(*tensors):
        return NOT_HANDLED
    tau = ctx.temperature("attention")
    if tau is not None and p["training"] and p["dropout_p"] > 0:
        _refuse_dropout("nn.MultiheadAttention", p["dropout_p"])
    unsupported = p["bias_k"] is not None or p["add_zero_attn"] or p["static_k"] is not None
    unsupported = unsupported or p["static_v"] is not None
    if tau is None or unsupported:
        ctx.record("multi_head_attention", ORDINARY)
        return NOT_HANDLED
    ctx.record("multi_head_attention", SOFTENED)
    # in the caller's grad mode, as the plain model runs it: the SDPA call inside picks its CUDA kernel from it
    exact, weights = func(*args, **kwargs)
    exact = exact.detach()
    weights = weights.detach() if isinstance(weights, torch.Tensor) else weights
    surrogate = _mha_surrogate(p, _as_float_tau(tau))
    # Bit-exact forward: the surrogate enters only as (s - s.detach()), which is exactly zero.
    return exact + (surrogate - surrogate.detach()), weights


# --- explicit softmax(scores) @ v -----------------------------------------------------------------------------
_softmax_args = Binder(["input", "dim"], dim=None)


@register_rule([torch.softmax, torch.Tensor.softmax, F.softmax], op="softmax", family="attention")
def _softmax_rule(func, args, kwargs, ctx: PassContext):  # type: ignore[no-untyped-def]
    p = _softmax_args(args, kwargs)
    x = p["input"]
    out = func(*args, **kwargs)
    if wants_grad(x) and isinstance(out, torch.Tensor):
        ctx.record("softmax", ORDINARY)
        dim = p["dim"]
        if dim is not None and dim in (-1, out.dim() - 1):
            tag(out, "softmax", "softmax", x, dim=-1)
    return out


class _FrozenWeightsProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, v, exact, tau):  # type: ignore[no-untyped-def, override]
        ctx.save_for_backward(w)
        ctx.tau, ctx.v_shape = tau, v.shape
        return exact()

    @staticmethod
    @soft_backward
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        (w,) = ctx.saved_tensors
        with plain_ops():
            ws = soften_weights(w, ctx.tau).to(grad.dtype)
            gv = (ws.transpose(-2, -1) @ grad).sum_to_size(ctx.v_shape)
            return None, gv, None, None


def _matmul_rule(func, args, kwargs, ctx: PassContext):  # type: ignore[no-untyped-def]
    if len(args) < 2:
        return NOT_HANDLED
    w, v = args[0], args[1]
    t = tag_of(w)
    if t is None or t.kind != "softmax" or not isinstance(v, torch.Tensor) or v.dim() < 2 or w.dim() < 2:
        return NOT_HANDLED
    if not wants_grad(w, v):
        return NOT_HANDLED
    tau = ctx.temperature("attention")
    if tau is None:
        return NOT_HANDLED
    tau = _as_float_tau(tau)
    reclassify_once(w, ctx.coverage, "softmax", ORDINARY, SOFTENED)
    if tau == 1.0:
        return func(w.detach(), v, *args[2:], **kwargs)
    return _FrozenWeightsProduct.apply(w.detach(), v, lambda: func(*args, **kwargs), tau)


register_rule(
    [torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm],
    op="matmul",
    family="attention",
)(_matmul_rule)


@register_rule([F.dropout, torch.dropout], op="dropout", family="attention")
def _dropout_rule(func, args, kwargs, ctx: PassContext):  # type: ignore[no-untyped-def]
    """Dropout on attention weights (a no-op in eval mode) must not lose the softmax tag."""
    x = first_tensor(args, kwargs)
    out = func(*args, **kwargs)
    copy_tag(x, out)
    return out
