"""The aliasing diagnostic and the top-layer randomisation check: slow references, analytic cases, properties."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn

from semantic_pullbacks.errors import InvalidInputError
from semantic_pullbacks.metrics import (
    Aliasing,
    TopLayerRandomisation,
    ZeroAttributionWarning,
    get_metric,
    period2_share,
)
from semantic_pullbacks.metrics.randomisation import derived_seed
from semantic_pullbacks.metrics.statistics import spearman
from small_methods import small_net

torch.set_num_threads(1)


def slow_share(m: torch.Tensor, cutoff: float) -> float:
    """The definition, one frequency at a time: |sum_yx m[y,x] exp(-2πi(ky·y/H + kx·x/W))|², band by |k/N|."""
    h, w = m.shape
    ys, xs = torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64)
    total = band = 0.0
    for ky in range(-(h // 2), (h + 1) // 2):
        for kx in range(-(w // 2), (w + 1) // 2):
            phase = -2 * math.pi * (ky * ys[:, None] / h + kx * xs[None, :] / w)
            re = (m.double() * torch.cos(phase)).sum().item()
            im = (m.double() * torch.sin(phase)).sum().item()
            energy = re * re + im * im
            total += energy
            if abs(ky / h) > cutoff or abs(kx / w) > cutoff:
                band += energy
    return band / total


def parity(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(-1)^row and (-1)^column as (h, w) maps."""
    return (-1.0) ** torch.arange(h).view(-1, 1).expand(h, w), (-1.0) ** torch.arange(w).view(1, -1).expand(h, w)


@pytest.mark.parametrize("shape,cutoff", [((10, 12), 0.4375), ((16, 32), 0.4375), ((9, 8), 0.3), ((7, 11), 0.0)])
def test_share_matches_the_slow_definition(shape, cutoff):
    m = torch.randn(2, *shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    fast = period2_share(m, cutoff)
    for i in range(2):
        assert fast[i].item() == pytest.approx(slow_share(m[i], cutoff), rel=1e-9, abs=1e-12)


def test_analytic_maps():
    rows, cols = parity(16, 16)
    smooth = torch.ones(16, 16)
    maps = torch.stack([smooth, rows * cols, rows, cols, 3 * smooth + 0.5 * rows * cols])
    share = period2_share(maps)
    # constant: all energy at 0; checkerboard and stripes: all at 0.5 cycles/pixel; a constant c plus a
    # checkerboard e: the two are orthogonal components, so the share is e² / (c² + e²)
    torch.testing.assert_close(share, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.25 / (9 + 0.25)]), atol=1e-6, rtol=0)


def test_white_noise_scores_the_bands_share_of_the_frequency_grid():
    noise = torch.randn(4, 224, 224, generator=torch.Generator().manual_seed(0))
    inside = sum(abs(k) / 224 <= 0.4375 for k in range(-112, 112))  # 197 of 224 frequencies per axis
    expected = 1 - (inside / 224) ** 2  # 0.2266
    assert expected == pytest.approx(0.2266, abs=1e-4)
    assert period2_share(noise).tolist() == pytest.approx([expected] * 4, abs=0.01)


def test_the_adjoint_of_a_stride_2_convolution_leaves_a_checkerboard():
    """Pulling a constant gradient back through a 3×3, stride-2 convolution of ones (circular padding, so the
    pattern is exactly periodic): odd pixels get two kernel taps per axis and even pixels one, so the map is
    p(y)·p(x) with p = 1.5 - 0.5·(-1)^i. Its energy: 2.25² at 0, 0.75² on each axis at 0.5 and 0.25² at
    (0.5, 0.5), so the band holds (2·0.5625 + 0.0625) / 6.25 = 0.19 of it. The gradient's map is the same."""
    conv = nn.Conv2d(3, 1, 3, stride=2, padding=1, padding_mode="circular", bias=False)
    nn.init.ones_(conv.weight)
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    conv(x).sum().backward()
    score = Aliasing()(lambda t: t.flatten(1), x.detach(), 0, attributions=x.grad)
    assert score.item() == pytest.approx(0.19, abs=1e-6)


def test_metric_is_invariant_to_scale_and_sign_and_sums_channels():
    a = torch.randn(3, 3, 20, 20, generator=torch.Generator().manual_seed(1))
    x, model = torch.zeros(3, 3, 20, 20), (lambda t: t.flatten(1))
    base = Aliasing()(model, x, 0, attributions=a)
    torch.testing.assert_close(Aliasing()(model, x, 0, attributions=-7.5 * a), base)
    torch.testing.assert_close(base, period2_share(a.sum(1)))
    single = Aliasing()(model, x, 0, attributions=a.sum(1, keepdim=True))  # a one-channel map broadcasts
    torch.testing.assert_close(single, period2_share(3 * a.sum(1)))


def test_zero_maps_and_bad_arguments():
    model = lambda t: t.flatten(1)
    x = torch.zeros(2, 3, 8, 8)
    a = torch.randn(2, 3, 8, 8)
    a[1] = 0
    with pytest.warns(ZeroAttributionWarning):
        s = Aliasing()(model, x, 0, attributions=a)
    assert math.isfinite(s[0].item()) and math.isnan(s[1].item())
    cancelling = torch.stack([torch.ones(8, 8), -torch.ones(8, 8), torch.zeros(8, 8)])[None]
    assert math.isnan(Aliasing()(model, x[:1], 0, attributions=cancelling).item())  # channels sum to zero
    with pytest.raises(InvalidInputError, match="zero"):
        Aliasing(on_zero_attribution="raise")(model, x, 0, attributions=a)
    for bad in (0.5, -0.1, "high", True):
        with pytest.raises(InvalidInputError, match="cutoff"):
            Aliasing(cutoff=bad)
    with pytest.raises(InvalidInputError, match=r"\(B, C, H, W\)"):
        Aliasing()(model, torch.zeros(2, 5), 0, attributions=torch.ones(2, 5))
    with pytest.raises(InvalidInputError, match=r"\(B, H, W\)"):
        period2_share(torch.ones(8, 8))
    assert get_metric("aliasing").higher_is_better is False


# ----------------------------------------------------------------------------- top-layer randomisation


def gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    model(x).gather(1, y[:, None]).sum().backward()
    return x.grad.detach()


def test_top_layer_randomisation_matches_a_by_hand_reference():
    model, metric = small_net(), TopLayerRandomisation(layers=2, seed=5)
    before = copy.deepcopy(model.state_dict())
    x, y = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 3, 4])
    rng = torch.get_rng_state()
    scores = metric(model, x, y, explain_func=gradient)
    # reference: re-initialise the top two conv/linear layers (the linear head, then the second convolution) of a
    # copy by hand, from the output down, with the documented seed
    reference = copy.deepcopy(model)
    torch.manual_seed(derived_seed(5))
    reference[8].reset_parameters()
    reference[4].reset_parameters()
    a, a_r = gradient(model, x, y), gradient(reference, x, y)
    expected = spearman(a.abs().flatten(1), a_r.abs().flatten(1)).abs()
    torch.testing.assert_close(scores, expected)
    assert scores.min() >= 0 and scores.max() < 0.99
    copied = metric.randomised(model)
    for name, value in copied.state_dict().items():  # only the top two layers changed; the model is untouched
        assert torch.equal(value, before[name]) != name.startswith(("4.", "8.")), name
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    torch.set_rng_state(rng)
    torch.testing.assert_close(metric(model, x, y, explain_func=gradient), scores)  # seeded, RNG-independent


def test_the_default_seed_does_not_replay_the_models_own_initialisation():
    """A model built under torch.manual_seed(0) must still change when re-initialised with seed 0."""
    model = small_net()  # built under torch.manual_seed(0)
    copied = TopLayerRandomisation(layers=3, seed=0).randomised(model)  # every conv and linear layer
    assert not torch.equal(copied[0].weight, model[0].weight) and not torch.equal(copied[8].weight, model[8].weight)


def test_a_map_that_ignores_the_model_survives_randomisation():
    model, x = small_net(), torch.randn(2, 3, 8, 8)
    edges = lambda m, inputs, targets: inputs.diff(dim=-1, prepend=inputs[..., :1])
    score = TopLayerRandomisation()(model, x, torch.tensor([0, 1]), explain_func=edges)
    torch.testing.assert_close(score, torch.ones(2))


def test_top_layer_randomisation_bad_arguments():
    with pytest.raises(InvalidInputError, match="layers"):
        TopLayerRandomisation(layers=0)
    with pytest.raises(InvalidInputError, match="explain_func"):
        TopLayerRandomisation()(small_net(), torch.zeros(1, 3, 8, 8), 0, attributions=torch.ones(1, 3, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InvalidInputError, match="no convolution or linear"):
            TopLayerRandomisation().randomised(nn.Sequential(nn.ReLU()))
