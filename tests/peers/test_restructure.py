"""The restructured copies that let Zennit run on the embedded EfficientNet-Lite0, and how BetaSmooth relates to
SP's soft ReLU."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from semantic_pullbacks import SoftPullback
from semantic_pullbacks.methods.peers import ZennitBetaSmooth, ZennitEpsilonPlusFlat, beta_matching
from semantic_pullbacks.methods.peers.structure import PerUse, norm_pairs, private_copy

pytest.importorskip("zennit")


@pytest.fixture(scope="module")
def lite0():
    from semantic_pullbacks.examples import example_path
    from semantic_pullbacks.models import load

    loaded = load()
    return loaded, loaded.load_image(example_path("chelsea"))


def test_lite0_copy_merges_all_49_batch_norms_zennit_misses_and_computes_the_same_logits(lite0):
    from zennit.canonizers import SequentialMergeBatchNorm

    loaded, x = lite0
    stock = private_copy(loaded.model, share_weights=False)
    assert SequentialMergeBatchNorm().apply(stock) == []  # padded convolutions are containers: no pair found
    own = private_copy(loaded.model, share_weights=False)
    pairs = norm_pairs(own, lambda: own(x))
    assert len(pairs) == 49 and ("_conv_stem", "_bn0") in pairs and ("_conv_head", "_bn1") in pairs

    copy = ZennitEpsilonPlusFlat(loaded).canonical(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())
    assert len(copy.residual_sums) == 9  # the blocks with a skip connection
    # one ReLU6 per block, called twice (after the expansion and the depthwise convolution), plus the stem/head one
    split = [m for m in copy.modules() if isinstance(m, PerUse)]
    assert len(split) == 16 and all(isinstance(u, nn.ReLU6) for m in split for u in m.uses)
    with torch.no_grad():
        torch.testing.assert_close(copy(x), loaded.model(x), rtol=1e-4, atol=1e-4)


def test_epsilon_plus_flat_on_lite0_is_positive_relevance_of_the_input_shape(lite0):
    loaded, x = lite0
    relevance = ZennitEpsilonPlusFlat(loaded).attribute(x, target=285)
    assert relevance.shape == x.shape
    assert float(relevance.min()) >= 0 and float(relevance.sum()) > 0  # flat first layer, z+ above it


def test_beta_smooth_softens_lite0s_relu6_where_zennits_stock_composite_changes_nothing(lite0):
    from zennit.attribution import Gradient
    from zennit.composites import BetaSmooth

    from semantic_pullbacks import Gradient as PlainGradient

    loaded, x = lite0
    gradient = PlainGradient(loaded.model).attribute(x, target=285)
    copy = ZennitBetaSmooth(loaded).canonical(x)
    with Gradient(copy, BetaSmooth(beta_smooth=10.0)) as attributor:
        _, stock = attributor(x, lambda out: torch.eye(1000)[[285]])
    torch.testing.assert_close(stock, gradient, rtol=1e-4, atol=1e-6)  # nn.ReLU only: a no-op on ReLU6
    smooth = ZennitBetaSmooth(loaded).attribute(x, target=285)
    cosine = torch.nn.functional.cosine_similarity(smooth.flatten(), gradient.flatten(), dim=0)
    assert float(cosine) < 0.99


def _hidden_layer_net(activation: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(8, 64), activation, nn.Linear(64, 3)).double().eval()
    with torch.no_grad():
        net[0].weight.mul_(3.0)  # pre-activations spread over several temperatures
    return net


def _gate_map(net: nn.Module, x: torch.Tensor, target: int, gate: torch.Tensor) -> torch.Tensor:
    """The input map of a one-hidden-layer network whose activation's derivative is replaced by ``gate``."""
    return (gate * net[2].weight[target]) @ net[0].weight


def test_beta_smooth_and_sp_on_one_hidden_layer_sigmoid_gate_against_phi_gate_at_matching_slope():
    """BetaSmooth's backward gate is sigmoid(beta z), SP's is Phi(z / tau). Their slopes at 0 are beta / 4 and
    1 / (tau sqrt(2 pi)), so they agree there when beta = 4 / (tau sqrt(2 pi)); away from 0 the two gates differ
    by at most 0.0177 (measured on a fine grid: at z = 1.73 tau), so the two maps differ by at most
    0.0177 * sum_j |w2_j| |W1_j|."""
    tau = 0.7
    beta = beta_matching(tau)
    assert beta == pytest.approx(4 / (tau * math.sqrt(2 * math.pi)))

    z = torch.linspace(-12 * tau, 12 * tau, 200_001, dtype=torch.float64)
    sigmoid_gate, phi_gate = torch.sigmoid(beta * z), 0.5 * (1 + torch.erf(z / tau / math.sqrt(2)))
    slope = lambda g: float((g[100_001] - g[99_999]) / (z[100_001] - z[99_999]))
    assert slope(sigmoid_gate) == pytest.approx(slope(phi_gate), rel=1e-6)
    gap = (sigmoid_gate - phi_gate).abs()
    assert float(gap.max()) == pytest.approx(0.0177, abs=5e-5)
    assert float(z[gap.argmax()].abs() / tau) == pytest.approx(1.73, abs=0.01)

    net = _hidden_layer_net(nn.ReLU())
    x = torch.randn(1, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    pre = net[0](x)[0].detach()
    beta_smooth = ZennitBetaSmooth(net, beta=beta).attribute(x, target=2)[0]
    soft = SoftPullback(net, {"relu": tau}).attribute(x, target=2)[0]
    torch.testing.assert_close(beta_smooth, _gate_map(net, x, 2, torch.sigmoid(beta * pre)).detach())
    torch.testing.assert_close(soft, _gate_map(net, x, 2, 0.5 * (1 + torch.erf(pre / tau / math.sqrt(2)))).detach())
    bound = 0.0177 * (net[2].weight[2].abs()[:, None] * net[0].weight.abs()).sum(0)
    assert bool(((beta_smooth - soft).abs() <= bound + 1e-9).all())
    assert float((beta_smooth - soft).abs().max()) > 0  # close, not equal


def test_beta_smooth_clipped_gate_on_relu6_is_the_difference_of_two_sigmoids():
    net = _hidden_layer_net(nn.ReLU6(), seed=3)
    x = 4 * torch.randn(1, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    pre = net[0](x)[0].detach()
    assert bool((pre > 6).any() and (pre < 0).any())  # both edges met
    got = ZennitBetaSmooth(net, beta=2.0).attribute(x, target=0)[0]
    gate = torch.sigmoid(2.0 * pre) - torch.sigmoid(2.0 * (pre - 6))
    torch.testing.assert_close(got, _gate_map(net, x, 0, gate).detach())
