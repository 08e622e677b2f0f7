"""The app's neuron mode as plain functions: the channel's activation, soft pullback and accentuation on a photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semantic_pullbacks import Neuron, SoftPullback
from semantic_pullbacks.app import neuron
from semantic_pullbacks.app.logic import read_image
from semantic_pullbacks.errors import InvalidInputError, UnknownLayerError
from semantic_pullbacks.examples import example_path
from semantic_pullbacks.methods import layer_output, target_value
from semantic_pullbacks.models import load
from semantic_pullbacks.visualize import heatmap_rgb, robust_vmax


@pytest.fixture(scope="module")
def lite0():
    return load("efficientnet_lite0")


@pytest.fixture(scope="module")
def chelsea(lite0):
    return read_image(str(example_path("chelsea")), lite0)


def test_layers_offered_are_conv_maps_run_once(lite0):
    layers = neuron.neuron_layers(lite0)
    assert [f"_blocks.{i}" for i in range(16)] == [name for name in layers if name.startswith("_blocks.")]
    assert "_blocks" not in layers  # a container, never called


def test_explain_neuron_shows_the_channels_own_pullback_and_raises_it(lite0, chelsea):
    result = neuron.explain_neuron(lite0, chelsea, "_blocks.5", 3)
    x = chelsea[None]
    target = Neuron("_blocks.5", channel=3)
    attribution = SoftPullback(lite0).attribute(x, target=target)[0]
    assert np.array_equal(result.signed, heatmap_rgb(attribution, vmax=robust_vmax(attribution.sum(0))))
    assert result.before == pytest.approx(float(target_value(lite0.model, target, x)[0]), rel=1e-6)
    assert result.after > result.before
    means = layer_output(lite0.model, "_blocks.5", x)[0].flatten(1).mean(1)
    assert [c for c, _ in result.top] == means.topk(5).indices.tolist()
    assert result.activation.shape == result.image.shape == result.accentuated.shape == (224, 224, 3)
    assert "_blocks.5:3" in result.summary()
    fig = neuron.neuron_figure(result)
    assert len(fig.axes) == 4


@pytest.mark.parametrize(
    ("layer", "channel", "error", "message"),
    [
        ("_blocks.5", 80, InvalidInputError, "80 channels"),
        ("_blokcs.5", 0, UnknownLayerError, "closest"),
        ("", 0, InvalidInputError, "pick a layer"),
        ("_blocks.5", -1, InvalidInputError, "integer >= 0"),
        ("_blocks.5", 1.5, InvalidInputError, "integer >= 0"),
    ],
)
def test_bad_neuron_requests(lite0, chelsea, layer, channel, error, message):
    with pytest.raises(error, match=message):
        neuron.explain_neuron(lite0, chelsea, layer, channel)
    assert torch.equal(chelsea, read_image(str(example_path("chelsea")), lite0))
