"""Agreement with Quantus: same inputs, same perturbations, same seeds.

Quantus draws its noise from numpy's global RNG. Each test seeds numpy, draws the same numbers in the same
order Quantus will, and hands them to our metric through its ``sampler`` (or explicit masks / off-targets), so
the two computations see identical perturbations and must agree to float tolerance.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from semantic_pullbacks.metrics import (
    FaithfulnessCorrelation,
    FaithfulnessEstimate,
    Focus,
    Infidelity,
    MaxSensitivity,
    ModelParameterRandomisation,
    MonotonicityCorrelation,
    RandomLogit,
    as_explainer,
)
from small_methods import small_net

quantus = pytest.importorskip("quantus")
torch.set_num_threads(1)
B, H = 3, 8


def gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    model(x).gather(1, y[:, None]).sum().backward()
    return x.grad.detach()


def quantus_gradient(model, inputs, targets, **kwargs):
    """The same explainer in Quantus's calling convention (numpy in, numpy out)."""
    x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    return gradient(model, x, y).numpy()


def data(channels: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, channels, H, H, generator=g) * 2 - 1
    y = torch.tensor([0, 1, 3])
    return x, y


def replay(chunks: list[np.ndarray]):
    """A sampler returning pre-drawn numpy noise, one chunk per call, checking the requested shape."""
    queue = list(chunks)

    def sampler(shape, generator, device, dtype):
        chunk = queue.pop(0)
        assert chunk.size == int(np.prod(shape)), (chunk.shape, shape)
        return torch.as_tensor(chunk.reshape(shape), device=device, dtype=dtype)

    return sampler


def run_quantus(metric, model, x, y, a, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return metric(
            model=model,
            x_batch=x.numpy(),
            y_batch=y.numpy(),
            a_batch=None if a is None else a.numpy(),
            device="cpu",
            channel_first=True,
            **kwargs,
        )


def close(ours: torch.Tensor, theirs, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    theirs_t = torch.as_tensor(np.asarray(theirs, dtype=np.float64))
    assert torch.allclose(ours.double(), theirs_t, rtol=rtol, atol=atol), (ours, theirs_t)


@pytest.mark.parametrize("sizes", [(4,), (4, 2)])
def test_infidelity_matches_quantus_accumulated_patches(sizes):
    model, (x, y) = small_net(), data()
    a = gradient(model, x, y)
    draws = 2
    q = quantus.Infidelity(
        perturb_baseline="uniform",
        perturb_func_kwargs={"uniform_low": -1.0, "uniform_high": 1.0},
        perturb_patch_sizes=list(sizes),
        n_perturb_samples=draws,
        abs=False,
        normalise=False,
        disable_warnings=True,
        return_aggregate=False,
    )
    np.random.seed(7)
    theirs = run_quantus(q, model, x, y, a)
    # Quantus draws one value per sample and patch, looping draws > sizes > patches.
    np.random.seed(7)
    n_patches = [(H // s) ** 2 for s in sizes]
    per_size: dict[int, list[np.ndarray]] = {s: [] for s in sizes}
    for _ in range(draws):
        for s, p in zip(sizes, n_patches, strict=True):
            per_size[s].append(np.random.uniform(-1.0, 1.0, size=(p, B)))
    sampler = replay([np.stack(per_size[s]) for s in sizes])
    ours = Infidelity(
        patch_sizes=sizes,
        n_draws=draws,
        accumulate=True,
        fill="constant",
        optimal_scaling=False,
        size_weighting="equal",
        sampler=sampler,
    )(model, x, y, attributions=a)
    close(ours, theirs)


def test_faithfulness_correlation_matches_quantus_random_subsets():
    model, (x, y) = small_net(channels=1), data(channels=1)
    a = gradient(model, x, y)
    runs, subset = 6, 10
    q = quantus.FaithfulnessCorrelation(
        nr_runs=runs,
        subset_size=subset,
        perturb_baseline=0.0,
        abs=True,
        normalise=False,
        disable_warnings=True,
        return_aggregate=False,
    )
    np.random.seed(3)
    theirs = run_quantus(q, model, x, y, a)
    np.random.seed(3)
    masks = np.zeros((B, runs, 1, H * H), dtype=bool)
    for r in range(runs):
        for b in range(B):
            masks[b, r, 0, np.random.choice(H * H, subset, replace=False)] = True
    ours = FaithfulnessCorrelation(baseline=0.0, abs=True)(
        model, x, y, attributions=a, masks=torch.as_tensor(masks.reshape(B, runs, 1, H, H))
    )
    close(ours, theirs)


def test_faithfulness_estimate_matches_quantus():
    model, (x, y) = small_net(), data()
    a = gradient(model, x, y)
    q = quantus.FaithfulnessEstimate(
        features_in_step=16,
        perturb_baseline=0.0,
        abs=True,
        normalise=False,
        disable_warnings=True,
        return_aggregate=False,
    )
    theirs = run_quantus(q, model, x, y, a)
    ours = FaithfulnessEstimate(features_in_step=16, baseline=0.0, abs=True)(model, x, y, attributions=a)
    close(ours, theirs)


def test_monotonicity_correlation_matches_quantus():
    model, (x, y) = small_net(), data()
    a = gradient(model, x, y)
    samples, step = 3, 16
    q = quantus.MonotonicityCorrelation(
        nr_samples=samples,
        features_in_step=step,
        perturb_baseline="uniform",
        perturb_func_kwargs={"uniform_low": -1.0, "uniform_high": 1.0},
        abs=True,
        normalise=False,
        disable_warnings=True,
        return_aggregate=False,
    )
    np.random.seed(5)
    theirs = run_quantus(q, model, x, y, a)
    np.random.seed(5)
    n_steps = x[0].numel() // step
    noise = np.random.uniform(-1.0, 1.0, size=(n_steps, samples, B))
    ours = MonotonicityCorrelation(
        features_in_step=step, nr_samples=samples, fill="constant", abs=True, sampler=replay(list(noise))
    )(model, x, y, attributions=a)
    close(ours, theirs)


def test_max_sensitivity_matches_quantus():
    model, (x, y) = small_net(), data()
    a = gradient(model, x, y)
    samples = 4
    q = quantus.MaxSensitivity(nr_samples=samples, lower_bound=0.02, disable_warnings=True, return_aggregate=False)
    np.random.seed(11)
    theirs = run_quantus(q, model, x, y, a, explain_func=quantus_gradient)
    np.random.seed(11)
    noise = np.random.uniform(-0.02, 0.02, size=(samples, B, x[0].numel()))
    ours = MaxSensitivity(nr_samples=samples, radius=0.02, sampler=replay([noise]))(
        model, x, y, attributions=a, explain_func=gradient
    )
    close(ours, theirs, rtol=1e-3)


def test_random_logit_matches_quantus():
    classes = 4
    model, (x, y) = small_net(classes=classes), data()
    a = gradient(model, x, y)
    q = quantus.RandomLogit(
        num_classes=classes,
        seed=42,
        similarity_func=quantus.similarity_func.correlation_pearson,
        abs=False,
        normalise=False,
        disable_warnings=True,
        return_aggregate=False,
    )
    theirs = run_quantus(q, model, x, y, a, explain_func=quantus_gradient)
    # Quantus's draw of the off-class: an index into the sorted list of the other classes.
    rng = np.random.RandomState(42)
    index = rng.randint(0, classes - 1, B)
    off = torch.tensor([[c for c in range(classes) if c != t][i] for t, i in zip(y.tolist(), index, strict=True)])
    ours = RandomLogit(similarity="pearson")(model, x, y, attributions=a, explain_func=gradient, off_targets=off)
    close(ours, theirs)


def test_focus_matches_quantus():
    model, (x, y) = small_net(), data()
    a = gradient(model, x, y)
    positions = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 0, 1]], dtype=torch.bool)
    q = quantus.Focus(disable_warnings=True, return_aggregate=False)
    relevance = (x * a).sum(1, keepdim=True)  # the paper's relevance, precomputed for Quantus
    theirs = run_quantus(q, model, x, y, relevance, custom_batch=[tuple(p) for p in positions.int().tolist()])
    ours = Focus()(model, x, y, attributions=a, positions=positions)
    close(ours, theirs)


def test_model_parameter_randomisation_matches_quantus_per_layer():
    model, (x, y) = small_net(), data()
    a = gradient(model, x, y)
    q = quantus.ModelParameterRandomisation(
        layer_order="top_down", seed=42, disable_warnings=True, return_aggregate=False
    )
    state = torch.get_rng_state()
    theirs = run_quantus(q, model, x, y, a, explain_func=quantus_gradient)
    torch.set_rng_state(state)
    # Quantus seeds every layer's reset with seed + 1 (through the global RNG); ours uses `seed` in a fork.
    ours = ModelParameterRandomisation(seed=43).layer_scores(model, x, y, attributions=a, explain_func=gradient)
    assert list(ours) == [k for k in theirs if k != "original"]
    for name, scores in ours.items():
        close(scores, theirs[name])
    # Quantus's "average correlation" also averages in its "original" entry; ours averages randomised
    # layers only.
    mean = ModelParameterRandomisation(seed=43)(model, x, y, attributions=a, explain_func=gradient)
    close(mean, np.mean([theirs[k] for k in ours], axis=0))


# ----------------------------------------------------------------------------- Quantus's call form
def quantus_form(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor | None = None, **kwargs):
    return {"x_batch": x.numpy(), "y_batch": y.numpy(), "a_batch": None if a is None else a.numpy(), **kwargs}


@pytest.mark.parametrize(
    "metric",
    [
        Infidelity(patch_sizes=(4,), n_draws=2),
        FaithfulnessCorrelation(patch_size=4),
        FaithfulnessEstimate(features_in_step=16),
        MonotonicityCorrelation(features_in_step=16, nr_samples=2),
        MaxSensitivity(nr_samples=2),
        RandomLogit(),
    ],
    ids=lambda m: m.name,
)
def test_our_metrics_take_quantus_call_form_and_return_what_quantus_returns(metric):
    model, (x, y) = small_net(), data()
    a = gradient(model, x, y)
    native = metric(model, x, y, attributions=a, explain_func=gradient)
    scores = metric(model=model, explain_func=quantus_gradient, **quantus_form(x, y, a, device="cpu"))
    assert type(scores) is list and len(scores) == B and all(type(s) is float for s in scores)
    close(native, scores)
    # channel-last images, Quantus's other layout, are recognised as Quantus does
    last = {"x_batch": x.permute(0, 2, 3, 1).numpy(), "y_batch": y.numpy(), "a_batch": a.numpy()}
    close(native, metric(model=model, explain_func=quantus_gradient, channel_first=None, **last))
    # no attributions: they come from explain_func, called with numpy arrays as Quantus calls it
    close(native, metric(model=model, explain_func=quantus_gradient, **quantus_form(x, y)))


def test_quantus_evaluate_runs_our_metrics_on_our_explanations():
    """A Quantus script: ``quantus.evaluate`` with our metric objects and our explain_func."""
    from semantic_pullbacks.methods import SoftPullback, quantus_explain_func

    model, (x, y) = small_net(), data()
    metrics = {"infidelity": Infidelity(patch_sizes=(4,), n_draws=2), "max_sensitivity": MaxSensitivity(nr_samples=2)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = quantus.evaluate(
            metrics=metrics,
            xai_methods={"SoftPullback": quantus_explain_func},
            model=model,
            x_batch=x.numpy(),
            y_batch=y.numpy(),
            explain_func_kwargs={},
            call_kwargs={"set": {"device": "cpu"}},
        )
    a = SoftPullback(model).attribute(x, target=y)
    explain = lambda m, xs, ys: SoftPullback(m).attribute(xs, target=ys)
    for name, metric in metrics.items():
        close(metric(model, x, y, attributions=a, explain_func=explain), results["SoftPullback"][name])


def test_model_parameter_randomisation_in_quantus_form_returns_quantus_layers():
    model, (x, y) = small_net(), data()
    a = gradient(model, x, y)
    q = quantus.ModelParameterRandomisation(layer_order="top_down", seed=42, disable_warnings=True)
    state = torch.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = q(model=model, explain_func=quantus_gradient, **quantus_form(x, y, a, device="cpu"))
    torch.set_rng_state(state)
    ours = ModelParameterRandomisation(seed=43)(model=model, explain_func=quantus_gradient, **quantus_form(x, y, a))
    assert list(ours) == list(theirs)  # "original" first, then each layer from the top
    for name, scores in theirs.items():
        close(torch.tensor(ours[name]), scores)


def test_focus_takes_quantus_custom_batch_as_positions():
    model, (x, y) = small_net(), data()
    a = gradient(model, x, y)
    positions = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 0, 1]], dtype=torch.bool)
    custom = [tuple(p) for p in positions.int().tolist()]
    ours = Focus()(model=model, custom_batch=custom, **quantus_form(x, y, a))
    close(Focus()(model, x, y, attributions=a, positions=positions), ours)


def test_unknown_keywords_are_refused_in_both_call_forms():
    from semantic_pullbacks.errors import UnexpectedArgumentError

    model, (x, y) = small_net(), data()
    a = gradient(model, x, y)
    with pytest.raises(UnexpectedArgumentError, match="patch_size"):
        Infidelity()(model, x, y, attributions=a, patch_size=3)  # a constructor setting given to the call
    with pytest.raises(TypeError, match="positions"):  # our typed error is also Python's TypeError
        Infidelity()(model, x, y, attributions=a, positions=torch.ones(3, 4))
    with pytest.raises(UnexpectedArgumentError, match="normalise"):
        MaxSensitivity()(model=model, explain_func=quantus_gradient, normalise=True, **quantus_form(x, y, a))
    with pytest.raises(UnexpectedArgumentError, match="model_predict_kwargs"):
        Infidelity()(model=model, model_predict_kwargs={"t": 1}, **quantus_form(x, y, a))


def test_quantus_explain_func_keeps_the_callers_dtype():
    from semantic_pullbacks.methods import SoftPullback, quantus_explain_func

    model, (x, y) = small_net(), data()
    single = quantus_explain_func(model, x.numpy(), y.numpy())
    assert single.dtype == np.float32
    wide = quantus_explain_func(model, x.double().numpy(), y.numpy())  # numpy's default float64 inputs
    assert wide.dtype == np.float64
    np.testing.assert_allclose(wide, single, rtol=1e-6, atol=1e-7)  # the float32 model ran in its own dtype
    model64 = small_net(dtype=torch.float64)
    exact = quantus_explain_func(model64, x.double().numpy(), y.numpy())
    assert exact.dtype == np.float64
    np.testing.assert_array_equal(exact, SoftPullback(model64).attribute(x.double(), target=y).numpy())


def test_quantus_form_passes_explain_func_kwargs_to_a_captum_method():
    """A Captum method object as Quantus's explain_func: explain_func_kwargs reach ``.attribute`` (Saliency's
    default is abs=True; abs=False must give the signed gradient's scores, not the default's)."""
    from captum.attr import Saliency

    model, (x, y) = small_net(), data()
    metric = RandomLogit()
    signed = metric(model, x, y, explain_func=as_explainer(Saliency(model), abs=False))
    absolute = metric(model, x, y, explain_func=as_explainer(Saliency(model)))
    assert not torch.allclose(signed, absolute)
    form = quantus_form(x, y)
    close(signed, metric(model=model, explain_func=Saliency(model), explain_func_kwargs={"abs": False}, **form))
    close(absolute, metric(model=model, explain_func=Saliency(model), **form))
