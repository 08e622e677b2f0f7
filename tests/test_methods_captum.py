"""Where a name matches Captum's, the call and the answer do too: checked against Captum itself."""

from __future__ import annotations

import captum.attr as ca
import numpy as np
import pytest
import torch
from torch import nn

from semantic_pullbacks import InvalidInputError, UnknownClassError
from semantic_pullbacks.errors import UnexpectedArgumentError
from semantic_pullbacks.methods import (
    DeepLift,
    Gradient,
    GradientShap,
    GuidedGradCam,
    IntegratedGradients,
    IntegratedPullbacks,
    PullbackShap,
    SmoothGrad,
    SoftPullback,
)
from small_methods import small_net

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Captum's notes about hooks and requires_grad


class Grid(nn.Module):
    """A model with a (B, 3, 4) output, the case Captum's tuple targets index."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x)).mean((2, 3)).reshape(-1, 3, 4)


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 3, 8, 8, generator=g) * 2 - 1
    baselines = torch.rand(3, 3, 8, 8, generator=g) * 0.2
    return x, baselines, torch.tensor([0, 3, 4])


def test_tuple_targets_index_a_multidimensional_output_as_in_captum(data):
    x, baselines, _ = data
    model = Grid().eval()
    ours = Gradient(model).attribute(x, target=(1, 2))
    torch.testing.assert_close(ours, ca.Saliency(model).attribute(x, target=(1, 2), abs=False))
    per_sample = [(0, 1), (2, 3), (1, 0)]
    torch.testing.assert_close(
        Gradient(model).attribute(x, target=per_sample), ca.Saliency(model).attribute(x, target=per_sample, abs=False)
    )
    torch.testing.assert_close(
        IntegratedGradients(model).attribute(x, baselines, target=(2, 3), n_steps=6),
        ca.IntegratedGradients(model).attribute(x, baselines, target=(2, 3), n_steps=6),
    )
    # the pullback explains the same element: the one a callable target would pick
    torch.testing.assert_close(
        SoftPullback(model).attribute(x, target=(1, 2)), SoftPullback(model).attribute(x, target=lambda o: o[:, 1, 2])
    )
    with pytest.raises(InvalidInputError, match="2 indices"):
        Gradient(model).attribute(x, target=(1,))  # a tuple is an element index, not a list of classes
    with pytest.raises(UnknownClassError, match="out of range"):
        Gradient(model).attribute(x, target=(3, 0))


def test_integrated_gradients_takes_positional_baselines_and_returns_convergence_delta(data):
    x, baselines, y = data
    model = small_net()
    ours, delta = IntegratedGradients(model).attribute(x, baselines, y, n_steps=8, return_convergence_delta=True)
    theirs, their_delta = ca.IntegratedGradients(model).attribute(
        x, baselines, y, n_steps=8, return_convergence_delta=True
    )
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(delta, their_delta)
    assert delta.shape == (3,) and not ours.requires_grad

    soft, soft_delta = IntegratedPullbacks(model).attribute(x, baselines, y, n_steps=8, return_convergence_delta=True)
    assert soft.shape == x.shape and soft_delta.shape == (3,) and torch.isfinite(soft_delta).all()
    # the delta is Captum's completeness check: sum of attributions minus the change of the target output
    with torch.no_grad():
        change = model(x).gather(1, y[:, None]) - model(baselines).gather(1, y[:, None])
    torch.testing.assert_close(soft_delta, soft.flatten(1).sum(1) - change.squeeze(1), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(soft_delta, delta)  # the pullback path integral is not the gradient's

    # inside Captum's NoiseTunnel, as Captum's own IG is
    torch.manual_seed(5)
    nt, nt_delta = ca.NoiseTunnel(IntegratedGradients(model)).attribute(
        x, nt_samples=2, stdevs=0.1, baselines=baselines, target=y, n_steps=4, return_convergence_delta=True
    )
    torch.manual_seed(5)
    ref, ref_delta = ca.NoiseTunnel(ca.IntegratedGradients(model)).attribute(
        x, nt_samples=2, stdevs=0.1, baselines=baselines, target=y, n_steps=4, return_convergence_delta=True
    )
    torch.testing.assert_close(nt, ref)
    torch.testing.assert_close(nt_delta, ref_delta)


def test_deeplift_and_gradient_shap_match_captum_with_delta(data):
    x, baselines, y = data
    model = small_net()
    ours, delta = DeepLift(model).attribute(x, baselines, y, return_convergence_delta=True)
    theirs, their_delta = ca.DeepLift(model).attribute(x, baselines, y, return_convergence_delta=True)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(delta, their_delta)

    # GradientShap draws from torch's and numpy's global generators; seed=3 means both are seeded with 3
    ours, delta = GradientShap(model, seed=3).attribute(x, baselines, 4, 0.1, y, return_convergence_delta=True)
    torch.manual_seed(3)
    np.random.seed(3)
    theirs, their_delta = ca.GradientShap(model).attribute(
        x, baselines, n_samples=4, stdevs=0.1, target=y, return_convergence_delta=True
    )
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(delta, their_delta)
    assert delta.shape == (3 * 4,)
    soft = PullbackShap(model, seed=3).attribute(x, baselines, 4, 0.1, y)
    assert soft.shape == x.shape and not torch.allclose(soft, ours)


def test_guided_grad_cam_takes_captum_argument_order(data):
    x, _, y = data
    model = small_net()
    layer = model[4]  # the last convolution
    torch.testing.assert_close(
        GuidedGradCam(model, layer).attribute(x, target=y), ca.GuidedGradCam(model, layer).attribute(x, target=y)
    )
    assert GuidedGradCam(model).layer is layer  # default: the last convolution
    with pytest.raises(InvalidInputError, match="GuidedGradCam\\(model, layer\\)"):
        GuidedGradCam(model, {"relu": 0.5})  # the old order, temperatures second: refused, not misread
    with pytest.raises(InvalidInputError, match="not a module of the model"):
        GuidedGradCam(model, small_net()[0])


def test_stochastic_methods_draw_fresh_noise_per_call_unless_seeded(data):
    x, baselines, y = data
    model = small_net()
    smooth = SmoothGrad(model, nt_samples=3)
    assert not torch.equal(smooth.attribute(x, target=y), smooth.attribute(x, target=y))
    # unseeded, the noise comes from the global generators, as in Captum: seeding them reproduces a call
    torch.manual_seed(11)
    a = smooth.attribute(x, target=y)
    torch.manual_seed(11)
    torch.testing.assert_close(a, smooth.attribute(x, target=y))

    torch.manual_seed(0)
    np.random.seed(0)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    shap = GradientShap(model, n_samples=3, seed=7)
    first = shap.attribute(x, baselines, target=y)
    np.random.seed(123)  # GradientShap's draws were numpy's: a seeded call must not depend on numpy's state
    torch.testing.assert_close(first, shap.attribute(x, baselines, target=y))
    np.random.set_state(numpy_state)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])
    assert not torch.allclose(first, GradientShap(model, n_samples=3, seed=8).attribute(x, baselines, target=y))


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (IntegratedGradients, ca.IntegratedGradients),
        (IntegratedPullbacks, ca.IntegratedGradients),
        (GradientShap, ca.GradientShap),
        (PullbackShap, ca.GradientShap),
        (DeepLift, ca.DeepLift),
    ],
)
def test_attribute_has_captums_parameters_in_captums_order(ours, theirs):
    import inspect

    signature = inspect.signature(ours.attribute)
    assert list(signature.parameters) == list(inspect.signature(theirs.attribute).parameters)
    assert signature.parameters["return_convergence_delta"].default is False
    # every setting defaults to None: the constructor's value, which the constructor's own defaults fill
    assert all(
        p.default is None
        for n, p in signature.parameters.items()
        if n not in ("self", "inputs", "return_convergence_delta")
    )


def test_unknown_arguments_are_refused(data):
    x, _, y = data
    model = small_net()
    with pytest.raises(UnexpectedArgumentError, match="n_stepz"):
        IntegratedGradients(model, n_stepz=3)
    with pytest.raises(UnexpectedArgumentError, match="return_convergence_delta"):
        SmoothGrad(model, nt_samples=2).attribute(x, target=y, return_convergence_delta=True)
    with pytest.raises(UnexpectedArgumentError, match=r"n_stepz.*it takes \(inputs, baselines, target"):
        IntegratedGradients(model).attribute(x, target=y, n_stepz=3)
    with pytest.raises(UnexpectedArgumentError, match="too many positional"):
        DeepLift(model).attribute(x, None, y, None, False, None, "one too many")
    with pytest.raises(UnexpectedArgumentError, match="returns maps only"):
        IntegratedGradients(model).attribute_targets(x, [0, 1], return_convergence_delta=True)


def test_the_evaluation_runner_seeds_every_stochastic_method():
    """Fresh randomness is the default now; the runner stays reproducible because it passes its seed."""
    from semantic_pullbacks.engine import Temperatures
    from semantic_pullbacks.evaluation.specs import MethodSpec
    from semantic_pullbacks.methods import METHODS

    for name, cls in METHODS.items():
        if cls.stochastic:
            settings = MethodSpec.of(name).resolved(temperatures=Temperatures(), ascent={}, seed=7, domain=(-1.0, 1.0))
            assert settings["seed"] == 7, name
