"""Figures render to decodable PNGs of the expected size, scales behave, and bad inputs are rejected."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from semantic_pullbacks import visualize as viz
from semantic_pullbacks.errors import InvalidInputError


@pytest.fixture
def sample():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 32, 32, generator=generator) * 2 - 1
    attributions = torch.randn(2, 3, 32, 32, generator=generator)
    return images, attributions


def _png(fig, path):
    saved = viz.save_figure(fig, path)
    with Image.open(saved) as image:
        image.load()
        return image.format, image.size


def _expected_size(fig):
    width, height = fig.get_size_inches() * fig.dpi
    return round(width), round(height)


def test_every_figure_type_saves_a_png_of_its_declared_size(tmp_path, sample):
    images, attributions = sample
    figures = {
        "heatmap": viz.plot_heatmap(attributions[0], title="cat · SP"),
        "ixa": viz.plot_input_times_attribution(images[0], attributions[0]),
        "overlay": viz.plot_overlay(images[0], attributions[0]),
        "explanation": viz.plot_explanation(images[0], attributions[0], class_name="cat", method="SP"),
        "counterfactual": viz.plot_counterfactual(images[0], images[0] + 0.1 * attributions[0]),
        "class_grid": viz.plot_class_grid(
            images, torch.stack([attributions, -attributions], 1), ["cat", "dog"], shared_scale=True
        ),
        "method_grid": viz.plot_method_grid(images, {"SP": attributions, "Gradient": attributions.flip(-1)}),
        "counterfactual_grid": viz.plot_counterfactual_grid(
            images,
            images[:, None] + 0.1 * torch.stack([attributions, -attributions], 1),
            ["cat", "dog"],
            notes=[["p 0.1 → 0.9", "p 0.0 → 0.5"]] * 2,
            method="PullbackAscent",
        ),
    }
    for name, fig in figures.items():
        fmt, size = _png(fig, tmp_path / name)
        assert fmt == "PNG"
        assert size == _expected_size(fig), name


def test_grids_grow_with_rows_and_columns(sample):
    images, attributions = sample
    small = viz.plot_method_grid(images[:1], {"SP": attributions[:1]})
    large = viz.plot_method_grid(images, {"SP": attributions, "G": attributions, "S": attributions})
    assert large.get_size_inches()[0] > small.get_size_inches()[0]
    assert large.get_size_inches()[1] > small.get_size_inches()[1]
    grid = viz.plot_class_grid(images, torch.stack([attributions] * 3, 1), [["a", "b", "c"], ["d", "e", "f"]])
    assert len(grid.axes) == 2 * 4


def test_figure_to_array_is_rgb_uint8(sample):
    images, attributions = sample
    array = viz.figure_to_array(viz.plot_overlay(images[0], attributions[0]))
    assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3
    assert array.std() > 0  # something was drawn


def test_heatmap_rgb_is_white_at_zero_and_red_for_positive():
    attribution = torch.zeros(3, 4, 4)
    attribution[:, 0, 0] = 1.0
    attribution[:, 0, 1] = -1.0
    rgb = viz.heatmap_rgb(attribution, vmax=3.0, cmap="bwr")
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.uint8
    assert rgb[3, 3].min() > 240  # zero is white
    assert rgb[0, 0, 0] > rgb[0, 0, 2]  # positive is red
    assert rgb[0, 1, 2] > rgb[0, 1, 0]  # negative is blue


def test_overlay_keeps_weak_pixels_close_to_the_photo(sample):
    images, _ = sample
    attribution = torch.zeros(3, 32, 32)
    attribution[:, :4, :4] = 1.0
    rgb = viz.overlay_rgb(images[0], attribution, vmax=1.0).astype(np.int16)
    assert abs(rgb[20, 20, 0] - rgb[20, 20, 2]) < 3  # untouched pixel stays grey
    assert rgb[0, 0, 0] - rgb[0, 0, 2] > 50  # strong positive evidence is red


def test_robust_vmax_ignores_outliers_and_shares_scales():
    values = torch.ones(1000)
    values[0] = 1e6
    assert viz.robust_vmax(values, percentile=99.0) == pytest.approx(1.0)
    assert viz.robust_vmax([torch.ones(10), 3 * torch.ones(10)], percentile=100) == pytest.approx(3.0)
    assert viz.robust_vmax(torch.zeros(5)) == 1.0  # never zero, so colour maps stay defined


def test_reduce_channels():
    a = torch.tensor([1.0, -2.0, 4.0]).view(3, 1, 1)
    assert float(viz.reduce_channels(a)) == 3.0
    assert float(viz.reduce_channels(a, "mean")) == 1.0
    assert float(viz.reduce_channels(a, "abs")) == 7.0
    with pytest.raises(InvalidInputError):
        viz.reduce_channels(a, "median")


def test_bad_inputs_are_rejected(sample):
    images, attributions = sample
    with pytest.raises(InvalidInputError):
        viz.overlay_rgb(images[0], attributions[0, :, :16])
    with pytest.raises(InvalidInputError):
        viz.plot_class_grid(images, torch.stack([attributions] * 2, 1), ["only one"])
    with pytest.raises(InvalidInputError):
        viz.plot_method_grid(images, {})
    with pytest.raises(InvalidInputError):
        viz.plot_counterfactual(images[0], images[0, :, :8])
    with pytest.raises(InvalidInputError):
        viz.plot_counterfactual_grid(images, torch.stack([images] * 2, 1), ["a", "b"], notes=[["one"]] * 2)


def test_every_figure_refuses_what_is_not_a_tensor_by_the_argument_s_name(sample):
    images, attributions = sample
    picture, attribution = images[0], attributions[0]
    calls = {
        "image": [
            lambda: viz.plot_input_times_attribution(picture.numpy(), attribution),
            lambda: viz.plot_explanation(picture.numpy(), attribution),
            lambda: viz.plot_counterfactual(picture.numpy(), picture),
        ],
        "attribution": [
            lambda: viz.plot_heatmap(attribution.numpy()),
            lambda: viz.plot_input_times_attribution(picture, attribution.numpy()),
            lambda: viz.overlay_rgb(picture, attribution.tolist()),
        ],
        "counterfactual": [lambda: viz.plot_counterfactual(picture, picture.numpy())],
        "images": [lambda: viz.plot_method_grid(images.numpy(), {"SP": attributions})],
        "tensor": [lambda: viz.overlay_rgb(picture.numpy(), attribution)],
    }
    for name, failing in calls.items():
        for call in failing:
            with pytest.raises(InvalidInputError, match=f"^{name} must be a torch.Tensor, got (ndarray|list)$"):
                call()
    with pytest.raises(
        InvalidInputError, match=r"^images must have shape \(N, C, H, W\) or \(C, H, W\); got \(32, 32\)$"
    ):
        viz.plot_method_grid(images[0, 0], {"SP": attributions})


def test_no_pyplot_state_is_created(sample):
    import sys

    images, attributions = sample
    viz.plot_explanation(images[0], attributions[0])
    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        assert plt.get_fignums() == []


def test_probability_note_says_when_an_image_is_no_counterfactual():
    assert viz.probability_note(0.19, 0.98) == "p 0.19 → 0.98"
    assert viz.probability_note(0.61, 0.49) == "p 0.61 → 0.49: lowered, not a counterfactual"
    assert viz.probability_note(1.0, 1.0) == "p 1.00 → 1.00: not raised, not a counterfactual"
