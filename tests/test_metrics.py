"""Metrics on toy models with known answers, slow loop references, bad inputs, determinism."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from semantic_pullbacks.errors import InvalidInputError
from semantic_pullbacks.metrics import (
    PAPER_SUITE,
    FaithfulnessCorrelation,
    FaithfulnessEstimate,
    Focus,
    Infidelity,
    MaxSensitivity,
    ModelParameterRandomisation,
    MonotonicityCorrelation,
    RandomLogit,
    ZeroAttributionWarning,
    as_explainer,
    get_metric,
    list_metrics,
    make_mosaics,
)
from semantic_pullbacks.metrics.perturbations import patch_masks
from semantic_pullbacks.metrics.statistics import rank, spearman
from small_methods import small_net

torch.set_num_threads(1)


class Linear(nn.Module):
    """f(x) = W x (flattened): its exact attribution for class c is W_c ⊙ x."""

    def __init__(self, shape: tuple[int, ...], classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.rand(classes, *shape, generator=g) + 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.flatten(1).T


def exact(model: Linear, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """w ⊙ x: exact for removal to a zero baseline (the drop over a patch is the patch's sum of w ⊙ x)."""
    return model.weight[y].detach() * x


def weights(model: Linear, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """w: exact for infidelity, whose a = Σ attr·(x − x̃) equals f(x) − f(x̃) = w·(x − x̃) for any x̃."""
    return model.weight[y].detach().expand_as(x).clone()


def gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    model(x).gather(1, y[:, None]).sum().backward()
    return x.grad.detach()


@pytest.fixture
def linear_case() -> tuple[Linear, torch.Tensor, torch.Tensor]:
    model = Linear((1, 8, 8))
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1, 8, 8, generator=g) + 0.05  # positive inputs: w ⊙ x >= 0, so |attr| = attr
    return model, x, torch.tensor([0, 1, 2])


# ----------------------------------------------------------------------------- known answers
@pytest.mark.parametrize("accumulate", [True, False])
@pytest.mark.parametrize("fill", ["constant", "pixel"])
def test_infidelity_zero_for_exact_linear_attribution(linear_case, accumulate, fill):
    model, x, y = linear_case
    metric = Infidelity(patch_sizes=(4, 2), n_draws=2, accumulate=accumulate, fill=fill)
    exact_scores = metric(model, x, y, attributions=weights(model, x, y))
    assert torch.allclose(exact_scores, torch.zeros(3), atol=1e-9)
    # scale invariance from optimal scaling
    assert torch.allclose(metric(model, x, y, attributions=7 * weights(model, x, y)), exact_scores, atol=1e-9)
    noisy = metric(model, x, y, attributions=torch.rand(x.shape, generator=torch.Generator().manual_seed(3)))
    assert bool((noisy > 1e-4).all())


def test_infidelity_without_scaling_penalises_scale(linear_case):
    model, x, y = linear_case
    metric = Infidelity(patch_sizes=(4,), n_draws=1, optimal_scaling=False)
    assert torch.allclose(metric(model, x, y, attributions=weights(model, x, y)), torch.zeros(3), atol=1e-9)
    assert bool((metric(model, x, y, attributions=2 * weights(model, x, y)) > 1e-3).all())


def test_faithfulness_correlation_one_for_exact_linear_attribution(linear_case):
    model, x, y = linear_case
    metric = FaithfulnessCorrelation(patch_size=2)
    assert torch.allclose(metric(model, x, y, attributions=exact(model, x, y)), torch.ones(3), atol=1e-5)
    rnd = metric(model, x, y, attributions=torch.rand(x.shape, generator=torch.Generator().manual_seed(4)))
    assert bool((rnd < 0.9).all())


def test_faithfulness_estimate_one_for_exact_linear_attribution(linear_case):
    model, x, y = linear_case
    scores = FaithfulnessEstimate(features_in_step=4)(model, x, y, attributions=exact(model, x, y))
    assert torch.allclose(scores, torch.ones(3), atol=1e-5)


def test_focus_is_one_when_relevance_is_inside_target_quadrants():
    x = torch.rand(2, 3, 8, 8) + 0.1
    positions = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]], dtype=torch.bool)
    attr = torch.zeros_like(x)
    attr[0, :, :4, :4] = 1.0
    attr[0, :, 4:, 4:] = 2.0
    attr[0, :, :4, 4:] = -5.0  # negative relevance outside: ignored
    attr[1, :, :4, 4:] = 1.0
    scores = Focus()(nn.Identity(), x, torch.tensor([0, 0]), attributions=attr, positions=positions)
    assert torch.allclose(scores, torch.ones(2))
    half = Focus()(nn.Identity(), x, torch.tensor([0, 0]), attributions=torch.ones_like(x), positions=positions)
    assert bool(((half > 0.2) & (half < 0.8)).all())


def test_make_mosaics_layout():
    images = torch.stack([torch.full((1, 8, 8), float(i)) for i in range(6)])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    m = make_mosaics(images, labels, n=5, seed=3)
    assert m.images.shape == (5, 1, 8, 8)
    assert bool((m.positions.sum(1) == 2).all())
    for i in range(5):
        quads = [
            m.images[i, 0, :4, :4],
            m.images[i, 0, :4, 4:],
            m.images[i, 0, 4:, :4],
            m.images[i, 0, 4:, 4:],
        ]
        for q, tile in enumerate(quads):
            src = int(m.sources[i, q])
            assert torch.allclose(tile, torch.full_like(tile, float(src)))
            assert bool(labels[src] == m.targets[i]) == bool(m.positions[i, q])
        distractor_classes = labels[m.sources[i][~m.positions[i]]]
        assert distractor_classes.unique().numel() == 2
    again = make_mosaics(images, labels, n=5, seed=3)
    assert torch.equal(again.images, m.images) and torch.equal(again.positions, m.positions)


def test_random_logit_linear_model_and_explicit_off_targets(linear_case):
    model, x, y = linear_case
    explain = lambda m, inp, t: exact(model, inp, t)
    scores = RandomLogit(seed=1)(model, x, y, explain_func=explain)
    off = RandomLogit(seed=1).off_targets(y, 3)
    assert bool((off != y).all())
    expected = torch.stack(
        [
            torch.corrcoef(torch.stack([exact(model, x, y)[i].flatten(), exact(model, x, off)[i].flatten()]))[0, 1]
            for i in range(3)
        ]
    )
    assert torch.allclose(scores, expected, atol=1e-5)
    same_map = RandomLogit()(model, x, y, explain_func=lambda m, inp, t: inp.clone())
    assert torch.allclose(same_map, torch.ones(3), atol=1e-5)


def test_max_sensitivity_zero_for_input_independent_explainer(linear_case):
    model, x, y = linear_case
    constant = MaxSensitivity(nr_samples=3)(model, x, y, explain_func=lambda m, inp, t: model.weight[t].detach())
    assert torch.allclose(constant, torch.zeros(3))
    # input x gradient of a linear model: ‖w ⊙ u‖/‖w ⊙ x‖ <= radius·max|w| / ...: small but positive
    ixg = MaxSensitivity(nr_samples=3)(model, x, y, explain_func=lambda m, inp, t: exact(model, inp, t))
    assert bool(((ixg > 0) & (ixg < 0.2)).all())


def test_mprt_leaves_model_untouched_and_detects_randomisation():
    model = small_net()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(2, 3, 16, 16), torch.tensor([0, 1])
    rng_before = torch.get_rng_state()
    metric = ModelParameterRandomisation(seed=5)
    layers = metric.layer_scores(model, x, y, explain_func=gradient)
    assert list(layers) == ["8", "4", "1", "0"]  # top-down: every layer with parameters (linear, conv, BN, conv)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng_before, torch.get_rng_state())
    scores = metric(model, x, y, explain_func=gradient)
    assert torch.allclose(scores, torch.stack(list(layers.values())).mean(0), equal_nan=True)
    insensitive = metric(model, x, y, explain_func=lambda m, inp, t: inp.clone())
    assert torch.allclose(insensitive, torch.ones(2))


def test_monotonicity_runs_and_prefers_exact_attribution(linear_case):
    model, x, y = linear_case
    metric = MonotonicityCorrelation(features_in_step=8, nr_samples=4, softmax=False)
    good = metric(model, x, y, attributions=exact(model, x, y))
    assert good.shape == (3,) and bool((good > 0.5).all())


# ----------------------------------------------------------------------------- slow references
def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def test_patch_masks_against_loops():
    for h, w, p, s in [(8, 8, 4, None), (8, 6, 3, None), (7, 7, 3, 2)]:
        masks = patch_masks(h, w, p, s)
        stride = s or p
        ref = []
        tops = list(range(0, h, stride)) if stride >= p else sorted(set([*range(0, h - p + 1, stride), h - p]))
        lefts = list(range(0, w, stride)) if stride >= p else sorted(set([*range(0, w - p + 1, stride), w - p]))
        for top in tops:
            for left in lefts:
                m = torch.zeros(h, w, dtype=torch.bool)
                m[top : top + p, left : left + p] = True
                ref.append(m)
        assert torch.equal(masks, torch.stack(ref))


def test_faithfulness_correlation_patch_variant_against_loop():
    model = small_net()
    x, y = torch.rand(2, 3, 16, 16) * 2 - 1, torch.tensor([1, 3])
    a = gradient(model, x, y)
    ours = FaithfulnessCorrelation(patch_size=4, batch_size=5)(model, x, y, attributions=a)
    for i in range(2):
        att, drop = [], []
        with torch.no_grad():
            f = model(x[i : i + 1])[0, y[i]]
            for top in range(0, 16, 4):
                for left in range(0, 16, 4):
                    xt = x[i : i + 1].clone()
                    xt[..., top : top + 4, left : left + 4] = 0
                    drop.append(f - model(xt)[0, y[i]])
                    att.append(a[i, :, top : top + 4, left : left + 4].abs().sum())
        assert ours[i].item() == pytest.approx(_pearson(torch.stack(att), torch.stack(drop)), abs=1e-5)


@pytest.mark.parametrize("accumulate", [True, False])
def test_infidelity_patch_variant_against_loop(accumulate):
    model = small_net()
    x, y = torch.rand(2, 3, 16, 16) * 2 - 1, torch.tensor([0, 2])
    a = gradient(model, x, y)
    metric = Infidelity(patch_sizes=(8, 4), n_draws=2, accumulate=accumulate, seed=11, batch_size=7)
    ours = metric(model, x, y, attributions=a)
    gen = torch.Generator().manual_seed(11)
    terms: list[list[tuple[float, float]]] = [[], []]
    for size in (8, 4):
        n_side = 16 // size
        noise = torch.rand((2, n_side * n_side, 2), generator=gen) * 2 - 1
        for d in range(2):
            for i in range(2):
                xt = x[i].clone()
                for p in range(n_side * n_side):
                    top, left = (p // n_side) * size, (p % n_side) * size
                    if not accumulate:
                        xt = x[i].clone()
                    xt[:, top : top + size, left : left + size] = noise[d, p, i]
                    with torch.no_grad():
                        b = model(x[i : i + 1])[0, y[i]] - model(xt[None])[0, y[i]]
                    terms[i].append((float((a[i] * (x[i] - xt)).sum()), float(b)))
    for i in range(2):
        t = torch.tensor(terms[i], dtype=torch.float64)
        beta = (t[:, 0] * t[:, 1]).mean() / t[:, 0].square().mean()
        assert ours[i].item() == pytest.approx(float((beta * t[:, 0] - t[:, 1]).square().mean()), rel=1e-4)


def test_rank_handles_ties_like_average_ranks():
    a = torch.tensor([[3.0, 1.0, 3.0, 2.0]])
    assert torch.equal(rank(a), torch.tensor([[3.5, 1.0, 3.5, 2.0]]))
    assert spearman(a, a).item() == pytest.approx(1.0)


# ----------------------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_typed_errors(linear_case):
    model, x, y = linear_case
    a = exact(model, x, y)
    metric = FaithfulnessCorrelation(patch_size=2)
    with pytest.raises(InvalidInputError, match="attributions must have"):
        metric(model, x, y, attributions=a[:, :, :4])
    with pytest.raises(InvalidInputError, match="NaN or Inf"):
        metric(model, x, y, attributions=a.clone().fill_(float("nan")))
    bad_x = x.clone()
    bad_x[0, 0, 0, 0] = float("inf")
    with pytest.raises(InvalidInputError, match="inputs contain NaN"):
        metric(model, bad_x, y, attributions=a)
    with pytest.raises(InvalidInputError, match="out of range"):
        metric(model, x, torch.tensor([0, 1, 3]), attributions=a)
    with pytest.raises(InvalidInputError, match="targets must have shape"):
        metric(model, x, torch.tensor([0, 1]), attributions=a)
    with pytest.raises(InvalidInputError, match="integer"):
        metric(model, x, torch.tensor([0.0, 1.0, 2.0]), attributions=a)
    with pytest.raises(InvalidInputError, match="attributions or explain_func"):
        metric(model, x, y)
    with pytest.raises(InvalidInputError, match="explain_func"):
        MaxSensitivity()(model, x, y, attributions=a)
    with pytest.raises(InvalidInputError, match="n_draws"):
        Infidelity(n_draws=0)
    with pytest.raises(InvalidInputError, match="positions"):
        Focus()(model, x, y, attributions=a)
    with pytest.raises(ValueError):  # InvalidInputError is a ValueError
        get_metric("nope")


def test_all_zero_attributions_give_nan_with_warning_or_raise(linear_case):
    model, x, y = linear_case
    a = exact(model, x, y)
    a[1] = 0
    with pytest.warns(ZeroAttributionWarning, match=r"samples \[1\]"):
        scores = FaithfulnessCorrelation(patch_size=2)(model, x, y, attributions=a)
    assert torch.isnan(scores[1]) and not bool(torch.isnan(scores[[0, 2]]).any())
    with pytest.raises(InvalidInputError, match="all zero"):
        Infidelity(patch_sizes=(4,), n_draws=1, on_zero_attribution="raise")(model, x, y, attributions=a)


# ----------------------------------------------------------------------------- determinism, API
def test_seeded_metrics_are_deterministic_and_leave_global_rng_alone(linear_case):
    model, x, y = linear_case
    a = exact(model, x, y) + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    state = torch.get_rng_state()
    for make in (
        lambda s: Infidelity(patch_sizes=(4,), n_draws=2, seed=s),
        lambda s: MonotonicityCorrelation(features_in_step=16, nr_samples=3, seed=s),
    ):
        first, second = make(1)(model, x, y, attributions=a), make(1)(model, x, y, attributions=a)
        assert torch.equal(first, second)
        assert not torch.equal(first, make(2)(model, x, y, attributions=a))
    explain = lambda m, inp, t: exact(model, inp, t)
    assert torch.equal(
        MaxSensitivity(seed=3)(model, x, y, explain_func=explain),
        MaxSensitivity(seed=3)(model, x, y, explain_func=explain),
    )
    assert torch.equal(state, torch.get_rng_state())


def test_batch_size_does_not_change_scores(linear_case):
    model, x, y = linear_case
    a = exact(model, x, y) + 0.05
    big = MonotonicityCorrelation(features_in_step=16, nr_samples=3, batch_size=1000)(model, x, y, attributions=a)
    small = MonotonicityCorrelation(features_in_step=16, nr_samples=3, batch_size=5)(model, x, y, attributions=a)
    assert torch.allclose(big, small, atol=1e-6)


def test_as_explainer_adapts_captum_and_rebinds_for_other_models():
    captum = pytest.importorskip("captum.attr")
    model = small_net()
    x, y = torch.rand(2, 3, 16, 16), torch.tensor([0, 1])
    explain = as_explainer(captum.Saliency(model), abs=False)
    assert torch.allclose(explain(model, x, y), gradient(model, x, y))
    other = small_net()
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-1.5)
    assert torch.allclose(explain(other, x, y), gradient(other, x, y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = FaithfulnessCorrelation(patch_size=4)(model, x, y, explain_func=captum.Saliency(model))
    assert scores.shape == (2,)


def test_registry_and_metadata():
    names = list_metrics()
    assert set(PAPER_SUITE) <= set(names) and "model_parameter_randomisation" in names
    assert list_metrics("faithfulness_*") == ["faithfulness_correlation", "faithfulness_estimate"]
    for name in names:
        metric = get_metric(name)
        assert metric.name == name
        assert isinstance(metric.higher_is_better, bool)
        assert metric.category in ("faithfulness", "robustness", "randomisation", "localisation", "complexity")
    assert PAPER_SUITE["infidelity"].resolved_patch_sizes(224, 224) == (112, 56)
    assert Infidelity().resolved_patch_sizes(224, 224) == (112, 56)
    assert get_metric("infidelity", n_draws=2).n_draws == 2


def test_names_imported_from_metrics_base_before_its_split_still_are_the_owners_objects():
    import importlib

    base = importlib.import_module("semantic_pullbacks.metrics.base")
    owners = {
        "template": ("Batch", "Category", "Metric", "ZeroAttributionPolicy", "ZeroAttributionWarning"),
        "explainers": ("Explainer", "as_explainer"),
        "quantus_call": ("QUANTUS_KEYWORDS",),
        "perturbations": ("NoiseSampler", "uniform_sampler"),
        "validation": ("check_attributions", "check_inputs", "check_targets"),
        "batched": ("ScoreStream", "model_outputs", "target_scores"),
        "statistics": ("normalise_by_max", "pearson", "rank", "spearman", "with_nan"),
    }
    for module, names in owners.items():
        owner = importlib.import_module(f"semantic_pullbacks.metrics.{module}")
        for name in names:
            assert getattr(base, name) is getattr(owner, name), name
    assert sorted(base.__all__) == sorted(n for names in owners.values() for n in names)
