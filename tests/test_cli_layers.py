"""The command line's internal targets: ``layers``, ``explain --neuron`` and ``counterfactuals --neuron``."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from semantic_pullbacks import Neuron, SoftPullback
from semantic_pullbacks.examples import example_path
from semantic_pullbacks.methods import layer_shapes, target_value
from semantic_pullbacks.models import load
from test_cli import run_cli, written


@pytest.fixture(scope="module")
def lite0():
    return load("efficientnet_lite0")


def test_layers_lists_names_types_and_output_shapes(lite0):
    code, stdout, _ = run_cli("layers", "_blocks", "--depth", "2")
    assert code == 0
    want = [i for i in layer_shapes(lite0.model, torch.zeros(1, 3, 224, 224)) if i.name.startswith("_blocks.")]
    want = [i for i in want if i.name.count(".") < 2]
    lines = stdout.splitlines()
    assert lines[0].split() == ["_blocks", "ModuleList", "(container)"]
    assert [line.split(None, 2) for line in lines[1:]] == [[i.name, i.kind, str(i.shape)] for i in want]
    assert "_blocks.5 " in stdout and "(1, 80, 14, 14)" in stdout


def test_explain_neuron_writes_the_channels_soft_pullback(lite0, tmp_path):
    code, stdout, stderr = run_cli(
        "explain", "example:chelsea", "--neuron", "_blocks.5:3", "--save-tensors", "npy", "--out", str(tmp_path)
    )
    assert code == 0, stderr
    array, figure = sorted(written(stdout), key=lambda p: p.suffix)
    assert (array.suffix, figure.suffix) == (".npy", ".png")
    x = lite0.load_image(example_path("chelsea"))
    want = SoftPullback(lite0).attribute(x, target=Neuron("_blocks.5", channel=3))[0]
    assert torch.equal(torch.from_numpy(np.load(array)), want)
    assert "SoftPullback of _blocks.5:3 on 1 image(s)" in stdout


def test_counterfactuals_neuron_accentuates_the_channel(lite0, tmp_path):
    code, stdout, stderr = run_cli(
        "counterfactuals", "example:chelsea", "--neuron", "_blocks.5:3,_blocks.10:7", "--out", str(tmp_path)
    )
    assert code == 0, stderr
    x = lite0.load_image(example_path("chelsea"))
    before = float(target_value(lite0.model, Neuron("_blocks.5", channel=3), x)[0])
    pairs = re.findall(r"(_blocks\.\d+:\d+): ([-\d.e+]+) → ([-\d.e+]+)", stdout)
    assert [p[0] for p in pairs] == ["_blocks.5:3", "_blocks.10:7"]
    assert pairs[0][1] == f"{before:.3g}"
    assert all(float(after) > float(start) for _, start, after in pairs)
    assert len(written(stdout)) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["explain", "example:chelsea", "--neuron", "_blokcs.5:3"], "closest: _blocks.5"),
        (["explain", "example:chelsea", "--neuron", "_blocks.5"], "give LAYER:CHANNEL"),
        (["explain", "example:chelsea", "--neuron", "_blocks.5:999"], "channel 999 is out of range"),
        (["counterfactuals", "example:chelsea", "--neuron", "_blocks.5:1", "--classes", "281"], "not both"),
        (["explain", "example:chelsea", "--neuron", "_blocks.5:1", "--top-k", "2"], "not allowed with"),
        (["layers", "nothing-like-this"], "no layer name contains"),
    ],
)
def test_bad_neuron_arguments(argv, message):
    code, _, stderr = run_cli(*argv)
    assert code in (1, 2)
    assert message in stderr
