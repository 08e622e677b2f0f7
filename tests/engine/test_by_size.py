"""Per-stage temperatures (BySize): each gate softened by the temperature of its feature-map size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from semantic_pullbacks import BySize, InvalidInputError, Relative, Temperatures, pullback_mode

Phi = torch.special.ndtr


class TwoStages(nn.Module):
    """conv -> ReLU6 at 16 px -> stride-2 conv -> ReLU6 at 8 px -> linear, in float64. Not the suite's small_net:
    the reference needs two activations at different resolutions whose gates it can set by hand."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(3, 4, 3, padding=1).double()
        self.c2 = nn.Conv2d(4, 4, 3, stride=2, padding=1).double()
        self.fc = nn.Linear(4 * 8 * 8, 3).double()

    def forward(self, x, gates=None):  # type: ignore[no-untyped-def]
        z1 = self.c1(x)
        h1 = F.relu6(z1) if gates is None else z1 * gates[0]
        z2 = self.c2(h1)
        h2 = F.relu6(z2) if gates is None else z2 * gates[1]
        return self.fc(h2.flatten(1)), (z1, z2)


def soft6(z: torch.Tensor, tau: torch.Tensor | float) -> torch.Tensor:
    return Phi(z / tau) - Phi((z - 6) / tau)


def test_each_stage_gets_its_own_temperature():
    net, x = TwoStages(), torch.randn(2, 3, 16, 16, dtype=torch.float64) * 3
    staged = Temperatures(relu=BySize(0.5, {16: Relative(2.0)}))  # 16-px maps: 2 x std; smaller maps: 0.5
    leaf = x.clone().requires_grad_(True)
    with pullback_mode(staged):
        logits, _ = net(leaf)
        (got,) = torch.autograd.grad(logits[:, 1].sum(), leaf)
    # reference: the same network with each gate frozen at its softened value, differentiated plainly
    with torch.no_grad():
        _, (z1, z2) = net(x)
        std1 = z1.flatten(1).std(dim=1, unbiased=False).view(-1, 1, 1, 1)
        gates = (soft6(z1, 2.0 * std1), soft6(z2, 0.5))
    leaf = x.clone().requires_grad_(True)
    logits, _ = net(leaf, gates)
    (expected,) = torch.autograd.grad(logits[:, 1].sum(), leaf)
    torch.testing.assert_close(got, expected)
    # and it differs from either temperature used everywhere
    for everywhere in (0.5, Relative(2.0)):
        leaf = x.clone().requires_grad_(True)
        with pullback_mode(Temperatures(relu=everywhere)):
            logits, _ = net(leaf)
            (other,) = torch.autograd.grad(logits[:, 1].sum(), leaf)
        assert not torch.allclose(other, got)


def test_stage_lookup_parsing_and_round_trip():
    staged = BySize(Relative(1.0), {56: Relative(1.5), 14: 2})
    assert [staged.for_side(s) for s in (224, 56, 55, 14, 7)] == [Relative(1.5), Relative(1.5), 2.0, 2.0, Relative(1.0)]
    assert staged.for_input(torch.zeros(1, 8, 28, 30)) == 2.0  # the smaller spatial side decides
    assert staged.for_input(torch.zeros(1, 197, 64)) == Relative(1.0)  # tokens: no spatial size, the default
    assert str(staged) == "1*std;56:1.5*std;14:2" and BySize.parse(str(staged)) == staged
    temps = Temperatures.coerce({"relu": "1*std; 14:2; 56:1.5*std"})
    assert temps.relu == staged and Temperatures.coerce(temps.to_dict()) == temps
    # written and read again, a temperature keeps every digit (six significant digits used to be kept)
    fine = Temperatures(relu=BySize(Relative(1.2345678), {56: 0.123456789}), silu=Relative(2.0000001))
    assert Temperatures.coerce(fine.to_dict()) == fine
    assert fine.to_dict()["relu"] == "1.2345678*std;56:0.123456789"


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda: BySize(0.0), "positive"),
        (lambda: BySize(1.0, {56: -1.0}), "positive"),
        (lambda: BySize(1.0, {0: 1.0}), "positive integers"),
        (lambda: BySize(1.0, ((56, 1.0), (56, 2.0))), "twice"),
        (lambda: BySize.parse("56:1"), "default value first"),
        (lambda: BySize.parse("1;2"), "more than one default"),
        (lambda: BySize.parse("1;x:2"), "not a side"),
        (lambda: BySize.parse("1;²:2"), "not a side"),
        (lambda: BySize.parse("1;56:1;56:2"), "twice"),
        (lambda: Temperatures(attention=BySize(1.0)), "cannot be staged"),
        (lambda: Temperatures.coerce({"relu": "1;56:warm"}), "cannot read temperature"),
    ],
)
def test_bad_staged_temperatures_are_refused(build, message):
    with pytest.raises(InvalidInputError, match=message):
        build()
