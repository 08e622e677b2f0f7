"""One explainer, other models and other threads: re-binding to a randomised copy, and calls from many threads."""

from __future__ import annotations

import sys
import threading

import pytest
import torch
from captum.attr import Saliency

from semantic_pullbacks.methods import (
    Gradient,
    GradientShap,
    GuidedPullbackCam,
    IntegratedPullbacks,
    PullbackAscent,
    PullbackDeepLift,
    SmoothPullback,
    SoftPullback,
)
from semantic_pullbacks.metrics import ModelParameterRandomisation, as_explainer
from small_methods import small_net

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Captum's notes about hooks and requires_grad


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(3)
    return torch.rand(2, 3, 8, 8, generator=g) * 2 - 1, torch.tensor([1, 4])


def test_rebinding_explains_the_other_model_with_the_same_settings(data):
    x, y = data
    model, other = small_net(0), small_net(1)
    for make in (
        lambda m: SoftPullback(m, {"relu": 0.3}),
        lambda m: PullbackAscent(m, steps=2),  # its inner step method follows the model too
        lambda m: GuidedPullbackCam(m, m[4]),  # its layer is found again by name in the other model
        lambda m: IntegratedPullbacks(m, n_steps=4),
    ):
        explainer = make(model)
        before = explainer.attribute(x, target=y)
        rebound = explainer.rebind(other)
        torch.testing.assert_close(rebound.attribute(x, target=y), make(other).attribute(x, target=y))
        torch.testing.assert_close(explainer.attribute(x, target=y), before)  # the original is unchanged
        explainer.forward_func = other  # Captum's way of re-binding
        torch.testing.assert_close(explainer.attribute(x, target=y), make(other).attribute(x, target=y))


def test_model_parameter_randomisation_sees_our_explainers_change(data):
    """Failure 4: the metric re-binds ``forward_func``; our explainers used to keep explaining the trained model,
    so every layer scored a perfect 1.0."""
    x, _ = data
    y = torch.tensor([1, 3])  # classes whose Grad-CAM is not zero on either image: the metric is defined for both
    model = small_net()
    metric = ModelParameterRandomisation(similarity="pearson")
    captum_scores = metric.layer_scores(model, x, y, explain_func=as_explainer(Saliency(model), abs=False))
    ours = metric.layer_scores(model, x, y, explain_func=as_explainer(Gradient(model)))
    assert list(ours) == list(captum_scores)
    for layer, scores in captum_scores.items():
        torch.testing.assert_close(ours[layer], scores)
    assert torch.stack(list(ours.values())).lt(0.9).any()

    for explainer in (SoftPullback(model), PullbackAscent(model, steps=2), GuidedPullbackCam(model)):
        scores = torch.stack(list(metric.layer_scores(model, x, y, explain_func=as_explainer(explainer)).values()))
        assert not torch.allclose(scores, torch.ones_like(scores)), type(explainer).__name__
        assert scores.lt(0.9).any(), type(explainer).__name__


def test_one_explainer_shared_by_threads_gives_the_sequential_maps(data):
    """Failure 12: the Captum-based methods kept the call's target on a shared module, so concurrent calls with
    different targets ran with each other's target."""
    x, _ = data
    model = small_net()
    contrast = lambda out: out[:, 2] - out[:, 3]
    explainers = {
        "ip": IntegratedPullbacks(model, n_steps=3),
        "sp": SoftPullback(model),
        "smooth": SmoothPullback(model, nt_samples=2, seed=0),
        "shap": GradientShap(model, n_samples=2, seed=1),
        "deeplift": PullbackDeepLift(model),
        "cam": GuidedPullbackCam(model),
    }
    jobs = [(name, target) for name in explainers for target in (contrast, 1, (4,))]
    expected = {(name, i): explainers[name].attribute(x, target=t) for i, (name, t) in enumerate(jobs)}
    mismatches: list[str] = []
    errors: list[BaseException] = []

    def work(order: list[int]) -> None:
        try:
            for _ in range(3):
                for i in order:
                    name, target = jobs[i]
                    if not torch.allclose(explainers[name].attribute(x, target=target), expected[(name, i)]):
                        mismatches.append(f"{name} target #{i}")
        except BaseException as error:
            errors.append(error)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to make races show
    try:
        orders = [list(range(len(jobs))), list(reversed(range(len(jobs)))), list(range(1, len(jobs), 2)) * 2]
        threads = [threading.Thread(target=work, args=(order,)) for order in orders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    assert not mismatches, mismatches
