"""Every rule against its analytic formula on small hand-built modules."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from semantic_pullbacks import Relative, Temperatures, pullback_mode

Phi = torch.special.ndtr


def pullback(fn, *inputs, direction=None, temperatures=None):
    """Soft pullback of ``<direction, fn(*inputs)>`` with respect to each input."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    with pullback_mode(temperatures):
        out = fn(*leaves)
        v = torch.ones_like(out) if direction is None else direction
        grads = torch.autograd.grad(out, leaves, v, allow_unused=True)
    return grads


def gradient(fn, *inputs, direction=None):
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    v = torch.ones_like(out) if direction is None else direction
    return torch.autograd.grad(out, leaves, v, allow_unused=True)


def test_one_hidden_layer_relu_net_matches_closed_form():
    torch.manual_seed(0)
    w1, w2 = torch.randn(16, 5, dtype=torch.float64), torch.randn(3, 16, dtype=torch.float64)
    x = torch.randn(4, 5, dtype=torch.float64)
    tau = 0.6
    (g,) = pullback(lambda t: F.relu(t @ w1.T) @ w2.T, x, direction=torch.eye(3, dtype=torch.float64)[[0, 1, 2, 0]])
    z = x @ w1.T
    rows = torch.eye(3, dtype=torch.float64)[[0, 1, 2, 0]]
    expected = ((rows @ w2) * Phi(z / tau)) @ w1  # W2^T diag(Phi(z/tau)) W1^T, one row per sample
    torch.testing.assert_close(g, expected)


ACTIVATIONS = {
    "relu": (lambda x: F.relu(x), lambda x, t: Phi(x / t), "relu"),
    "relu_module_inplace": (lambda x: nn.ReLU(inplace=True)(x * 1.0), lambda x, t: Phi(x / t), "relu"),
    "tensor.relu": (lambda x: x.relu(), lambda x, t: Phi(x / t), "relu"),
    "relu6": (lambda x: F.relu6(x), lambda x, t: Phi(x / t) - Phi((x - 6) / t), "relu"),
    "hardtanh": (lambda x: F.hardtanh(x, -2.0, 3.0), lambda x, t: Phi((x + 2) / t) - Phi((x - 3) / t), "relu"),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), lambda x, t: 0.1 + 0.9 * Phi(x / t), "relu"),
    "leaky_relu_inplace": (
        lambda x: F.leaky_relu(x * 1.0, 0.1, inplace=True),
        lambda x, t: 0.1 + 0.9 * Phi(x / t),
        "relu",
    ),
    "relu6_inplace": (lambda x: F.relu6(x * 1.0, inplace=True), lambda x, t: Phi(x / t) - Phi((x - 6) / t), "relu"),
    "hardswish_inplace": (
        lambda x: F.hardswish(x * 1.0, inplace=True),
        lambda x, t: (x / t / 6 + 0.5).clamp(0, 1),
        "silu",
    ),
    "silu_inplace": (lambda x: F.silu(x * 1.0, inplace=True), lambda x, t: torch.sigmoid(x / t), "silu"),
    "gelu": (lambda x: F.gelu(x), lambda x, t: Phi(x / t), "gelu"),
    "gelu_tanh": (
        lambda x: F.gelu(x, approximate="tanh"),
        lambda x, t: 0.5 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x / t + 0.044715 * (x / t) ** 3))),
        "gelu",
    ),
    "silu": (lambda x: F.silu(x), lambda x, t: torch.sigmoid(x / t), "silu"),
    "x*sigmoid(x)": (lambda x: x * torch.sigmoid(x), lambda x, t: torch.sigmoid(x / t), "silu"),
    "hardswish": (lambda x: F.hardswish(x), lambda x, t: (x / t / 6 + 0.5).clamp(0, 1), "silu"),
    "mish": (lambda x: F.mish(x), lambda x, t: torch.tanh(F.softplus(x / t)), "silu"),
}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
@pytest.mark.parametrize("tau", [0.3, 1.7])
def test_activation_backward_is_grad_times_soft_gate(name, tau):
    fn, gate, family = ACTIVATIONS[name]
    torch.manual_seed(1)
    x = torch.randn(3, 7, dtype=torch.float64) * 4
    v = torch.randn(3, 7, dtype=torch.float64)
    (g,) = pullback(fn, x, direction=v, temperatures={family: tau})
    torch.testing.assert_close(g, v * gate(x, tau))
    # and it is not the ordinary gradient (a no-op rule cannot pass)
    (plain,) = gradient(fn, x, direction=v)
    assert not torch.allclose(g, plain, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_silu_gate_is_finite_and_exact_at_extreme_inputs(dtype):
    """The SiLU adjoint runs as softplus's backward (one pass); where ``sigmoid`` saturates it passes the gradient
    through, and nothing overflows."""
    x = torch.tensor([[-1e30, -1e4, -88.0, -3.0, 0.0, 2.5, 31.9, 32.1, 90.0, 1e4, 1e30]], dtype=dtype)
    v = torch.linspace(-1.0, 2.0, x.shape[1], dtype=dtype)[None]
    (g,) = pullback(F.silu, x, direction=v, temperatures={"silu": 1.6})
    torch.testing.assert_close(g, v * torch.sigmoid(x.double() / 1.6).to(dtype))


def test_prelu_input_and_slope_adjoints():
    torch.manual_seed(2)
    m = nn.PReLU(4, init=0.2).double()
    x = torch.randn(2, 4, 5, dtype=torch.float64) * 3
    tau = 0.5
    xl = x.clone().requires_grad_(True)
    with pullback_mode({"relu": tau}):
        out = m(xl)
        assert torch.equal(out, F.prelu(x, m.weight))
        out.sum().backward()
    w = m.weight.detach().view(1, 4, 1)
    torch.testing.assert_close(xl.grad, w + (1 - w) * Phi(x / tau))
    torch.testing.assert_close(m.weight.grad, (x * (1 - Phi(x / tau))).sum((0, 2)))


def test_relative_temperature_is_scale_times_per_sample_std():
    torch.manual_seed(3)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64) * torch.tensor([1.0, 5.0], dtype=torch.float64).view(2, 1, 1, 1)
    (g,) = pullback(F.relu, x, temperatures={"relu": Relative(2.0)})
    std = x.flatten(1).std(dim=1, unbiased=False).view(2, 1, 1, 1)
    torch.testing.assert_close(g, Phi(x / (2.0 * std)))


# --- max pooling -----------------------------------------------------------------------------------------------
def slow_soft_maxpool(x, grad, kernel, stride, padding, dilation, tau):
    """Window-by-window reference: each output's gradient spread by softmax over its (unpadded) window."""
    nd = len(kernel)
    gx = torch.zeros_like(x)
    lead = x.shape[:-nd]
    out_shape = grad.shape[-nd:]
    for o in itertools.product(*[range(n) for n in out_shape]):
        idx = []
        for i in range(nd):
            start = o[i] * stride[i] - padding[i]
            cand = [start + j * dilation[i] for j in range(kernel[i])]
            idx.append([c for c in cand if 0 <= c < x.shape[-nd + i]])
        cells = list(itertools.product(*idx))
        vals = torch.stack([x[(..., *c)] for c in cells], dim=-1)
        w = torch.softmax(vals / tau, dim=-1)
        for j, c in enumerate(cells):
            gx[(..., *c)] += w[..., j] * grad[(..., *o)]
    assert gx.shape[: len(lead)] == lead
    return gx


POOLS = [
    ("1d", lambda x: F.max_pool1d(x, 3, 2, 1), (3,), (2,), (1,), (1,), (2, 3, 11)),
    ("2d", lambda x: F.max_pool2d(x, 2), (2, 2), (2, 2), (0, 0), (1, 1), (2, 3, 6, 6)),
    ("2d-overlap-pad", lambda x: nn.MaxPool2d(3, 2, 1)(x), (3, 3), (2, 2), (1, 1), (1, 1), (1, 2, 7, 7)),
    (
        "2d-ceil-dilated",
        lambda x: F.max_pool2d(x, 2, 2, 0, dilation=2, ceil_mode=True),
        (2, 2),
        (2, 2),
        (0, 0),
        (2, 2),
        (1, 2, 8, 9),
    ),
    ("2d-indices", lambda x: F.max_pool2d(x, 2, return_indices=True)[0], (2, 2), (2, 2), (0, 0), (1, 1), (1, 2, 4, 4)),
    ("2d-unbatched", lambda x: F.max_pool2d(x, 2), (2, 2), (2, 2), (0, 0), (1, 1), (3, 4, 4)),
    ("3d", lambda x: F.max_pool3d(x, 2, 1), (2, 2, 2), (1, 1, 1), (0, 0, 0), (1, 1, 1), (1, 2, 3, 4, 4)),
    # a window larger than the offset-by-offset path takes: the unfolded softmax
    ("2d-large-window", lambda x: F.max_pool2d(x, 6, 2, 2), (6, 6), (2, 2), (2, 2), (1, 1), (1, 2, 9, 10)),
]


@pytest.mark.parametrize("case", POOLS, ids=[p[0] for p in POOLS])
def test_maxpool_spreads_gradient_by_window_softmax(case):
    _, fn, k, s, p, d, shape = case
    torch.manual_seed(4)
    x = torch.randn(*shape, dtype=torch.float64)
    out = fn(x)
    v = torch.randn_like(out)
    (g,) = pullback(fn, x, direction=v, temperatures={"maxpool": 0.3})
    torch.testing.assert_close(g, slow_soft_maxpool(x, v, k, s, p, d, 0.3))


# the factored path does not take dilation: those cases always go to the per-window paths
PATH_CASES = [
    (path, case)
    for case in POOLS
    for path in ("_factored_grad", "_offsetwise_grad", "_unfolded_grad")
    if path != "_factored_grad" or all(di == 1 for di in case[5])
]


@pytest.mark.parametrize("path,case", PATH_CASES, ids=[f"{c[0]}-{p.strip('_')}" for p, c in PATH_CASES])
def test_each_maxpool_path_matches_the_reference(case, path, monkeypatch):
    """The fast path hands over to the per-window ones when it cannot be exact; each must be right on its own."""
    from semantic_pullbacks.engine.rules import pooling

    _, fn, k, s, p, d, shape = case
    if path != "_factored_grad":
        monkeypatch.setattr(pooling, "_factored_grad", lambda *a: None)
    monkeypatch.setattr(pooling, "_LOOP_MAX_WINDOW", 10**9 if path == "_offsetwise_grad" else 0)
    called = []
    real = getattr(pooling, path)
    monkeypatch.setattr(pooling, path, lambda *a: called.append(path) or real(*a))
    torch.manual_seed(4)
    x = torch.randn(*shape, dtype=torch.float64)
    v = torch.randn_like(fn(x))
    (g,) = pullback(fn, x, direction=v, temperatures={"maxpool": 0.3})
    assert called
    torch.testing.assert_close(g, slow_soft_maxpool(x, v, k, s, p, d, 0.3))


def test_maxpool_with_a_huge_range_in_one_channel_stays_exact():
    """Windows far below their channel's maximum would underflow in the factored path; the exact path steps in."""
    torch.manual_seed(6)
    x = torch.randn(1, 2, 8, 8)
    x[0, 0, 0, 0] = 200.0
    fn = lambda t: F.max_pool2d(t, 2)
    v = torch.randn(1, 2, 4, 4)
    (g,) = pullback(fn, x, direction=v, temperatures={"maxpool": 0.3})
    assert torch.isfinite(g).all()
    expected = slow_soft_maxpool(x.double(), v.double(), (2, 2), (2, 2), (0, 0), (1, 1), 0.3)
    torch.testing.assert_close(g.double(), expected)


def test_maxpool_window_of_minus_infinity_gets_no_nan():
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    x[..., :2, :2] = float("-inf")
    (g,) = pullback(lambda t: F.max_pool2d(t, 2), x, direction=torch.ones(1, 1, 2, 2, dtype=torch.float64),
                    temperatures={"maxpool": 0.3})  # fmt: skip
    assert torch.isfinite(g).all() and g[..., :2, :2].abs().sum() == 0
    torch.testing.assert_close(g[..., 2:, 2:].sum(), torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize("out_size", [1, 3, (2, 5)])
def test_adaptive_maxpool_uneven_windows(out_size):
    torch.manual_seed(5)
    x = torch.randn(2, 3, 7, 10, dtype=torch.float64)
    fn = lambda t: F.adaptive_max_pool2d(t, out_size)
    v = torch.randn_like(fn(x))
    (g,) = pullback(fn, x, direction=v, temperatures={"maxpool": 0.5})
    o = (out_size, out_size) if isinstance(out_size, int) else out_size
    ref = torch.zeros_like(x)
    for i in range(o[0]):
        for j in range(o[1]):
            r0, r1 = (i * 7) // o[0], -((-(i + 1) * 7) // o[0])
            c0, c1 = (j * 10) // o[1], -((-(j + 1) * 10) // o[1])
            win = x[..., r0:r1, c0:c1]
            w = torch.softmax(win.flatten(2) / 0.5, -1).view(win.shape)
            ref[..., r0:r1, c0:c1] += w * v[..., i, j, None, None]
    torch.testing.assert_close(g, ref)


# --- normalisation -----------------------------------------------------------------------------------------------
def frozen(fn_stats):
    return fn_stats


@pytest.mark.parametrize("kind", ["layer", "group", "rms", "instance", "batch_train"])
def test_norms_are_affine_with_frozen_statistics(kind):
    torch.manual_seed(6)
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64) * 2 + 1
    w = torch.randn(4, dtype=torch.float64) if kind in ("group", "instance", "batch_train") else None
    if kind in ("layer", "rms"):
        w = torch.randn(5, dtype=torch.float64)
    b = torch.randn_like(w)
    eps = 1e-5

    if kind == "layer":
        fn = lambda t, w, b: F.layer_norm(t, (5,), w, b, eps)
        dims = (-1,)
    elif kind == "rms":
        fn = lambda t, w, b: F.rms_norm(t, (5,), w, eps) + b
        dims = (-1,)
    elif kind == "group":
        fn = lambda t, w, b: F.group_norm(t, 2, w, b, eps)
    elif kind == "instance":
        fn = lambda t, w, b: F.instance_norm(t, weight=w, bias=b, eps=eps)
    else:
        fn = lambda t, w, b: F.batch_norm(t, None, None, w, b, True, 0.1, eps)

    def reference(t, w, b):
        if kind in ("layer", "rms"):
            mean = torch.zeros(()) if kind == "rms" else t.mean(dims, keepdim=True)
            var = t.pow(2).mean(dims, keepdim=True) if kind == "rms" else t.var(dims, unbiased=False, keepdim=True)
            return (t - mean.detach()) * torch.rsqrt(var + eps).detach() * w + b
        if kind == "group":
            tv = t.reshape(2, 2, -1)
        elif kind == "instance":
            tv = t.reshape(2, 4, -1)
        else:
            tv = t.transpose(0, 1).reshape(4, -1)
        mean = tv.mean(-1, keepdim=True).detach()
        rstd = torch.rsqrt(tv.var(-1, unbiased=False, keepdim=True) + eps).detach()
        y = (tv - mean) * rstd
        y = y.reshape(4, 2, 3, 5).transpose(0, 1) if kind == "batch_train" else y.reshape(t.shape)
        return y * w.view(1, 4, 1, 1) + b.view(1, 4, 1, 1)

    v = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    got = pullback(fn, x, w, b, direction=v)
    want = gradient(reference, x, w, b, direction=v)
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r)
    assert not torch.allclose(got[0], gradient(fn, x, w, b, direction=v)[0], atol=1e-4)


@pytest.mark.parametrize("kind", ["layer", "group"])
def test_norm_on_constant_input_is_finite(kind):
    x = torch.full((2, 4, 3, 3), 3.0)
    fn = (lambda t: F.layer_norm(t, (3,))) if kind == "layer" else (lambda t: F.group_norm(t, 2))
    (g,) = pullback(fn, x)
    assert torch.isfinite(g).all()
    torch.testing.assert_close(g, torch.full_like(x, 1 / math.sqrt(1e-5)))


# --- attention ----------------------------------------------------------------------------------------------------
def _sdpa_reference_grad_v(q, k, mask, causal, tau, g):
    s = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if causal:
        s = s.masked_fill(~torch.ones(s.shape[-2:], dtype=torch.bool).tril(), float("-inf"))
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask
    w = torch.nan_to_num(torch.softmax(s / tau, -1))
    return w.transpose(-2, -1) @ g


@pytest.mark.parametrize("mask_kind", ["none", "bool", "float-inf", "causal"])
@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_sdpa_reaches_values_only_through_softened_weights(mask_kind, tau):
    torch.manual_seed(7)
    q, k, v = (torch.randn(2, 3, 5, 4, dtype=torch.float64) for _ in range(3))
    mask = None
    if mask_kind == "bool":
        mask = torch.rand(5, 5) > 0.3
        mask[:, 0] = True
    elif mask_kind == "float-inf":
        mask = torch.zeros(5, 5, dtype=torch.float64).masked_fill(torch.rand(5, 5) > 0.6, float("-inf"))
        mask[:, 1] = 0.0
    causal = mask_kind == "causal"
    fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    g = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    gq, gk, gv = pullback(fn, q, k, v, direction=g, temperatures={"attention": tau})
    assert gq is None or torch.count_nonzero(gq) == 0
    assert gk is None or torch.count_nonzero(gk) == 0
    torch.testing.assert_close(gv, _sdpa_reference_grad_v(q, k, mask, causal, tau, g))


def test_explicit_softmax_attention_freezes_weights():
    torch.manual_seed(8)
    q, k, v = (torch.randn(2, 6, 4, dtype=torch.float64) for _ in range(3))
    g = torch.randn(2, 6, 4, dtype=torch.float64)

    def attn(q, k, v):
        a = (q @ k.transpose(-2, -1) * 0.5).softmax(dim=-1)
        a = F.dropout(a, 0.0, training=False)
        return a @ v

    for tau in (1.0, 0.7):
        gq, gk, gv = pullback(attn, q, k, v, direction=g, temperatures={"attention": tau})
        w = torch.softmax(q @ k.transpose(-2, -1) * 0.5 / tau, -1)
        assert gq is None and gk is None
        torch.testing.assert_close(gv, w.transpose(-2, -1) @ g)


def test_multihead_attention_module_matches_frozen_reference():
    torch.manual_seed(9)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).double().eval()
    x = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 5, 8, dtype=torch.float64)
    ref_out = mha(x, x, x, need_weights=False)[0]
    with pullback_mode() as pb:
        out = mha(x, x, x, need_weights=False)[0]
        (gx,) = torch.autograd.grad(out, x, g)
    assert torch.equal(out, ref_out)
    assert pb.coverage.softened == {"multi_head_attention": 1}
    # reference: the same computation written out with the weights detached
    wq, wk, wv = mha.in_proj_weight.chunk(3)
    bq, bk, bv = mha.in_proj_bias.chunk(3)
    xr = x.detach().clone().requires_grad_(True)
    q = (xr @ wq.T + bq).view(3, 5, 2, 4).transpose(1, 2)
    k = (xr @ wk.T + bk).view(3, 5, 2, 4).transpose(1, 2)
    vv = (xr @ wv.T + bv).view(3, 5, 2, 4).transpose(1, 2)
    w = torch.softmax(q @ k.transpose(-2, -1) / 2.0, -1).detach()
    o = (w @ vv).transpose(1, 2).reshape(3, 5, 8) @ mha.out_proj.weight.T + mha.out_proj.bias
    (want,) = torch.autograd.grad(o, xr, g)
    torch.testing.assert_close(gx, want)


def test_squeeze_excitation_gate_is_frozen():
    torch.manual_seed(10)
    fc = nn.Linear(4, 4).double()
    x = torch.randn(2, 4, dtype=torch.float64)

    def se(t):
        return t * torch.sigmoid(fc(t))

    (g,) = pullback(se, x)
    torch.testing.assert_close(g, torch.sigmoid(fc(x)).detach())
    (g_plain,) = pullback(se, x, temperatures={"gate": None})
    (grad,) = gradient(se, x)
    torch.testing.assert_close(g_plain, grad)


# --- limits ---------------------------------------------------------------------------------------------------------
def test_hard_limit_is_the_ordinary_gradient_on_relu_maxpool_net():
    # its own net, not small_methods.small_net: an in-place ReLU and adaptive max pooling are what is under test
    torch.manual_seed(11)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3), nn.ReLU(inplace=True),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    ).double()  # fmt: skip
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    v = torch.randn(2, 5, dtype=torch.float64)
    (hard,) = pullback(net, x, direction=v, temperatures=Temperatures.hard())
    (grad,) = gradient(net, x, direction=v)
    torch.testing.assert_close(hard, grad)
    (tiny,) = pullback(net, x, direction=v, temperatures={"relu": 1e-6, "maxpool": 1e-6})
    torch.testing.assert_close(tiny, grad, atol=1e-6, rtol=1e-5)
    (soft,) = pullback(net, x, direction=v)
    assert not torch.allclose(soft, grad, atol=1e-3)


def test_linear_model_pullback_is_its_weight_row():
    lin = nn.Linear(6, 3)
    x = torch.randn(4, 6)
    (g,) = pullback(lin, x, direction=torch.eye(3)[[2, 0, 1, 2]])
    torch.testing.assert_close(g, lin.weight.detach()[[2, 0, 1, 2]])
