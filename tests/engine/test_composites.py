"""Written-out composites, gated products, tanh and max reductions: each against its closed form or built-in twin."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from semantic_pullbacks import pullback_mode


def soft_vjp(fn, *inputs, v=None, temperatures=None):
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    with pullback_mode(temperatures) as pb:
        out = fn(*leaves)
        v = torch.ones_like(out) if v is None else v
        grads = torch.autograd.grad(out, leaves, v, allow_unused=True)
    return out, grads, pb.coverage


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.randn(3, 5, 8) * 2


def assert_clean(coverage, softened):
    assert coverage.softened == softened, str(coverage)
    assert coverage.unhandled == {} and coverage.ordinary == {}, str(coverage)


# --- norms ------------------------------------------------------------------------------------------------------
def llama_rms(h, weight, eps=1e-6):  # the spelling of transformers' LlamaRMSNorm
    dtype = h.dtype
    h = h.to(torch.float32)
    variance = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(variance + eps)
    return weight * h.to(dtype)


def hand_layer_norm(h, weight, bias, eps=1e-5):
    u = h.mean(-1, keepdim=True)
    s = (h - u).pow(2).mean(-1, keepdim=True)
    return weight * ((h - u) / torch.sqrt(s + eps)) + bias


def test_rmsnorm_by_hand_freezes_its_statistic(x):
    w = torch.rand(8) + 0.5
    v = torch.randn_like(x)
    out, (g,), cov = soft_vjp(lambda t: llama_rms(t, w), x, v=v)
    assert torch.equal(out, llama_rms(x, w))
    closed = v * w / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(g, closed)
    assert_clean(cov, {"rms_norm": 1})
    _, (g_builtin,), _ = soft_vjp(lambda t: F.rms_norm(t, (8,), w, 1e-6), x, v=v)
    torch.testing.assert_close(g, g_builtin)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rmsnorm_by_hand_in_half_precision_casts_keep_the_tags(x, dtype):
    w = torch.ones(8, dtype=dtype)
    out, _, cov = soft_vjp(lambda t: llama_rms(t, w), x.to(dtype))
    assert torch.equal(out, llama_rms(x.to(dtype), w))
    assert_clean(cov, {"rms_norm": 1})


def test_layer_norm_by_hand_matches_the_builtin_rule(x):
    w, b = torch.rand(8) + 0.5, torch.randn(8)
    v = torch.randn_like(x)
    out, (g,), cov = soft_vjp(lambda t: hand_layer_norm(t, w, b), x, v=v)
    assert torch.equal(out, hand_layer_norm(x, w, b))
    _, (g_builtin,), _ = soft_vjp(lambda t: F.layer_norm(t, (8,), w, b), x, v=v)
    torch.testing.assert_close(g, g_builtin, rtol=1e-4, atol=1e-5)
    assert_clean(cov, {"layer_norm": 1})


def test_rms_norm_eps_none_uses_float32_epsilon_in_half_precision():
    """Issue 11, failure 3: torch's rms_norm takes float32's epsilon for bf16/fp16 inputs; so must the adjoint."""
    torch.manual_seed(0)
    x = (torch.randn(2, 16) * 1e-3).to(torch.bfloat16)
    _, (g,), _ = soft_vjp(lambda t: F.rms_norm(t, (16,)), x)
    xf = x.float()
    closed = 1.0 / torch.sqrt(xf.pow(2).mean(-1, keepdim=True) + torch.finfo(torch.float32).eps)
    torch.testing.assert_close(g.float(), closed.expand_as(xf), rtol=2e-2, atol=0)


# --- x * g(x) activations ---------------------------------------------------------------------------------------
def gelu_new(t):  # GPT-2
    return 0.5 * t * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (t + 0.044715 * torch.pow(t, 3.0))))


def gelu_erf(t):
    return t * 0.5 * (1.0 + torch.erf(t / math.sqrt(2.0)))


@pytest.mark.parametrize(
    "fn,builtin",
    [(gelu_new, lambda t: F.gelu(t, approximate="tanh")), (gelu_erf, F.gelu)],
    ids=["tanh-gelu", "erf-gelu"],
)
@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_gelu_by_hand_gets_the_gelu_rule(x, fn, builtin, tau):
    v = torch.randn_like(x)
    out, (g,), cov = soft_vjp(fn, x, v=v, temperatures={"gelu": tau})
    assert torch.equal(out, fn(x))
    _, (g_builtin,), _ = soft_vjp(builtin, x, v=v, temperatures={"gelu": tau})
    torch.testing.assert_close(g, g_builtin, rtol=1e-3, atol=5e-4 * v.abs().max().item())  # erf vs tanh gates
    torch.testing.assert_close(g, v * 0.5 * (1 + torch.erf(x / tau / math.sqrt(2))))  # the paper's Phi(x / tau)
    assert_clean(cov, {"gelu": 1})


def test_other_x_times_g_of_x_freezes_its_gate(x):
    fn = lambda t: t * (torch.tanh(t) + 2.0)  # not a known activation: the gate g(x) = tanh(x) + 2 is frozen
    v = torch.randn_like(x)
    out, (g,), cov = soft_vjp(fn, x, v=v)
    assert torch.equal(out, fn(x))
    torch.testing.assert_close(g, v * (torch.tanh(x) + 2.0))
    assert_clean(cov, {"x*g(x)": 1})


# --- softmax by hand --------------------------------------------------------------------------------------------
def test_softmax_by_hand_weights_are_frozen_like_f_softmax():
    torch.manual_seed(0)
    q, k, val = (torch.randn(2, 4, 6) for _ in range(3))

    def hand(q, k, val):
        s = q @ k.transpose(-2, -1)
        e = torch.exp(s - s.amax(-1, keepdim=True))
        return (e / e.sum(-1, keepdim=True)) @ val

    v = torch.randn(2, 4, 6)
    out, grads, cov = soft_vjp(hand, q, k, val, v=v)
    torch.testing.assert_close(out, F.softmax(q @ k.transpose(-2, -1), -1) @ val)
    assert grads[0] is None or torch.equal(grads[0], torch.zeros_like(q))  # frozen weights: nothing to q, k
    torch.testing.assert_close(grads[2], F.softmax(q @ k.transpose(-2, -1), -1).transpose(-2, -1) @ v)
    assert_clean(cov, {"softmax": 1})


def test_one_softmax_in_two_matmuls_is_counted_once():
    """Issue 11, failure 6: one softmax used by two matmuls is one softened softmax."""
    torch.manual_seed(0)
    s, a, b = torch.randn(2, 4, 4), torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    _, _, cov = soft_vjp(lambda s, a, b: (lambda w: w @ a + w @ b)(s.softmax(-1)), s, a, b)
    assert cov.softened == {"softmax": 1}


# --- what is not understood is reported -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fn,name",
    [
        (lambda t: torch.exp(t).sum(-1), "exp"),
        (lambda t: torch.rsqrt(t.abs() + 1), "rsqrt"),
        (lambda t: t.pow(3), "pow"),
        (lambda t: torch.erf(t) * 2, "erf"),
        (lambda t: (t + 1) * (t.flip(-1) * 2 + 1).sin(), "product"),
        (lambda t: t / (t.flip(-1) * 3 + 10), "div"),
        (lambda t: torch.max(t, t.flip(-1)), "max/min/abs"),
    ],
    ids=["exp", "rsqrt", "pow", "erf", "product", "div", "maximum"],
)
def test_unrecognised_nonlinear_pieces_are_reported(x, fn, name):
    with pytest.warns(UserWarning, match="no rule"), pullback_mode(warn_unhandled=True) as pb:
        fn(x.requires_grad_(True)).sum().backward()
    assert name in pb.coverage.unhandled, str(pb.coverage)


# --- gated MLPs -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("act,name", [(F.silu, "swiglu"), (F.gelu, "geglu"), (F.relu, "reglu")])
def test_gated_mlp_product_freezes_the_activated_branch(act, name):
    torch.manual_seed(0)
    gate, up = torch.randn(4, 6), torch.randn(4, 6)
    v = torch.randn(4, 6)
    out, (g_gate, g_up), cov = soft_vjp(lambda g, u: act(g) * u, gate, up, v=v)
    assert torch.equal(out, act(gate) * up)
    assert g_gate is None or torch.equal(g_gate, torch.zeros_like(gate))
    torch.testing.assert_close(g_up, v * act(gate))
    assert_clean(cov, {name: 1})


def test_f_glu_freezes_its_sigmoid_half():
    torch.manual_seed(0)
    t = torch.randn(3, 8)
    v = torch.randn(3, 4)
    out, (g,), cov = soft_vjp(lambda t: F.glu(t, -1), t, v=v)
    assert torch.equal(out, F.glu(t, -1))
    _, b = t.chunk(2, -1)
    torch.testing.assert_close(g, torch.cat([v * torch.sigmoid(b), torch.zeros_like(b)], -1))
    assert cov.softened == {"glu": 1}


# --- tanh, a bounded activation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_tanh_backward_is_its_secant_gate(x, tau):
    v = torch.randn_like(x)
    out, (g,), cov = soft_vjp(torch.tanh, x, v=v, temperatures={"bounded": tau})
    assert torch.equal(out, torch.tanh(x))
    u = x / tau
    torch.testing.assert_close(g, v * torch.tanh(u) / u)
    assert cov.softened == {"tanh": 1}
    if tau == 1.0:  # the frozen-gate linear map reproduces the output: g(x) * x = tanh(x)
        torch.testing.assert_close(torch.tanh(x) / x * x, out)


def test_tanh_family_off_keeps_the_gradient(x):
    v = torch.randn_like(x)
    _, (g,), cov = soft_vjp(torch.tanh, x, v=v, temperatures={"bounded": None})
    torch.testing.assert_close(g, v * (1 - torch.tanh(x) ** 2))
    assert cov.ordinary == {"tanh": 1}


# --- max over whole dims: global max pooling by hand ------------------------------------------------------------
@pytest.mark.parametrize(
    "fn,dims,keep",
    [
        (lambda t: t.amax((1, 2)), (1, 2), False),
        (lambda t: torch.max(t, dim=1).values, (1,), False),
        (lambda t: t.max(-1, keepdim=True)[0], (2,), True),
    ],
    ids=["amax", "torch.max(dim).values", "Tensor.max(keepdim)"],
)
def test_max_over_dims_spreads_the_gradient_by_softmax(x, fn, dims, keep):
    tau = 0.3
    out, (g,), cov = soft_vjp(fn, x, temperatures={"maxpool": tau})
    assert torch.equal(out, fn(x))
    flat = x.permute(0, *[d for d in (1, 2) if d not in dims], *dims).flatten(3 - len(dims))
    w = torch.softmax(flat / tau, -1).view(x.permute(0, *[d for d in (1, 2) if d not in dims], *dims).shape)
    inverse = torch.argsort(torch.tensor([0, *[d for d in (1, 2) if d not in dims], *dims])).tolist()
    torch.testing.assert_close(g, w.permute(*inverse))
    assert cov.unhandled == {} and sum(cov.softened.values()) == 1


def test_max_over_dims_at_zero_temperature_is_the_gradient(x):
    _, (g,), _ = soft_vjp(lambda t: t.amax(-1), x, temperatures={"maxpool": 0.0})
    xg = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(xg.amax(-1).sum(), xg)
    assert torch.equal(g, ref)
