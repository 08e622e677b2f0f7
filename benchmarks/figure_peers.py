"""The peers figure: the same two photos explained by SP and by every image peer that runs on the model.

    uv run python benchmarks/figure_peers.py --out docs/peers.jpg

The embedded EfficientNet-Lite0 (recommended settings for SP and PullbackAscent), a bundled photo (chelsea, its
label) and one that nobody calibrated on (scikit-image's motorcycle, the model's top-1). Each map is the
channel-summed map on its own robust signed scale (red for, blue against the class); the CAMs are unsigned and
7 x 7 (the last block) upsampled, so they show only red. Captum's LRP refuses this model (no rule for ZeroPad2d or
ReLU6) and has no column.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from semantic_pullbacks.examples import get_example
from semantic_pullbacks.methods import get_method
from semantic_pullbacks.methods.peers import PEERS
from semantic_pullbacks.models import load
from semantic_pullbacks.visualize import plot_method_grid, save_figure

METHODS = ("SoftPullback", "PullbackAscent", "Gradient", *PEERS)


def motorcycle(size: int) -> Image.Image:
    """scikit-image's motorcycle (left view of the stereo pair), centre square, as the unseen-photo set crops it."""
    import skimage.data

    a = np.asarray(skimage.data.stereo_motorcycle()[0])
    side = min(a.shape[:2])
    top, left = (a.shape[0] - side) // 2, (a.shape[1] - side) // 2
    return Image.fromarray(a[top : top + side, left : left + side]).resize((size, size), Image.LANCZOS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/peers.jpg"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load()
    cat = get_example("chelsea")
    bike = Path(args.out).with_suffix(".input.png")
    motorcycle(320).save(bike)
    try:
        x = torch.cat([model.load_image(cat.path), model.load_image(bike)])
    finally:
        bike.unlink()
    with torch.no_grad():
        y = torch.tensor([cat.target, int(model.model(x[1:]).argmax())])
    columns = {}
    for name in METHODS:
        try:
            columns[name] = get_method(name)(model).attribute(x, target=y)
        except Exception as error:  # a peer that refuses the model has no column; say why
            print(f"{name}: no column ({type(error).__name__}: {str(error)[:120]})", file=sys.stderr)
    titles = [f"chelsea: {model.class_names[int(y[0])]}", f"motorcycle (unseen): {model.class_names[int(y[1])]}"]
    print(save_figure(plot_method_grid(x, columns, model.domain, image_titles=titles), args.out))


if __name__ == "__main__":
    main()
