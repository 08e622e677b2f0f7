"""Methods as a user calls them: on the real pretrained default model and real photos, plus small analytic models."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from semantic_pullbacks import InvalidInputError, UnknownClassError, UnsupportedModelError
from semantic_pullbacks.examples import example_path, list_examples
from semantic_pullbacks.methods import (
    METHODS,
    DoublePullback,
    FusionPullback,
    Gradient,
    GradientAscent,
    PullbackAscent,
    SmoothGrad,
    SmoothPullback,
    SoftPullback,
    counterpart,
    get_method,
    quantus_explain_func,
)
from semantic_pullbacks.models import load
from small_methods import small_net

CAT = 285


@pytest.fixture(scope="module")
def lite0():
    return load("efficientnet_lite0")


@pytest.fixture(scope="module")
def photos(lite0):
    names = [e.name for e in list_examples()][:3]
    return torch.cat([lite0.load_image(example_path(n)) for n in names])


def test_soft_pullback_on_real_photo_is_signed_and_differs_from_gradient(lite0, photos):
    x = photos[:1]
    sp = SoftPullback(lite0.model).attribute(x, target=CAT)
    grad = Gradient(lite0.model).attribute(x, target=CAT)
    assert sp.shape == x.shape and torch.isfinite(sp).all()
    assert (sp > 0).any() and (sp < 0).any()
    cos = torch.nn.functional.cosine_similarity(sp.flatten(), grad.flatten(), dim=0)
    assert cos < 0.99
    assert SoftPullback(lite0.model).attribute(x, target=None).shape == x.shape  # None: top-1


def test_batch_equals_one_by_one(lite0, photos):
    sp = SoftPullback(lite0.model)
    targets = [CAT, 967, 657]
    batch = sp.attribute(photos, target=targets)
    single = torch.cat([sp.attribute(photos[i : i + 1], target=t) for i, t in enumerate(targets)])
    torch.testing.assert_close(batch, single, rtol=1e-4, atol=1e-6)


def test_multi_target_equals_per_target_calls(lite0, photos):
    sp = SoftPullback(lite0.model)
    x = photos[:2]
    top3 = lite0.model(x).topk(3, dim=1).indices
    many = sp.attribute_targets(x, top3)
    assert many.shape == (3, *x.shape)
    for t in range(3):
        torch.testing.assert_close(many[t], sp.attribute(x, target=top3[:, t]), rtol=1e-5, atol=1e-7)
    shared = sp.attribute_targets(x, [CAT, 967])
    torch.testing.assert_close(shared[1], sp.attribute(x, target=967), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("clip", ["never", "each", "last"])
def test_pullback_ascent_raises_the_target_logit_and_respects_clip(lite0, photos, clip):
    x = photos[:1]
    result = PullbackAscent(lite0.model, steps=3, alpha=20.0, clip=clip).run(x, target=967)
    assert result.scores.shape == (4, 1)
    assert result.scores[-1, 0] > result.scores[0, 0] + 1.0
    torch.testing.assert_close(result.attribution, result.counterfactual - x)
    inside = (result.counterfactual >= -1).all() and (result.counterfactual <= 1).all()
    if clip == "never":
        assert not inside  # alpha=20 steps leave the domain without clipping
    else:
        assert inside
    torch.testing.assert_close(
        PullbackAscent(lite0.model, steps=3, clip=clip).attribute(x, target=967), result.attribution
    )


def test_ascent_step_norm_eps_ball_and_gradient_baseline():
    model = small_net()
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    r = PullbackAscent(model, steps=1, alpha=3.0).run(x, target=1)
    torch.testing.assert_close(r.attribution.flatten(1).norm(dim=1), torch.full((2,), 3.0))
    r = PullbackAscent(model, steps=4, alpha=3.0, eps=5.0, keep_trajectory=True).run(x, target=1)
    assert (r.attribution.flatten(1).norm(dim=1) <= 5.0 + 1e-4).all() and len(r.trajectory) == 5
    g = GradientAscent(model, steps=1, alpha=None).attribute(x, target=1)
    torch.testing.assert_close(g, Gradient(model).attribute(x, target=1))
    with pytest.raises(InvalidInputError, match="clip"):
        PullbackAscent(model, clip="sometimes")
    with pytest.raises(InvalidInputError, match="steps"):
        PullbackAscent(model, steps=0)


def test_double_pullback_is_the_pullback_at_the_moved_point():
    model = small_net()
    x = torch.rand(1, 3, 8, 8)
    sp = SoftPullback(model)
    v = sp.attribute(x, target=2)
    moved = x + 20 * v / v.norm()
    torch.testing.assert_close(DoublePullback(model).attribute(x, target=2), sp.attribute(moved, target=2))


def test_linear_model_pullback_and_callable_targets():
    lin = nn.Linear(6, 3).eval()
    x = torch.randn(4, 6)
    torch.testing.assert_close(SoftPullback(lin).attribute(x, target=1), lin.weight.detach()[1].expand(4, 6))
    direction = torch.tensor([[1.0, -1.0, 0.0]]).expand(4, 3)
    want = (lin.weight[0] - lin.weight[1]).detach().expand(4, 6)
    torch.testing.assert_close(SoftPullback(lin).attribute(x, target=direction), want)
    torch.testing.assert_close(SoftPullback(lin).attribute(x, target=lambda o: o[:, 0] - o[:, 1]), want)


def test_the_models_output_is_released_before_the_backward_pass():
    """Only the graph is needed for the pullback: the model's output (a language model's logits over every
    position, the largest tensor of a long prompt) is gone before the backward pass starts, one target or several,
    and the map is the same."""
    import weakref

    outputs: list[weakref.ref] = []
    alive_in_backward: list[bool] = []

    class Probe(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):  # type: ignore[no-untyped-def, override]
            return x.clone()

        @staticmethod
        def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
            alive_in_backward.append(any(ref() is not None for ref in outputs))
            return grad

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(6, 5)

        def forward(self, x):  # type: ignore[no-untyped-def]
            out = self.lin(torch.tanh(Probe.apply(x)))
            out.__dict__["probe"] = True  # so its Python object lives exactly as long as the tensor itself
            outputs.append(weakref.ref(out))
            return out

    def column(k: int):  # type: ignore[no-untyped-def]
        return lambda out: out[:, k] * 1.0  # (a gather target would keep the output for its own backward)

    model = Head().eval()
    x = torch.randn(3, 6)
    for make in (SoftPullback, Gradient):
        one = make(model).attribute(x, target=column(2))
        both = make(model).attribute_targets(x, [column(2), column(4)])
        torch.testing.assert_close(both[0], one)
    assert alive_in_backward == [False] * 6  # 2 methods x (1 + 2 backward passes)


def test_output_selector_for_tuple_and_dict_outputs():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            return {"aux": x.sum(1), "logits": self.lin(x)}

    m = TwoHeads().eval()
    x = torch.randn(2, 4)
    torch.testing.assert_close(SoftPullback(m).attribute(x, target=2), m.lin.weight.detach()[2].expand(2, 4))
    aux = SoftPullback(m, output_selector="aux").attribute(x, target=lambda o: o)
    torch.testing.assert_close(aux, torch.ones(2, 4))
    with pytest.raises(InvalidInputError, match="output selector"):
        SoftPullback(m, output_selector="nope").attribute(x, target=0)


def test_caller_world_is_left_as_found():
    model = small_net()
    params = [p.detach().clone() for p in model.parameters()]
    marker = [torch.full_like(p, 7.0) for p in model.parameters()]
    for p, m in zip(model.parameters(), marker):
        p.grad = m
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    x.grad = torch.ones_like(x)
    x_copy = x.detach().clone()
    for name in ("SoftPullback", "PullbackAscent", "FusionPullback", "SmoothPullback", "GuidedPullbackCam"):
        kwargs = {"model_samples": 2, "nt_samples": 2} if name == "FusionPullback" else {}
        kwargs = {"nt_samples": 2} if name == "SmoothPullback" else kwargs
        get_method(name)(model, **kwargs).attribute(x, target=1)
    assert torch.equal(x.detach(), x_copy) and torch.equal(x.grad, torch.ones_like(x)) and x.requires_grad
    for p, p0, m in zip(model.parameters(), params, marker):
        assert torch.equal(p.detach(), p0) and p.grad is m
    assert not model.training


def test_train_mode_warns_and_is_not_changed():
    model = small_net().train()
    with pytest.warns(UserWarning, match="training mode"):
        SoftPullback(model).attribute(torch.rand(1, 3, 8, 8), target=0)
    assert model.training


def test_bad_inputs_give_clear_errors():
    model = small_net()
    sp = SoftPullback(model)
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(InvalidInputError, match="NaN"):
        sp.attribute(x.clone().fill_(float("nan")), target=0)
    with pytest.raises(InvalidInputError, match="batch dimension"):
        sp.attribute(torch.rand(3), target=0)
    with pytest.raises(InvalidInputError, match=r"torch\.Tensor"):
        sp.attribute(np.zeros((1, 3, 8, 8)), target=0)
    with pytest.raises(UnknownClassError, match="out of range"):
        sp.attribute(x, target=5)
    with pytest.raises(InvalidInputError, match="got 3 targets for a batch of 2"):
        sp.attribute(x, target=[0, 1, 2])
    with pytest.raises(InvalidInputError, match="unknown method"):
        get_method("softpullbak")
    with pytest.raises(UnsupportedModelError, match="TorchScript"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        SoftPullback(torch.jit.script(model))
    if torch.cuda.is_available():  # pragma: no cover - CI has no GPU
        with pytest.raises(InvalidInputError, match="move one"):
            sp.attribute(x.cuda(), target=0)


def test_seeded_methods_are_deterministic_and_leave_global_rng_alone():
    model = small_net()
    x = torch.rand(1, 3, 8, 8)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = SmoothPullback(model, nt_samples=4, seed=1).attribute(x, target=0)
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(a, SmoothPullback(model, nt_samples=4, seed=1).attribute(x, target=0))
    assert not torch.allclose(a, SmoothPullback(model, nt_samples=4, seed=2).attribute(x, target=0))
    # pullback and gradient versions differ (the mode is really on)
    assert not torch.allclose(a, SmoothGrad(model, nt_samples=4, seed=1).attribute(x, target=0))


def test_fusion_pullback_noise_goes_on_a_copy():
    model = small_net()
    before = [p.detach().clone() for p in model.parameters()]
    FusionPullback(model, model_samples=2, nt_samples=2).attribute(torch.rand(1, 3, 8, 8), target=0)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_runs_on_the_default_model(lite0, photos, name):
    fast = {
        "SmoothPullback": {"nt_samples": 2},
        "SmoothGrad": {"nt_samples": 2},
        "FusionPullback": {"model_samples": 2, "nt_samples": 1},
        "FusionGrad": {"model_samples": 2, "nt_samples": 1},
        "IntegratedPullbacks": {"n_steps": 4},
        "IntegratedGradients": {"n_steps": 4},
        "PullbackShap": {"n_samples": 2},
        "GradientShap": {"n_samples": 2},
        "PullbackAscent": {"steps": 2},
        "GradientAscent": {"steps": 2},
    }
    x = photos[:1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum's own deprecation chatter
        a = get_method(name)(lite0.model, **fast.get(name, {})).attribute(x, target=CAT)
    assert a.shape == x.shape and torch.isfinite(a).all() and a.abs().sum() > 0
    if counterpart(name) is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            b = get_method(counterpart(name))(lite0.model, **fast.get(counterpart(name), {})).attribute(x, target=CAT)
        assert not torch.allclose(a, b), f"{name} equals its gradient counterpart"


def test_usable_inside_captum_noise_tunnel_and_quantus(lite0, photos):
    from captum.attr import NoiseTunnel

    model = small_net()
    x = torch.rand(2, 3, 8, 8)
    torch.manual_seed(0)
    nt = NoiseTunnel(SoftPullback(model)).attribute(x, nt_type="smoothgrad", nt_samples=3, stdevs=0.1, target=1)
    torch.manual_seed(0)
    ours = SmoothPullback(model, nt_samples=3, stdevs=0.1, seed=None).attribute(x, target=1)
    torch.testing.assert_close(nt, ours, rtol=1e-4, atol=1e-6)

    a = quantus_explain_func(model, x.numpy(), np.array([1, 2]), method="SoftPullback")
    assert isinstance(a, np.ndarray) and a.shape == x.shape
    np.testing.assert_allclose(a[1:], SoftPullback(model).attribute(x[1:], target=2).numpy(), rtol=1e-4, atol=1e-9)

    import quantus

    scores = quantus.MaxSensitivity(nr_samples=2, disable_warnings=True)(
        model=model,
        x_batch=x.numpy(),
        y_batch=np.array([1, 2]),
        a_batch=None,
        explain_func=quantus_explain_func,
        explain_func_kwargs={"method": "SoftPullback"},
        device="cpu",
    )
    assert len(scores) == 2 and all(np.isfinite(scores))


def test_accepted_settings_include_captum_method_settings():
    from semantic_pullbacks.methods import accepted_settings

    assert {"domain", "n_samples", "temperatures", "seed"} <= accepted_settings("PullbackShap")
    assert {"steps", "alpha", "clip", "domain", "temperatures"} <= accepted_settings("PullbackAscent")
    assert "temperatures" not in accepted_settings("Gradient")
