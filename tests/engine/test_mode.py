"""The mode's contract: nothing mutated, restored on exit and on error, thread-confined, nestable."""

from __future__ import annotations

import threading
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from semantic_pullbacks import (
    InvalidInputError,
    Relative,
    Temperatures,
    UnsupportedModelError,
    pullback_mode,
    register_rule,
    unregister_rule,
)
from semantic_pullbacks.engine import NOT_HANDLED
from small_methods import small_net


def grad_of(model, x, target=1):
    x = x.detach().clone().requires_grad_(True)
    model(x)[:, target].sum().backward()
    return x.grad


def soft_of(model, x, target=1, temperatures=None):
    x = x.detach().clone().requires_grad_(True)
    with pullback_mode(temperatures):
        model(x)[:, target].sum().backward()
    return x.grad


def snapshot(model: nn.Module):
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    hooks = [
        (n, len(m._forward_hooks), len(m._backward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()
    ]
    return state, hooks, model.training, [p.requires_grad for p in model.parameters()]


def test_model_state_and_hooks_untouched():
    model = small_net()
    before = snapshot(model)
    x = torch.randn(2, 3, 8, 8)
    soft_of(model, x)
    after = snapshot(model)
    assert before[1:] == after[1:]
    for k in before[0]:
        assert torch.equal(before[0][k], after[0][k]), k


def test_ordinary_gradient_after_leaving_and_after_an_exception():
    model = small_net()
    x = torch.randn(2, 3, 8, 8)
    plain = grad_of(model, x)
    assert not torch.allclose(soft_of(model, x), plain)
    torch.testing.assert_close(grad_of(model, x), plain)
    with pytest.raises(RuntimeError, match="boom"), pullback_mode():
        model(x)
        raise RuntimeError("boom")
    torch.testing.assert_close(grad_of(model, x), plain)


def test_graph_built_inside_keeps_soft_backward_outside():
    model = small_net()
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    with pullback_mode():
        out = model(x)
    out[:, 1].sum().backward()
    torch.testing.assert_close(x.grad, soft_of(model, x))


def test_other_thread_is_unaffected():
    model = small_net()
    x = torch.randn(2, 3, 8, 8)
    plain = grad_of(model, x)
    inside, started, results = threading.Event(), threading.Event(), {}

    def worker():
        started.wait(10)
        results["grad"] = grad_of(model, x)
        inside.set()

    t = threading.Thread(target=worker)
    t.start()
    with pullback_mode():
        started.set()
        assert inside.wait(30)
        results["soft"] = soft_of(model, x)
    t.join()
    torch.testing.assert_close(results["grad"], plain)
    assert not torch.allclose(results["soft"], plain)


def test_nesting_innermost_temperatures_win_and_outer_resumes():
    model = small_net()
    x = torch.randn(2, 3, 8, 8)
    outer_alone = soft_of(model, x, temperatures={"relu": 0.6})
    inner_alone = soft_of(model, x, temperatures={"relu": 2.0})
    xi = x.clone().requires_grad_(True)
    with pullback_mode({"relu": 0.6}) as outer:
        with pullback_mode({"relu": 2.0}) as inner:
            model(xi)[:, 1].sum().backward()
        torch.testing.assert_close(xi.grad, inner_alone)
        xi.grad = None
        model(xi)[:, 1].sum().backward()
        torch.testing.assert_close(xi.grad, outer_alone)
    assert inner.coverage.softened["relu"] == 1 and outer.coverage.softened["relu"] == 1


def test_inplace_activation_gives_the_exact_forward_and_soft_backward():
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 2, 1).double()
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    z = conv(x)

    def f(inplace_kind):
        y = conv(x)
        if inplace_kind == "module":
            out = nn.ReLU(inplace=True)(y)
        elif inplace_kind == "method":
            out = y.relu_()
        else:
            out = torch.relu_(y)
        assert out is y  # the in-place contract: the input tensor now holds the result
        return out

    for kind in ("module", "method", "function"):
        with pullback_mode({"relu": 0.5}):
            out = f(kind)
            (g,) = torch.autograd.grad(out.sum(), x)
        assert torch.equal(out, F.relu(z))
        expected = torch.autograd.grad((z * torch.special.ndtr(z / 0.5).detach()).sum(), x, retain_graph=True)[0]
        torch.testing.assert_close(g, expected)


def test_module_called_twice_in_one_forward():
    torch.manual_seed(2)
    lin, act = nn.Linear(5, 5).double(), nn.ReLU()
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    with pullback_mode({"relu": 0.5}) as pb:
        out = act(lin(act(lin(x))))
        (g,) = torch.autograd.grad(out.sum(), x)
    assert pb.coverage.softened["relu"] == 2
    phi = torch.special.ndtr
    z1 = lin(x)
    z2 = lin(F.relu(z1))
    w = lin.weight
    expected = ((phi(z2 / 0.5) @ w) * phi(z1 / 0.5)) @ w
    torch.testing.assert_close(g, expected.detach())


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_float64_and_bfloat16_are_finite_and_forward_exact(dtype):
    model = torchvision.models.resnet18(num_classes=5).eval().to(dtype)
    x = torch.randn(1, 3, 32, 32, dtype=dtype, requires_grad=True)
    ref = model(x)
    with pullback_mode():
        out = model(x)
        out[:, 0].sum().backward()
    assert torch.equal(out, ref)
    assert x.grad.dtype == dtype and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_torchscript_and_compiled_models_are_refused():
    model = small_net()
    with pytest.raises(UnsupportedModelError, match="TorchScript"), pullback_mode(model=torch.jit.script(model)):
        pass
    wrapper = nn.Sequential(torch.compile(small_net()))
    with pytest.raises(UnsupportedModelError, match=r"torch\.compile"), pullback_mode(model=wrapper):
        pass


def test_bad_temperatures_are_rejected_clearly():
    with pytest.raises(InvalidInputError, match="relu"):
        Temperatures(relu=-1.0)
    with pytest.raises(InvalidInputError, match="unknown temperature family 'reluu'"):
        Temperatures().get("reluu")
    with pytest.raises(InvalidInputError, match="number"):
        Temperatures.coerce({"gelu": "warm"})
    with pytest.raises(InvalidInputError):
        Relative(0.0)
    assert Temperatures.coerce({"relu": "2*std"}).relu == Relative(2.0)
    assert Temperatures.coerce({"maxpool": "none"}).maxpool is None


def test_family_set_to_none_keeps_the_ordinary_gradient():
    model = small_net()
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(soft_of(model, x, temperatures=Temperatures.ordinary()), grad_of(model, x))


def test_coverage_report_and_warning_for_ops_without_rule():
    x = torch.randn(2, 4, requires_grad=True)
    with pytest.warns(UserWarning, match="smooth activation"), pullback_mode(warn_unhandled=True) as pb:
        (F.softplus(x) + F.relu(x)).sum().backward()
    assert pb.coverage.softened == {"relu": 1}
    assert pb.coverage.unhandled == {"smooth activation": 1}
    text = str(pb.coverage)
    assert "relu" in text and "smooth activation" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pullback_mode(warn_unhandled=True):
            F.relu(x).sum().backward()


def test_user_registered_rule_is_used_and_removable():
    calls = []

    @register_rule(torch.clamp, op="clamp", family="clip", replace=True)
    def soft_clamp(func, args, kwargs, ctx):
        tau = ctx.temperature("clip")
        if tau is None:
            return NOT_HANDLED
        ctx.record("clamp", "softened")
        calls.append(tau)
        x = args[0]
        out = func(*args, **kwargs)
        return out.detach() + (x - x.detach()) * 0.5  # a made-up adjoint, easy to check

    try:
        x = torch.randn(5, requires_grad=True)
        with pullback_mode(Temperatures().replace(clip=1.0)) as pb:
            out = torch.clamp(x, -0.5, 0.5)
            out.sum().backward()
        assert torch.equal(out, x.clamp(-0.5, 0.5))
        torch.testing.assert_close(x.grad, torch.full_like(x, 0.5))
        assert calls == [1.0] and pb.coverage.softened == {"clamp": 1}
    finally:
        unregister_rule(torch.clamp)
    x.grad = None
    with pullback_mode():
        torch.clamp(x, -0.5, 0.5).sum().backward()
    assert calls == [1.0]


def test_no_grad_forward_inside_mode_is_plain():
    model = small_net()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = model(x)
    with pullback_mode() as pb, torch.no_grad():
        out = model(x)
    assert torch.equal(out, ref) and not pb.coverage.counts
