"""Parametrised over the registry: every registered torch function has a sample call, exact forward, finite backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from semantic_pullbacks import pullback_mode, registered_rules


def x4(*shape):
    torch.manual_seed(0)
    return torch.randn(*(shape or (2, 3, 6, 6))) * 2


def qkv():
    torch.manual_seed(0)
    return [torch.randn(2, 2, 5, 4) for _ in range(3)]


def mha_args():
    torch.manual_seed(0)
    e, h = 8, 2
    q = torch.randn(5, 2, e)
    return (q, q.clone(), q.clone(), e, h, torch.randn(3 * e, e), torch.randn(3 * e), None, None, False, 0.0,
            torch.randn(e, e), torch.randn(e), False)  # fmt: skip


# function -> (args builder, callable(args) returning a differentiable tensor, index of grad-carrying args)
SAMPLES = {
    torch.relu: (lambda: [x4()], lambda a: torch.relu(a[0])),
    torch.Tensor.relu: (lambda: [x4()], lambda a: a[0].relu()),
    F.relu: (lambda: [x4()], lambda a: F.relu(a[0])),
    torch.relu_: (lambda: [x4()], lambda a: torch.relu_(a[0] * 1)),
    torch.Tensor.relu_: (lambda: [x4()], lambda a: (a[0] * 1).relu_()),
    F.relu6: (lambda: [x4() * 4], lambda a: F.relu6(a[0])),
    F.hardtanh: (lambda: [x4()], lambda a: F.hardtanh(a[0], -1.0, 2.0)),
    F.hardtanh_: (lambda: [x4()], lambda a: F.hardtanh_(a[0] * 1)),
    F.leaky_relu: (lambda: [x4()], lambda a: F.leaky_relu(a[0], 0.2)),
    F.leaky_relu_: (lambda: [x4()], lambda a: F.leaky_relu_(a[0] * 1, 0.2)),
    torch.prelu: (lambda: [x4(), torch.full((3,), 0.25)], lambda a: torch.prelu(a[0], a[1])),
    F.prelu: (lambda: [x4(), torch.full((3,), 0.25)], lambda a: F.prelu(a[0], a[1])),
    F.gelu: (lambda: [x4()], lambda a: F.gelu(a[0], approximate="tanh")),
    F.silu: (lambda: [x4()], lambda a: F.silu(a[0])),
    F.hardswish: (lambda: [x4()], lambda a: F.hardswish(a[0])),
    F.mish: (lambda: [x4()], lambda a: F.mish(a[0])),
    torch.sigmoid: (lambda: [x4()], lambda a: a[0] * torch.sigmoid(a[0].mean((2, 3), keepdim=True))),
    torch.Tensor.sigmoid: (lambda: [x4()], lambda a: a[0].sigmoid() * a[0]),
    F.sigmoid: (lambda: [x4()], lambda a: F.sigmoid(a[0])),
    F.hardsigmoid: (lambda: [x4()], lambda a: a[0] * F.hardsigmoid(a[0].mean((2, 3), keepdim=True))),
    torch.mul: (lambda: [x4()], lambda a: torch.mul(torch.sigmoid(a[0].sum(1, keepdim=True)), a[0])),
    torch.Tensor.mul: (lambda: [x4()], lambda a: a[0].mul(torch.sigmoid(a[0]))),
    torch.Tensor.__mul__: (lambda: [x4()], lambda a: a[0] * torch.sigmoid(a[0] + 1)),
    torch.Tensor.__rmul__: (lambda: [x4()], lambda a: torch.sigmoid(a[0].mean(1, keepdim=True)).__rmul__(a[0])),
    torch.Tensor.mul_: (lambda: [x4()], lambda a: (a[0] * 1).mul_(torch.sigmoid(a[0]))),
    torch.Tensor.__imul__: (lambda: [x4()], lambda a: _imul(a[0])),
    torch.softmax: (lambda: qkv(), lambda a: torch.softmax(a[0] @ a[1].transpose(-2, -1), -1) @ a[2]),
    torch.Tensor.softmax: (lambda: qkv(), lambda a: (a[0] @ a[1].transpose(-2, -1)).softmax(dim=-1) @ a[2]),
    F.softmax: (lambda: qkv(), lambda a: F.softmax(a[0], dim=-1)),
    torch.matmul: (lambda: qkv(), lambda a: torch.matmul(_w(a), a[2])),
    torch.Tensor.matmul: (lambda: qkv(), lambda a: _w(a).matmul(a[2])),
    torch.Tensor.__matmul__: (lambda: qkv(), lambda a: _w(a) @ a[2]),
    torch.bmm: (lambda: [t[0] for t in qkv()], lambda a: torch.bmm(_w(a), a[2])),
    torch.Tensor.bmm: (lambda: [t[0] for t in qkv()], lambda a: _w(a).bmm(a[2])),
    F.dropout: (lambda: qkv(), lambda a: F.dropout(_w(a), 0.0, False) @ a[2]),
    torch.dropout: (lambda: qkv(), lambda a: torch.dropout(_w(a), 0.0, False) @ a[2]),
    F.scaled_dot_product_attention: (lambda: qkv(), lambda a: F.scaled_dot_product_attention(*a, is_causal=True)),
    F.multi_head_attention_forward: (mha_args, lambda a: F.multi_head_attention_forward(*a)[0]),
    F.layer_norm: (lambda: [x4()], lambda a: F.layer_norm(a[0], (6,))),
    F.rms_norm: (lambda: [x4()], lambda a: F.rms_norm(a[0], (6, 6))),
    F.group_norm: (lambda: [x4(2, 4, 3, 3)], lambda a: F.group_norm(a[0], 2)),
    F.instance_norm: (lambda: [x4()], lambda a: F.instance_norm(a[0])),
    F.batch_norm: (lambda: [x4()], lambda a: F.batch_norm(a[0], None, None, training=True)),
    torch.add: (lambda: [x4(), x4()], lambda a: F.relu(torch.add(_bn(a[0]), a[1]))),
    torch.Tensor.add: (lambda: [x4(), x4()], lambda a: F.relu(a[1].add(_bn(a[0])))),
    torch.Tensor.__add__: (lambda: [x4(), x4()], lambda a: F.relu(_bn(a[0]).__add__(_bn(a[1])))),
    torch.Tensor.__radd__: (lambda: [x4(), x4()], lambda a: F.relu(_bn(a[0]).__radd__(a[1]))),
    torch.Tensor.add_: (lambda: [x4(), x4()], lambda a: F.relu_(_bn(a[0]).add_(a[1]))),
    torch.Tensor.__iadd__: (lambda: [x4(), x4()], lambda a: F.relu_(_bn(a[0]).__iadd__(a[1]))),
}


def _bn(t):
    """Eval-mode batch norm, whose sums a following ReLU rebuilds its input from."""
    c = t.shape[1]
    return F.batch_norm(t, torch.linspace(-1, 1, c), torch.linspace(0.5, 2, c), torch.ones(c) * 1.5, torch.ones(c))


def _w(a):
    return (a[0] @ a[1].transpose(-2, -1)).softmax(-1)


def _imul(t):
    y = t * 1
    y *= torch.sigmoid(t)
    return y


for _nd in (1, 2, 3):
    shape = (2, 3, *([6] * _nd))
    for _f in (getattr(F, f"max_pool{_nd}d"), getattr(torch, f"max_pool{_nd}d", None)):
        if _f is not None:
            SAMPLES[_f] = (lambda s=shape: [x4(*s)], lambda a, f=_f: f(a[0], 2))
    for _f in (getattr(F, f"max_pool{_nd}d_with_indices"), getattr(torch, f"max_pool{_nd}d_with_indices", None)):
        if _f is not None:
            SAMPLES[_f] = (lambda s=shape: [x4(*s)], lambda a, f=_f: f(a[0], 3, 2, 1)[0])
    SAMPLES[getattr(F, f"adaptive_max_pool{_nd}d")] = (
        lambda s=shape: [x4(*s)],
        lambda a, n=_nd: getattr(F, f"adaptive_max_pool{n}d")(a[0], 4),
    )
    SAMPLES[getattr(F, f"adaptive_max_pool{_nd}d_with_indices")] = (
        lambda s=shape: [x4(*s)],
        lambda a, n=_nd: getattr(F, f"adaptive_max_pool{n}d_with_indices")(a[0], 1)[0],
    )


# written-out composites (engine/rules/composites.py, glu.py, bounded.py, reductions.py)
def _rms(t, pow_=lambda v: v.pow(2), mean=lambda v: v.mean(-1, keepdim=True), rsqrt=torch.rsqrt, mul=torch.mul):
    return mul(t, rsqrt(mean(pow_(t)) + 1e-6))


def _ln(t, sub=torch.sub, div=torch.div, sqrt=torch.sqrt, var=None):
    c = sub(t, t.mean(-1, keepdim=True))
    v = var(t) if var is not None else (c * c).mean(-1, keepdim=True)
    return div(c, sqrt(v + 1e-5))


def _gelu_tanh(t, tanh=torch.tanh, pow_=torch.pow):
    return 0.5 * t * (1.0 + tanh(0.7978845608028654 * (t + 0.044715 * pow_(t, 3.0))))


def _gelu_erf(t, erf=torch.erf):
    return t * 0.5 * (1.0 + erf(t / 1.4142135623730951))


def _softmax_attention(a, exp=torch.exp, sum_=torch.sum, amax=torch.amax, div=torch.div):
    s = a[0] @ a[1].transpose(-2, -1)
    e = exp(s - amax(s, -1, keepdim=True))
    return div(e, sum_(e, -1, keepdim=True)) @ a[2]


def _isub(t):
    c = t * 1
    c -= t.mean(-1, keepdim=True)
    return c / torch.sqrt((c * c).mean(-1, keepdim=True) + 1e-5)


def _idiv(t):
    y = t * 1
    y /= torch.sqrt((t * t).mean(-1, keepdim=True) + 1e-5)
    return F.relu(y)


SAMPLES.update({
    F.glu: (lambda: [x4()], lambda a: F.glu(a[0], -1)),
    torch.tanh: (lambda: [x4()], lambda a: torch.tanh(a[0])),
    torch.Tensor.tanh: (lambda: [x4()], lambda a: _gelu_tanh(a[0], tanh=torch.Tensor.tanh)),
    F.tanh: (lambda: [x4()], lambda a: F.tanh(a[0])),
    torch.rsqrt: (lambda: [x4()], lambda a: _rms(a[0])),
    torch.Tensor.rsqrt: (lambda: [x4()], lambda a: _rms(a[0], rsqrt=torch.Tensor.rsqrt)),
    torch.sqrt: (lambda: [x4()], lambda a: _ln(a[0])),
    torch.Tensor.sqrt: (lambda: [x4()], lambda a: _ln(a[0], sqrt=torch.Tensor.sqrt)),
    torch.reciprocal: (lambda: [x4()], lambda a: _rms(a[0], rsqrt=lambda v: torch.reciprocal(torch.sqrt(v)))),
    torch.Tensor.reciprocal: (lambda: [x4()], lambda a: torch.Tensor.reciprocal(a[0] + 10)),
    torch.exp: (lambda: qkv(), lambda a: _softmax_attention(a)),
    torch.Tensor.exp: (lambda: qkv(), lambda a: _softmax_attention(a, exp=torch.Tensor.exp)),
    torch.erf: (lambda: [x4()], lambda a: _gelu_erf(a[0])),
    torch.Tensor.erf: (lambda: [x4()], lambda a: _gelu_erf(a[0], erf=torch.Tensor.erf)),
    torch.special.erf: (lambda: [x4()], lambda a: _gelu_erf(a[0], erf=torch.special.erf)),
    torch.log: (lambda: [x4()], lambda a: torch.log(a[0].abs() + 1)),
    torch.Tensor.log: (lambda: [x4()], lambda a: (a[0].abs() + 1).log()),
    torch.pow: (lambda: [x4()], lambda a: _gelu_tanh(a[0])),
    torch.Tensor.pow: (lambda: [x4()], lambda a: _rms(a[0])),
    torch.Tensor.__pow__: (lambda: [x4()], lambda a: _rms(a[0], pow_=lambda v: v**2)),
    torch.Tensor.square: (lambda: [x4()], lambda a: _rms(a[0], pow_=torch.Tensor.square)),
    torch.square: (lambda: [x4()], lambda a: _rms(a[0], pow_=torch.square)),
    torch.mean: (lambda: [x4()], lambda a: _rms(a[0], mean=lambda v: torch.mean(v, -1, keepdim=True))),
    torch.Tensor.mean: (lambda: [x4()], lambda a: _rms(a[0])),
    torch.sum: (lambda: qkv(), lambda a: _softmax_attention(a)),
    torch.Tensor.sum: (lambda: qkv(), lambda a: _softmax_attention(a, sum_=torch.Tensor.sum)),
    torch.var: (lambda: [x4()], lambda a: _ln(a[0], var=lambda v: torch.var(v, -1, keepdim=True, unbiased=False))),
    torch.Tensor.var: (lambda: [x4()], lambda a: _ln(a[0], var=lambda v: v.var(-1, keepdim=True))),
    torch.Tensor.to: (lambda: [x4()], lambda a: _rms(a[0].to(torch.float64))),
    torch.Tensor.type: (lambda: [x4()], lambda a: _rms(a[0].type(torch.float64))),
    torch.Tensor.float: (lambda: [x4().double()], lambda a: _rms(a[0].float())),
    torch.Tensor.double: (lambda: [x4()], lambda a: _rms(a[0].double())),
    torch.Tensor.half: (lambda: [x4()], lambda a: F.relu(a[0].half().float())),
    torch.Tensor.bfloat16: (lambda: [x4()], lambda a: F.relu(a[0].bfloat16().float())),
    torch.Tensor.contiguous: (lambda: qkv(), lambda a: _w(a).transpose(-2, -1).contiguous() @ a[2]),
    torch.sub: (lambda: [x4()], lambda a: _ln(a[0])),
    torch.Tensor.sub: (lambda: [x4()], lambda a: _ln(a[0], sub=torch.Tensor.sub)),
    torch.Tensor.__sub__: (lambda: [x4()], lambda a: _ln(a[0], sub=torch.Tensor.__sub__)),
    torch.Tensor.__rsub__: (lambda: [x4()], lambda a: _gelu_tanh(a[0]).__rsub__(1.0)),
    torch.Tensor.sub_: (lambda: [x4()], lambda a: F.relu((a[0] * 1).sub_(a[0].mean(-1, keepdim=True)))),
    torch.Tensor.__isub__: (lambda: [x4()], lambda a: _isub(a[0])),
    torch.div: (lambda: [x4()], lambda a: _ln(a[0])),
    torch.Tensor.div: (lambda: [x4()], lambda a: _ln(a[0], div=torch.Tensor.div)),
    torch.Tensor.__truediv__: (lambda: [x4()], lambda a: _ln(a[0], div=torch.Tensor.__truediv__)),
    torch.Tensor.__rtruediv__: (lambda: [x4()], lambda a: _rms(a[0], rsqrt=lambda v: torch.sqrt(v).__rtruediv__(1))),
    torch.Tensor.div_: (lambda: [x4()], lambda a: F.relu((a[0] * 1).div_(2.0))),
    torch.Tensor.__itruediv__: (lambda: [x4()], lambda a: _idiv(a[0])),
    torch.amax: (lambda: [x4()], lambda a: torch.amax(a[0], (2, 3))),
    torch.Tensor.amax: (lambda: qkv(), lambda a: _softmax_attention(a, amax=torch.Tensor.amax)),
    torch.amin: (lambda: [x4()], lambda a: torch.amin(a[0], 1)),
    torch.Tensor.amin: (lambda: [x4()], lambda a: a[0].amin((1, 2, 3))),
    torch.max: (lambda: [x4()], lambda a: torch.max(a[0], 1).values),
    torch.Tensor.max: (lambda: [x4()], lambda a: a[0].flatten(2).max(-1)[0]),
    torch.min: (lambda: [x4()], lambda a: torch.min(a[0])),
    torch.Tensor.min: (lambda: [x4()], lambda a: a[0].min(dim=1, keepdim=True).values),
})  # fmt: skip

RULES = registered_rules()


def test_every_registered_rule_has_a_sample():
    missing = [f for f, _ in RULES if f not in SAMPLES]
    assert not missing, f"add a sample call for newly registered rules: {missing}"


@pytest.mark.parametrize("func,rule", RULES, ids=[f"{r.op}:{getattr(f, '__qualname__', f)}" for f, r in RULES])
def test_rule_forward_exact_backward_finite(func, rule):
    build, call = SAMPLES[func]
    args = build()
    reference = call(args)
    leaves = [
        a.clone().requires_grad_(True) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args
    ]
    with pullback_mode() as pb:
        out = call(leaves)
        grads = torch.autograd.grad(
            out,
            [a for a in leaves if isinstance(a, torch.Tensor) and a.requires_grad],
            torch.ones_like(out),
            allow_unused=True,
        )
    assert torch.equal(out, reference)
    assert any(g is not None for g in grads)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)
    assert pb.coverage.met, "the rule's op was not recorded"
