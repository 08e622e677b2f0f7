"""Composites written out op by op: norms, ``x * g(x)`` activations and softmax, recognised as they complete.

Recognised (see :mod:`._expr` for the tags that make it possible):

- **Norms by hand.** ``x * rsqrt(mean(x**2) + eps)`` (Llama/Qwen RMSNorm, T5), ``(x - mean(x)) / sqrt(var(x) +
  eps)`` and its spellings with ``pow``, ``square``, ``x * x``, ``var``, ``**0.5``: the statistic is frozen, as
  for ``F.layer_norm``/``F.rms_norm``; a written-out LayerNorm's mean is frozen too (its adjoint is then
  ``grad * rstd``, the same as the built-in rule's).
- **``x * g(x)`` activations.** ``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))`` (GPT-2's ``gelu_new``),
  ``x * 0.5 * (1 + erf(x / sqrt 2))``, or any product of ``x`` with an elementwise function of ``x``. The gate
  ``g(x)`` is compared with the normal CDF and the logistic function on the values at hand: a match is softened
  as GELU or SiLU (``Phi(x/tau)``, ``sigmoid(x/tau)``); any other ``g`` is frozen at its value (family
  ``gate``), which is the frozen-gate linearisation the method is built on.
- **Softmax by hand.** ``exp(s - max(s)) / sum(exp(...))`` is tagged like ``F.softmax``, so the attention rule
  freezes it when it weights values.

Pieces that never complete keep their ordinary gradient and stay in the coverage report under their own names
(``pow``, ``rsqrt``, ``exp``, ``product`` ...): the report names what the engine did not understand.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..coverage import NO_RULE, ORDINARY, SOFTENED
from ..mode import PassContext
from ..registry import NOT_HANDLED, register_rule
from ._common import compute_dtype, copy_tag, first_tensor, tag, tag_of, wants_grad
from ._expr import (
    Expr,
    Pending,
    chain_rule,
    common_root,
    expr_of,
    make,
    pending_of,
    retract,
    root_of,
    roots,
    set_expr,
)
from .activations import GELU, SILU, soft_gate
from .glu import glu_product, mark_activation

__all__ = ["classify_gate"]

_NUMBER = (int, float)


def _record_piece(ctx: PassContext, op: str, status: str = NO_RULE) -> Pending:
    ctx.record(op, status)
    return Pending(op, status)


def _dims(dim: Any, ndim: int) -> tuple[int, ...] | None:
    if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0):
        return None
    dims = dim if isinstance(dim, (list, tuple)) else (dim,)
    try:
        return tuple(sorted(int(d) % ndim - ndim for d in dims))
    except (TypeError, ValueError):
        return None


# --- elementwise unary ops ----------------------------------------------------------------------------------
def _unary_expr(x: torch.Tensor, op: str, ctx: PassContext, flag: str | None = None) -> Expr:
    e = expr_of(x)
    piece = _record_piece(ctx, op)
    if e is not None and e.kind == "stat":
        return Expr("stat", e.root, stat="other", dims=e.dims, pending=(*e.pending, piece))
    flags = frozenset({flag}) if flag else frozenset()
    return make("fx", root_of(x), flags=flags, pending=(*pending_of(x), piece))


_STAT_MAP = {  # (op, statistic in) -> statistic out
    ("rsqrt", "meansq"): "rstd",
    ("rsqrt", "var"): "rstd",
    ("sqrt", "meansq"): "std",
    ("sqrt", "var"): "std",
    ("reciprocal", "std"): "rstd",
    ("reciprocal", "rstd"): "std",
}


def _statistic_op(op: str):  # type: ignore[no-untyped-def]
    """rsqrt / sqrt / reciprocal: a statistic in, a statistic out (norms); otherwise an unknown nonlinearity."""

    def handler(func, args, kwargs, ctx: PassContext):  # type: ignore[no-untyped-def]
        x = first_tensor(args, kwargs)
        if not wants_grad(x):
            return NOT_HANDLED
        out = func(*args, **kwargs)
        e = expr_of(x)
        stat = _STAT_MAP.get((op, e.stat)) if e is not None and e.kind == "stat" else None
        if stat is not None:
            assert e is not None
            piece = _record_piece(ctx, op)
            set_expr(out, Expr("stat", e.root, stat=stat, flags=e.flags, dims=e.dims, pending=(*e.pending, piece)))
        else:
            set_expr(out, _unary_expr(x, op, ctx))
        return out

    return handler


def _pointwise_op(op: str, flag: str | None = None):  # type: ignore[no-untyped-def]
    def handler(func, args, kwargs, ctx: PassContext):  # type: ignore[no-untyped-def]
        x = first_tensor(args, kwargs)
        if not wants_grad(x):
            return NOT_HANDLED
        out = func(*args, **kwargs)
        set_expr(out, _unary_expr(x, op, ctx, flag))
        return out

    return handler


register_rule([torch.rsqrt, torch.Tensor.rsqrt], op="rsqrt", family="norm")(_statistic_op("rsqrt"))
register_rule([torch.sqrt, torch.Tensor.sqrt], op="sqrt", family="norm")(_statistic_op("sqrt"))
register_rule([torch.reciprocal, torch.Tensor.reciprocal], op="reciprocal", family="norm")(_statistic_op("reciprocal"))
register_rule([torch.exp, torch.Tensor.exp], op="exp", family="attention")(_pointwise_op("exp", "exp"))
register_rule([torch.erf, torch.Tensor.erf, torch.special.erf], op="erf", family="gelu")(_pointwise_op("erf"))
register_rule([torch.log, torch.Tensor.log], op="log", family="gate")(_pointwise_op("log"))


def _pow_rule(func, args, kwargs, ctx: PassContext):  # type: ignore[no-untyped-def]
    x = args[0] if args else kwargs.get("input", kwargs.get("self"))
    exponent = args[1] if len(args) > 1 else kwargs.get("exponent", 2 if func in _SQUARE else None)
    if not isinstance(x, torch.Tensor) or not wants_grad(x, exponent):
        return NOT_HANDLED
    out = func(*args, **kwargs)
    e = expr_of(x)
    if not isinstance(exponent, _NUMBER) or isinstance(exponent, bool):
        set_expr(out, _unary_expr(x, "pow", ctx))
    elif exponent == 1:
        copy_expr(x, out)
    elif e is not None and e.kind == "stat" and exponent in (-0.5, 0.5) and e.stat in ("meansq", "var"):
        piece = _record_piece(ctx, "pow")
        stat = "rstd" if exponent < 0 else "std"
        set_expr(out, Expr("stat", e.root, stat=stat, flags=e.flags, dims=e.dims, pending=(*e.pending, piece)))
    elif exponent == 2:
        set_expr(out, _square_expr(x, "pow", ctx))
    else:
        set_expr(out, _unary_expr(x, "pow", ctx))
    return out


def _square_expr(x: torch.Tensor, op: str, ctx: PassContext) -> Expr:
    e = expr_of(x)
    flags = {"square"} | ({"centred"} if e is not None and "centred" in e.flags else set())
    piece = _record_piece(ctx, op)
    return make("fx", root_of(x), flags=frozenset(flags), pending=(*pending_of(x), piece))


_SQUARE = {torch.square, torch.Tensor.square}
register_rule([torch.pow, torch.Tensor.pow, torch.Tensor.__pow__, *_SQUARE], op="pow", family="norm")(_pow_rule)


def copy_expr(src: torch.Tensor, dst: Any) -> None:
    if isinstance(dst, torch.Tensor) and dst is not src:
        e = expr_of(src)
        set_expr(dst, e if e is not None else make("lin", src))


# --- reductions: statistics -----------------------------------------------------------------------------------
def _reduction(kind: str):  # type: ignore[no-untyped-def]
    def handler(func, args, kwargs, ctx: PassContext):  # type: ignore[no-untyped-def]
        x = first_tensor(args, kwargs)
        if not isinstance(x, torch.Tensor) or not wants_grad(x):
            return NOT_HANDLED
        out = func(*args, **kwargs)
        dim = args[1] if len(args) > 1 and not isinstance(args[1], torch.dtype) else kwargs.get("dim")
        dims = _dims(dim, x.dim()) if x.dim() else None
        e = expr_of(x)
        if kind == "var":
            piece = _record_piece(ctx, "var")
            set_expr(out, make("stat", root_of(x), stat="var", flags=frozenset({"centred"}), dims=dims,
                               pending=(*pending_of(x), piece)))  # fmt: skip
        elif e is not None and e.kind == "fx" and "square" in e.flags:
            centred = "centred" in e.flags
            stat = "var" if centred else "meansq"
            set_expr(out, Expr("stat", e.root, stat=stat, flags=e.flags, dims=dims, pending=e.pending))
        elif e is not None and e.kind == "fx" and "exp" in e.flags and kind == "sum":
            set_expr(out, Expr("stat", e.root, stat="expsum", dims=dims, pending=e.pending))
        elif kind == "mean" and (e is None or e.kind == "lin"):
            set_expr(out, make("stat", root_of(x), stat="mean", dims=dims))
        return out

    return handler


register_rule([torch.mean, torch.Tensor.mean], op="mean", family="norm")(_reduction("mean"))
register_rule([torch.sum, torch.Tensor.sum], op="sum", family="attention")(_reduction("sum"))
register_rule([torch.var, torch.Tensor.var], op="var", family="norm")(_reduction("var"))


# --- casts keep tags ------------------------------------------------------------------------------------------
def _cast_rule(func, args, kwargs, ctx: PassContext):  # type: ignore[no-untyped-def]
    x = first_tensor(args, kwargs)
    if not isinstance(x, torch.Tensor) or not x.requires_grad:
        return NOT_HANDLED
    out = func(*args, **kwargs)
    if isinstance(out, torch.Tensor) and out is not x:
        copy_expr(x, out)
        copy_tag(x, out)
        mark_activation(out, like=x)
    return out


register_rule(
    [torch.Tensor.to, torch.Tensor.type, torch.Tensor.float, torch.Tensor.double, torch.Tensor.half,
     torch.Tensor.bfloat16, torch.Tensor.contiguous],
    op="cast", family="gate", description="casts and copies keep the gate and composite tags of their input",
)(_cast_rule)  # fmt: skip


# --- binary ops ---------------------------------------------------------------------------------------------
def _operands(func, args, kwargs, reflected: set[Any]) -> tuple[Any, Any] | None:  # type: ignore[no-untyped-def]
    if len(args) >= 2:
        a, b = args[0], args[1]
    elif len(args) == 1 and "other" in kwargs:
        a, b = args[0], kwargs["other"]
    else:
        return None
    return (b, a) if func in reflected else (a, b)


def _scaled_expr(t: torch.Tensor, factor: float | None) -> Expr | None:
    """The tag of ``t * factor`` (``factor=None``: ``t`` plus a constant)."""
    e = expr_of(t)
    if e is None:
        return make("lin", t, coef=factor) if factor is not None else None
    if e.kind == "lin":
        return Expr("lin", e.root, coef=e.coef * factor, pending=e.pending) if factor is not None else None
    return e


def _sum_expr(a: torch.Tensor, b: torch.Tensor, sign: float) -> Expr | None:
    ea, eb = expr_of(a), expr_of(b)
    if sign < 0 and eb is not None and eb.kind == "stat" and eb.stat in ("mean", "max"):
        r = eb.root_tensor()
        if r is not None and any(r is s for s in roots(a)):
            flag = "centred" if eb.stat == "mean" else "shifted"
            return make("fx", r, flags=frozenset({flag}), pending=pending_of(a, b))
    if ea is not None and ea.kind == "stat" and eb is None and b.numel() == 1:
        return ea
    r = common_root(a, b)
    if r is None:
        return None
    ca, cb = _coef(a, r), _coef(b, r)
    if ca is not None and cb is not None:
        return make("lin", r, coef=ca + sign * cb, pending=pending_of(a, b))
    return make("fx", r, pending=pending_of(a, b))


def _coef(t: torch.Tensor, r: torch.Tensor) -> float | None:
    """``c`` if ``t`` is ``c * r`` (``r`` itself: 1), else None."""
    if t is r:
        return 1.0
    e = expr_of(t)
    return e.coef if e is not None and e.kind == "lin" and e.root_tensor() is r else None


def _additive(sign: float, reflected: set[Any]):  # type: ignore[no-untyped-def]
    def handler(func, args, kwargs, ctx: PassContext, previous):  # type: ignore[no-untyped-def]
        out = previous(func, args, kwargs, ctx)
        pair = _operands(func, args, kwargs, reflected)
        if pair is None or "alpha" in kwargs:
            return out
        a, b = pair
        ta, tb = isinstance(a, torch.Tensor), isinstance(b, torch.Tensor)
        if not wants_grad(a if ta else None, b if tb else None):
            return out
        if out is NOT_HANDLED:
            out = func(*args, **kwargs)
        if ta and tb:
            expr = _sum_expr(a, b, sign)
        else:
            t = a if ta else b
            expr = _scaled_expr(t, None) if t.requires_grad else None
        set_expr(out, expr)
        return out

    return handler


_ADD = [torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.add_,
        torch.Tensor.__iadd__]  # fmt: skip
_SUB = [torch.sub, torch.Tensor.sub, torch.Tensor.__sub__, torch.Tensor.__rsub__, torch.Tensor.sub_,
        torch.Tensor.__isub__]  # fmt: skip
chain_rule(_ADD, op="add", family="norm")(_additive(1.0, set()))
chain_rule(_SUB, op="sub", family="norm")(_additive(-1.0, {torch.Tensor.__rsub__}))


def _multiplicative(divide: bool, reflected: set[Any]):  # type: ignore[no-untyped-def]
    def handler(func, args, kwargs, ctx: PassContext, previous):  # type: ignore[no-untyped-def]
        pair = _operands(func, args, kwargs, reflected)
        if pair is None:
            return previous(func, args, kwargs, ctx)
        a, b = pair
        ta, tb = isinstance(a, torch.Tensor), isinstance(b, torch.Tensor)
        if not wants_grad(a if ta else None, b if tb else None):
            return previous(func, args, kwargs, ctx)
        if ta and tb:
            return _tensor_product(func, args, kwargs, ctx, previous, a, b, divide)
        out = previous(func, args, kwargs, ctx)
        if out is NOT_HANDLED:
            out = func(*args, **kwargs)
        if ta and isinstance(b, _NUMBER) and not isinstance(b, bool):
            set_expr(out, _scaled_expr(a, (1.0 / b if b else None) if divide else float(b)))
        elif tb and isinstance(a, _NUMBER) and not isinstance(a, bool):
            eb = expr_of(b)
            if divide and eb is not None and eb.kind == "stat" and eb.stat == "std":  # c / std: a scaled rstd
                piece = _record_piece(ctx, "div")
                set_expr(out, Expr("stat", eb.root, stat="rstd", flags=eb.flags, dims=eb.dims,
                                   pending=(*eb.pending, piece)))  # fmt: skip
            elif divide:  # c / t: a reciprocal
                set_expr(out, _unary_expr(b, "div", ctx))
            else:
                set_expr(out, _scaled_expr(b, float(a)))
        return out

    return handler


def _tensor_product(func, args, kwargs, ctx, previous, a, b, divide):  # type: ignore[no-untyped-def]
    inplace = func in _INPLACE
    ea, eb = expr_of(a), expr_of(b)
    # norms: x * rstd(x), x / std(x)
    for num, stat in ((a, b), (b, a)) if not divide else ((a, b),):
        es = expr_of(stat)
        if es is not None and es.kind == "stat" and es.stat == ("std" if divide else "rstd") and not inplace:
            r = es.root_tensor()
            if r is not None and any(r is s for s in roots(num)) and stat.numel() < num.numel():
                return _frozen_norm(func, args, kwargs, ctx, num, stat, r, divide)
    if divide:
        if ea is not None and "exp" in ea.flags and eb is not None and eb.stat == "expsum" and not inplace:
            r = ea.root_tensor()
            if r is not None and eb.root_tensor() is r:
                return _softmax_by_hand(func, args, kwargs, ctx, a, b)
    elif a is b and not inplace:
        out = func(*args, **kwargs)
        set_expr(out, _square_expr(a, "product", ctx))
        return out
    elif not inplace:
        r = common_root(a, b)
        if r is not None and r.shape == torch.broadcast_shapes(a.shape, b.shape):
            for lin, gate in ((a, b), (b, a)):
                c, eg = _coef(lin, r), expr_of(gate)
                if c is not None and eg is not None and eg.kind == "fx" and gate is not r:
                    return _x_times_gate(func, args, kwargs, ctx, r, c, gate)
    out = previous(func, args, kwargs, ctx)  # squeeze-excitation and written-out SiLU (gating.py) first
    if out is not NOT_HANDLED:
        return out
    if not divide and tag_of(a) is None and tag_of(b) is None:
        out = glu_product(func, args, kwargs, ctx, a, b)
        if out is not NOT_HANDLED:
            return out
    out = func(*args, **kwargs)
    r = common_root(a, b)
    if r is not None:
        set_expr(out, make("fx", r, pending=pending_of(a, b)))
    elif _computed(b) and (divide or _computed(a)):
        ctx.record("div" if divide else "product", NO_RULE)
    return out


def _computed(t: torch.Tensor) -> bool:
    """Input-dependent: requires grad and is not a leaf or a function of parameters alone (a parameter, or
    Gemma's ``1 + weight``, times a tensor is linear)."""
    return t.requires_grad and t.grad_fn is not None and not _of_parameters_only(t.grad_fn)


#: Graph nodes looked at before a tensor is taken to depend on the input (parameter expressions are short).
_PARAMETER_GRAPH_LIMIT = 8


def _of_parameters_only(node: Any) -> bool:
    """Whether every leaf a short autograd graph reaches is an ``nn.Parameter`` (so no input flows in)."""
    stack, seen = [node], 0
    while stack:
        n = stack.pop()
        seen += 1
        if seen > _PARAMETER_GRAPH_LIMIT:
            return False
        variable = getattr(n, "variable", None)
        if variable is not None:
            if not isinstance(variable, torch.nn.Parameter):
                return False
            continue
        stack.extend(child for child, _ in n.next_functions if child is not None)
    return True


_INPLACE = {torch.Tensor.mul_, torch.Tensor.__imul__, torch.Tensor.div_, torch.Tensor.__itruediv__}


def _frozen_norm(func, args, kwargs, ctx, num, stat, r, divide):  # type: ignore[no-untyped-def]
    es, en = expr_of(stat), expr_of(num)
    assert es is not None
    centred = "centred" in es.flags or (en is not None and "centred" in en.flags)
    op = "layer_norm" if centred else "rms_norm"
    retract(ctx.coverage, pending_of(num, stat))
    if ctx.temperature("norm") is None:
        ctx.record(op, ORDINARY)
        return func(*args, **kwargs)
    ctx.record(op, SOFTENED)
    frozen = stat.detach()
    if en is not None and en.kind == "fx" and "centred" in en.flags:  # (x - mean) * rstd: freeze the mean too
        exact = func(*[t.detach() if isinstance(t, torch.Tensor) else t for t in args], **kwargs)
        surrogate = r / frozen if divide else r * frozen
        return exact + (surrogate - surrogate.detach())
    new_kwargs = {k: frozen if v is stat else v for k, v in kwargs.items()}
    return func(*[frozen if t is stat else t for t in args], **new_kwargs)


def _softmax_by_hand(func, args, kwargs, ctx, a, b):  # type: ignore[no-untyped-def]
    retract(ctx.coverage, pending_of(a, b))
    out = func(*args, **kwargs)
    dims = expr_of(b).dims  # type: ignore[union-attr]
    ctx.record("softmax", ORDINARY)  # the attention rule moves it to softened when it weights values
    source = expr_of(a).root_tensor()  # type: ignore[union-attr]
    if dims == (-1,) and source is not None:
        tag(out, "softmax", "softmax", source, dim=-1)
    return out


# --- x * g(x) ---------------------------------------------------------------------------------------------
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
#: A gate matching Phi or the logistic function this closely (max abs difference) is softened as GELU / SiLU.
_MATCH = 2e-3


def classify_gate(x: torch.Tensor, gate: torch.Tensor) -> tuple[Any, dict[str, Any]] | None:
    """Which known activation ``x * gate`` is, judged on the values at hand: ``(spec, params)`` or None.

    Judged on up to :data:`_SAMPLE` elements (a formula that matches there matches everywhere; the check costs
    nothing next to the layer). Both GELU spellings (erf and the tanh approximation, within 2e-4 of each other)
    are softened with the paper's GELU rule, ``Phi(x / tau)``.
    """
    xc = x.detach().reshape(-1)[:_SAMPLE].to(compute_dtype(x))
    g = gate.detach().expand_as(x).reshape(-1)[:_SAMPLE].to(xc.dtype)
    candidates = [
        (GELU, lambda: 0.5 * (1.0 + torch.tanh(_SQRT_2_OVER_PI * (xc + 0.044715 * xc**3)))),
        (GELU, lambda: 0.5 * (1.0 + torch.erf(xc * (1.0 / math.sqrt(2.0))))),
        (SILU, lambda: torch.sigmoid(xc)),
    ]
    for spec, reference in candidates:
        if g.numel() == 0 or float((reference() - g).abs().max()) <= _MATCH:
            return spec, {}
    return None


#: Elements a gate is classified on.
_SAMPLE = 4096


def _x_times_gate(func, args, kwargs, ctx, r, c, gate):  # type: ignore[no-untyped-def]
    pending = pending_of(gate)
    retract(ctx.coverage, pending)
    g = gate.detach() * c
    known = classify_gate(r, g)
    if known is not None:
        spec, params = known
        tau = ctx.temperature(spec.family)
        if tau is None:
            ctx.record(spec.name, ORDINARY)
            return func(*args, **kwargs)
        ctx.record(spec.name, SOFTENED)
        out = soft_gate(r, lambda t: func(*args, **kwargs), spec, tau, params, store=ctx.store_gates)
        mark_activation(out, name=spec.name, pending=(Pending(spec.name, SOFTENED),))
        return out
    if ctx.temperature("gate") is None:
        ctx.record("x*g(x)", ORDINARY)
        return func(*args, **kwargs)
    ctx.record("x*g(x)", SOFTENED)
    with torch.no_grad():
        exact = func(*args, **kwargs)
    surrogate = r * g.to(r.dtype)
    out = exact + (surrogate - surrogate.detach())
    mark_activation(out, name="x*g(x)", pending=(Pending("x*g(x)", SOFTENED),))
    return out


_MUL = [torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.Tensor.mul_,
        torch.Tensor.__imul__]  # fmt: skip
_DIV = [torch.div, torch.Tensor.div, torch.Tensor.__truediv__, torch.Tensor.__rtruediv__, torch.Tensor.div_,
        torch.Tensor.__itruediv__]  # fmt: skip
chain_rule(_MUL, op="mul", family="gate")(_multiplicative(False, set()))
chain_rule(_DIV, op="div", family="norm")(_multiplicative(True, {torch.Tensor.__rtruediv__}))
