"""Multiplicative gates: ``x * sigmoid(z)`` (squeeze-excitation) and ``x * sigmoid(x)`` (SiLU written out).

A sigmoid on its own is not a gate (it may be a single-logit classifier's output), so it keeps its ordinary
gradient; its output is only *tagged*. When a tagged tensor multiplies another tensor, the product is the gate
acting: its value is frozen (no gradient into the gate's input), and if the gate's input is the very tensor it
multiplies, the product is a SiLU and gets the soft SiLU adjoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..coverage import ORDINARY, SOFTENED
from ..mode import PassContext
from ..registry import NOT_HANDLED, register_rule
from ._common import Binder, first_tensor, reclassify_once, tag, tag_of, wants_grad
from .activations import SILU, soft_gate

_sig = Binder(["input"])


def _tagging_rule(kind: str):  # type: ignore[no-untyped-def]
    def handler(func, args, kwargs, ctx: PassContext):  # type: ignore[no-untyped-def]
        x = first_tensor(args, kwargs)
        out = func(*args, **kwargs)
        if wants_grad(x) and isinstance(out, torch.Tensor):
            ctx.record(kind, ORDINARY)
            tag(out, kind, kind, x)
        return out

    return handler


register_rule([torch.sigmoid, torch.Tensor.sigmoid, F.sigmoid], op="sigmoid", family="gate")(_tagging_rule("sigmoid"))
register_rule(F.hardsigmoid, op="hardsigmoid", family="gate")(_tagging_rule("hardsigmoid"))


def _mul_rule(func, args, kwargs, ctx: PassContext):  # type: ignore[no-untyped-def]
    if len(args) < 2 and "other" not in kwargs:
        return NOT_HANDLED
    a = args[0]
    b = args[1] if len(args) > 1 else kwargs["other"]
    ta, tb = tag_of(a), tag_of(b)
    gate_tag, other, gate = (ta, b, a) if ta is not None and ta.kind != "softmax" else (tb, a, b)
    if gate_tag is None or gate_tag.kind == "softmax" or not isinstance(other, torch.Tensor):
        return NOT_HANDLED
    if not wants_grad(a, b):
        return NOT_HANDLED
    source = gate_tag.source()
    inplace = func in _INPLACE_MUL
    if source is other and gate_tag.kind == "sigmoid" and not inplace:
        tau = ctx.temperature("silu")
        if tau is None:
            return NOT_HANDLED
        ctx.coverage.reclassify("sigmoid", ORDINARY, SOFTENED)
        return soft_gate(other, lambda t: func(*args, **kwargs), SILU, tau)
    if ctx.temperature("gate") is None:
        return NOT_HANDLED
    reclassify_once(gate, ctx.coverage, gate_tag.op, ORDINARY, SOFTENED)
    frozen = gate.detach()
    if gate is a:
        if inplace:  # the gate tensor itself is being overwritten: nothing to freeze it against
            return NOT_HANDLED
        return func(frozen, other, *args[2:], **kwargs)
    return func(a, frozen, *args[2:], **{k: v for k, v in kwargs.items() if k != "other"})


_INPLACE_MUL = {torch.Tensor.mul_, torch.Tensor.__imul__}
register_rule(
    [torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__, *_INPLACE_MUL],
    op="mul",
    family="gate",
)(_mul_rule)
