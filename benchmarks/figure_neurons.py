"""The neurons figure: what the most active channels of two EfficientNet-Lite0 stages see in three photos.

    uv run python benchmarks/figure_neurons.py --out docs/neurons.jpg

For each bundled photo (chelsea, coffee, rocket) and each of two stages of the embedded Lite0 (``_blocks.4``, the
end of the 40-channel stage at 28 x 28, and ``_blocks.10``, the end of the 112-channel stage at 14 x 14), the four
channels with the largest mean activation on the photo. Upper row: each channel's soft pullback
(``SoftPullback(model).attribute(x, target=Neuron(stage, channel=c))``, channel-summed, red raises the channel,
blue lowers it, each on its own robust scale). Lower row: its accentuation (``PullbackAscent`` with the model's
recommended ascent settings, clipped to the pixel range), with the channel's mean before and after.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from semantic_pullbacks import Neuron, PullbackAscent, SoftPullback
from semantic_pullbacks.examples import get_example
from semantic_pullbacks.methods import target_value
from semantic_pullbacks.models import load
from semantic_pullbacks.visualize import _figure, heatmap_rgb, save_figure

PHOTOS = ("chelsea", "coffee", "rocket")
STAGES = ("_blocks.4", "_blocks.10")
CHANNELS = 4


def as_rgb(x: torch.Tensor, domain: tuple[float, float]) -> np.ndarray:
    lo, hi = domain
    return ((x.clamp(lo, hi) - lo) / (hi - lo)).permute(1, 2, 0).mul(255).round().byte().numpy()


def most_active(model, stage: str, x: torch.Tensor) -> list[int]:
    """The channels of ``stage`` with the largest mean activation on ``x``."""
    kept = {}
    handle = model.model.get_submodule(stage).register_forward_hook(lambda m, i, o: kept.setdefault("a", o))
    try:
        with torch.no_grad():
            model.model(x)
    finally:
        handle.remove()
    return kept["a"][0].flatten(1).mean(1).topk(CHANNELS).indices.tolist()


def rows_for(model, photo: str, stage: str) -> tuple[list[tuple[np.ndarray, str]], list[tuple[np.ndarray, str]]]:
    """The photo and its channels' maps; the accentuated photos with the channel's mean before -> after."""
    x = model.load_image(get_example(photo).path)
    sp, ascent = SoftPullback(model), PullbackAscent(model, clip="last")
    maps, accents = [(as_rgb(x[0], model.domain), f"{photo} · {stage}")], [(None, "")]
    for c in most_active(model, stage, x):
        neuron = Neuron(stage, channel=c)
        maps.append((heatmap_rgb(sp.attribute(x, target=neuron)[0]), f"channel {c}: SP"))
        result = ascent.run(x, target=neuron)
        before, after = (float(target_value(model.model, neuron, v)[0]) for v in (x, result.counterfactual))
        accents.append((as_rgb(result.counterfactual[0], model.domain), f"accentuated: {before:.2g} → {after:.2g}"))
        print(f"{photo} {stage} channel {c}: {before:.3g} -> {after:.3g}")
    return maps, accents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/neurons.jpg"))
    args = parser.parse_args()
    model = load("efficientnet_lite0")
    rows = [row for photo in PHOTOS for stage in STAGES for row in rows_for(model, photo, stage)]
    fig = _figure(len(rows), CHANNELS + 1, panel=1.7)
    axes = fig.subplots(len(rows), CHANNELS + 1)
    for r, row in enumerate(rows):
        for c, (image, title) in enumerate(row):
            ax = axes[r, c]
            ax.set_axis_off()
            if image is not None:
                ax.imshow(image)
                ax.set_title(title, fontsize=7, pad=2)
    fig.suptitle("EfficientNet-Lite0: the four most active channels of two stages, their SP maps and accentuations")
    print(save_figure(fig, args.out))


if __name__ == "__main__":
    main()
