"""Temperatures are validated where they are built: numbers, families and Relative settings, before any pass."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from semantic_pullbacks import InvalidInputError, Relative, Temperatures, pullback_mode, register_rule, unregister_rule
from semantic_pullbacks.calibration import load_settings
from semantic_pullbacks.engine import NOT_HANDLED
from semantic_pullbacks.methods import SoftPullback


def relu_pool_net() -> nn.Module:
    # not small_methods.small_net: with ReLU and max pooling only, zero for those two families is the whole
    # ordinary gradient (small_net's GELU and BN would stay soft)
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 5)).eval()


def gradient(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    model(x)[:, target].sum().backward()
    return x.grad


@pytest.mark.parametrize(
    "temperatures",
    [{"relu": 0, "maxpool": 0}, Temperatures(relu=0, maxpool=0), Temperatures().replace(relu=0, maxpool=0)],
    ids=["mapping", "constructor", "replace"],
)
def test_integer_zero_is_the_hard_gate(temperatures):
    """``0`` is ``0.0``: the ordinary gradient on a ReLU/max-pool net (it used to divide by zero)."""
    model, x = relu_pool_net(), torch.randn(2, 3, 10, 10)
    attr = SoftPullback(model, temperatures).attribute(x, target=1)
    torch.testing.assert_close(attr, gradient(model, x, 1))


def test_numbers_are_stored_as_floats_from_every_source(tmp_path):
    assert Temperatures(relu=0).relu == 0.0 and isinstance(Temperatures(relu=0).relu, float)
    assert isinstance(Temperatures.coerce({"gelu": 2}).gelu, float)
    assert Relative(2).scale == 2.0 and isinstance(Relative(2, min_tau=1).min_tau, float)
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"temperatures": {"relu": 0, "maxpool": 0}, "ascent": {"temperatures": {"relu": 0}}}))
    settings = load_settings(path)
    assert settings.temperatures.relu == 0.0 and isinstance(settings.temperatures.maxpool, float)
    model, x = relu_pool_net(), torch.randn(1, 3, 10, 10)
    torch.testing.assert_close(SoftPullback(model, settings.temperatures).attribute(x, target=0), gradient(model, x, 0))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Temperatures.coerce({"rleu": 0.05}), r"unknown temperature family 'rleu' \(did you mean 'relu'\?\)"),
        (lambda: SoftPullback(relu_pool_net(), {"maxpol": 0.3}), r"did you mean 'maxpool'"),
        (lambda: Temperatures().replace(atention=1.0), r"did you mean 'attention'"),
        (lambda: Temperatures(extra={"zzz": 1.0}), r"unknown temperature family 'zzz'; known: relu"),
        (lambda: Relative(2.0, min_tau=0), r"min_tau"),
        (lambda: Relative(2.0, min_tau=-1), r"min_tau"),
        (lambda: Relative(2.0, min_tau=float("nan")), r"min_tau"),
        (lambda: Relative("2"), r"scale"),
        (lambda: Temperatures(attention=Relative(2.0)), r"'attention' must be an absolute number"),
        (lambda: Temperatures.coerce({"attention": "2*std"}), r"'attention' must be an absolute number"),
        (lambda: Temperatures(relu=float("inf")), r"non-negative finite"),
        (lambda: Temperatures(relu=float("nan")), r"non-negative finite"),
        (lambda: Temperatures(relu="0.5"), r"non-negative finite"),
    ],
)
def test_bad_temperatures_fail_where_they_are_written(make, message):
    with pytest.raises(InvalidInputError, match=message):
        make()


def test_settings_files_refuse_a_misspelt_family_under_ascent_too(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"temperatures": {"relu": 0.5}, "ascent": {"temperatures": {"rleu": 0.5}}}))
    with pytest.raises(InvalidInputError, match=r"settings\.json.*unknown temperature family 'rleu'"):
        load_settings(path)


def test_a_family_of_a_registered_rule_is_accepted():
    @register_rule(torch.clamp, op="clamp", family="clip", replace=True)
    def soft_clamp(func, args, kwargs, ctx):
        return NOT_HANDLED

    try:
        assert Temperatures.coerce({"clip": 0.5}).get("clip") == 0.5
    finally:
        unregister_rule(torch.clamp)
    with pytest.raises(InvalidInputError, match="unknown temperature family 'clip'"):
        Temperatures.coerce({"clip": 0.5})


@pytest.mark.parametrize("min_tau", [1e-6, 0.5])
def test_relative_temperature_of_a_layer_without_spread_is_its_floor(min_tau):
    """A layer whose units all see the same value has spread 0 in every sample: ``min_tau`` takes over, instead of
    a division by zero (an all-NaN map). Reference: the soft ReLU's closed form, gate Φ(z / min_tau)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double().eval()
    with torch.no_grad():
        model[0].weight.copy_(model[0].weight[:1].expand(3, 4))  # three identical units: z = w·x + b in each
        model[0].bias.zero_()
    x = torch.randn(5, 4, dtype=torch.float64)
    x[0] = 0  # z = 0 with spread 0: without the floor, 0 / 0
    attr = SoftPullback(model, {"relu": Relative(2.0, min_tau=min_tau)}).attribute(x, target=0)
    w, head = model[0].weight[0].detach(), model[2].weight[0].detach()
    z = x @ w
    gate = torch.special.ndtr(z / min_tau)  # (1 + erf(z / (sqrt 2 tau))) / 2
    torch.testing.assert_close(attr, (head.sum() * gate)[:, None] * w)


def test_attention_temperature_is_checked_before_the_forward_pass():
    calls = []
    q = torch.randn(1, 2, 4, 8, requires_grad=True)
    with pytest.raises(InvalidInputError, match="attention"), pullback_mode({"attention": Relative(1.0)}):
        calls.append(1)
        F.scaled_dot_product_attention(q, q, q)
    assert calls == []


@pytest.mark.parametrize(
    "case",
    [
        "centred",
        "large feature map",
        "mean far above the spread",
        "constant sample",
        "channels last",
        "huge values",
        "one value per sample",
    ],
)
def test_per_sample_std_is_torch_s_in_float32(case):
    """The fast per-sample spread (two vectorised reductions) agrees with ``torch.std`` taken in float64, including
    where the one-pass formula would cancel (it falls back to the exact one there)."""
    from semantic_pullbacks.engine.temperatures import per_sample_std

    torch.manual_seed(5)
    x = torch.randn(3, 8, 9, 7) * torch.tensor([0.5, 2.0, 7.0]).view(3, 1, 1, 1) + 0.3
    if case == "large feature map":  # one float32 accumulator over 1.2 M squares would be 3e-5 off
        x = torch.randn(3, 96, 112, 112) * 7.6 + 1.0
    elif case == "mean far above the spread":
        x = x + 1e4
    elif case == "constant sample":
        x[1] = 2.5
    elif case == "channels last":
        x = x.to(memory_format=torch.channels_last)
    elif case == "huge values":
        x = x * 1e25  # the sum of squares overflows float32
    elif case == "one value per sample":
        x = x[:, :1, :1, :1]
    expected = x.double().flatten(1).std(dim=1, unbiased=False).float()
    got = per_sample_std(x)
    assert got.shape == (3,) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0.0)
