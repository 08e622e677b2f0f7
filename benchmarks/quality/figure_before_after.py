"""The README's before/after figure: the embedded model's maps by the gradient, the old and the new recommendation.

    uv run python benchmarks/quality/figure_before_after.py --out docs/before_after.jpg

Rows: bundled photos; columns: the photo, the gradient, SoftPullback at the old recommended ``relu = 3*std``,
SoftPullback at the current recommended settings, and 4x enlargements of the centre 56x56 pixels of the last two
(where a period-2 checkerboard shows, if there is one). Each map is the signed, channel-summed map on its own
robust colour scale, explaining each photo's target (its ImageNet label, else the model's top-1).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from semantic_pullbacks import Relative, Temperatures
from semantic_pullbacks.calibration import recommended_settings
from semantic_pullbacks.examples import get_example
from semantic_pullbacks.methods import Gradient, SoftPullback
from semantic_pullbacks.models import load
from semantic_pullbacks.visualize import plot_method_grid, save_figure

PHOTOS = ("chelsea", "coffee", "china", "raccoon")
OLD = Temperatures(relu=Relative(3.0))


def centre(a: torch.Tensor, size: int = 56, zoom: int = 4) -> torch.Tensor:
    """The centre ``size``² pixels, enlarged ``zoom`` times by pixel repetition (no smoothing)."""
    h, w = a.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    crop = a[..., top : top + size, left : left + size]
    return crop.repeat_interleave(zoom, -2).repeat_interleave(zoom, -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/before_after.jpg"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load("efficientnet_lite0")
    examples = [get_example(n) for n in PHOTOS]
    x = torch.cat([model.load_image(e.path) for e in examples])
    y = torch.tensor([e.target for e in examples])
    new = recommended_settings(model.name).temperatures
    old_map = SoftPullback(model.model, OLD).attribute(x, target=y)
    new_map = SoftPullback(model.model, new).attribute(x, target=y)
    columns = {
        "Gradient": Gradient(model.model).attribute(x, target=y),
        "SP, old: relu=3*std": old_map,
        "SP, new recommended": new_map,
        "old, centre ×4": centre(old_map),
        "new, centre ×4": centre(new_map),
    }
    titles = [f"{e.name}: {model.class_names[int(t)]}" for e, t in zip(examples, y)]
    fig = plot_method_grid(x, columns, model.domain, image_titles=titles)
    print(save_figure(fig, args.out))


if __name__ == "__main__":
    main()
