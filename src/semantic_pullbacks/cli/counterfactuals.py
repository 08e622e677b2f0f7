"""``semantic-pullbacks counterfactuals``: what each image would need to look like to be another class.

A few normalised steps along the soft pullback (pullback ascent, clipped to the valid pixel range after the
last step, as the paper visualises them) turn the image towards each target class; the figure shows the
results and what changed, with the target's probability before and after. An ascent that does not raise that
probability is labelled as such, next to its image and in the printed summary, instead of passing for a
counterfactual.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from typing import Any

import torch
from matplotlib.figure import Figure

from ..errors import InvalidInputError
from ..methods import PullbackAscent
from ..models import LoadedModel
from ..visualize import plot_class_grid, plot_counterfactual_grid, probability_note
from ._common import (
    RunSettings,
    add_command,
    add_image_arguments,
    add_image_options,
    batch_targets,
    build_method,
    classify,
    load_model,
    positive_int,
    resolve_method_names,
    resolve_targets,
    settings_from_args,
    split_list,
    took,
)
from ._images import ImageBatch, ImageSource, expand_images, iter_batches
from ._neurons import accentuate_neurons, parse_neurons
from ._output import Output

__all__ = ["MAX_GRID_IMAGES", "register", "run"]

#: a combined image × class grid is also written for runs of 2..MAX_GRID_IMAGES images
MAX_GRID_IMAGES = 12


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "counterfactuals",
        run,
        description="Move each image a few steps along the soft pullback of each target class and write an\n"
        "image × class grid of the results (and of the changes): one PNG per image, plus one grid of all\n"
        f"images for 2 to {MAX_GRID_IMAGES} images.",
        epilog="example:\n  semantic-pullbacks counterfactuals example:chelsea example:coffee "
        "--classes 'tiger cat,espresso,lynx'",
    )
    add_image_arguments(parser)
    parser.add_argument(
        "--classes",
        action="append",
        metavar="A,B,...",
        help="target classes (names or indices), comma-separated or repeated (default: each image's top-K)",
    )
    parser.add_argument(
        "--top-k", type=positive_int, default=3, metavar="K", help="classes per image without --classes (default: 3)"
    )
    parser.add_argument(
        "--neuron",
        action="append",
        metavar="LAYER:CHANNEL",
        help="accentuate channel CHANNEL of layer LAYER instead of turning towards classes, repeatable or "
        "comma-separated; `semantic-pullbacks layers` lists the layers",
    )
    parser.add_argument(
        "--show",
        choices=("both", "images", "maps"),
        default="both",
        help="counterfactual images, their change maps, or both (default: %(default)s)",
    )
    parser.add_argument(
        "--method",
        default="PullbackAscent",
        help="PullbackAscent or its gradient baseline GradientAscent (default: %(default)s)",
    )
    add_image_options(parser)


@dataclass(frozen=True)
class _Row:
    """One image's counterfactuals: the image ``(C, H, W)``, one changed image per class ``(T, C, H, W)``, the
    classes and their probability notes (before → after)."""

    source: ImageSource
    image: torch.Tensor
    changed: torch.Tensor
    indices: list[int]
    classes: list[str]
    notes: list[str]

    def summary(self) -> str:
        done = zip(self.classes, self.indices, self.notes)
        return f"{self.source.label}: " + ", ".join(f"{n} ({c}): {m}" for n, c, m in done)

    def cpu(self) -> _Row:
        return replace(self, image=self.image.cpu(), changed=self.changed.cpu())


@dataclass(frozen=True)
class _Figure:
    """Draws rows of counterfactuals as ``--show`` asks: the images and their changes, or the change maps."""

    model: LoadedModel
    show: str
    title: str

    def __call__(self, rows: list[_Row]) -> Figure:
        images, changed = torch.stack([r.image for r in rows]), torch.stack([r.changed for r in rows])
        names, notes, titles = [r.classes for r in rows], [r.notes for r in rows], [r.source.name for r in rows]
        if self.show == "maps":
            titled = [[f"{n}\n{note}" for n, note in zip(row, notes_row)] for row, notes_row in zip(names, notes)]
            return plot_class_grid(
                images, changed - images[:, None], titled, self.model.domain,
                image_titles=titles, method=self.title, shared_scale=False,
            )  # fmt: skip
        return plot_counterfactual_grid(
            images, changed, names, self.model.domain,
            image_titles=titles, notes=notes, differences=self.show == "both", method=self.title,
        )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    (method_name,) = resolve_method_names([args.method])
    sources = expand_images(args.images)
    model = load_model(args)
    fixed = resolve_targets(model, split_list(args.classes)) if args.classes else None
    ascent = build_method(method_name, model, settings, seed=args.seed, clip="last")
    if not isinstance(ascent, PullbackAscent):
        raise InvalidInputError(f"--method {args.method!r} is not an ascent; use PullbackAscent or GradientAscent")
    if args.neuron:
        if args.classes:
            raise InvalidInputError("give --classes or --neuron, not both")
        neurons = parse_neurons(model, args.neuron)
        with Output(args.out, len(sources), "counterfactuals") as out:
            accentuate_neurons(model, ascent, method_name, neurons, sources, out, args.batch_size)
        return out.finish()
    draw = _Figure(model, args.show, _title(method_name, settings))
    kept: list[_Row] = []  # for the combined grid
    with Output(args.out, len(sources), "counterfactuals") as out:
        out.say(draw.title)
        for batch in iter_batches(model, sources, args.batch_size, out.fail):
            rows, seconds = _counterfactuals(model, ascent, batch, fixed, args.top_k)
            for row in rows:
                out.say(row.summary())
                out.figure(draw([row]), f"{row.source.name}_{method_name}_counterfactuals")
                if 2 <= len(sources) <= MAX_GRID_IMAGES:
                    kept.append(row.cpu())
                out.advance()
            out.say(took(method_name, seconds, len(rows), len(rows[0].indices) if rows else 0))
        if len(kept) >= 2:
            out.figure(draw(kept), f"{method_name}_counterfactuals_grid")
    return out.finish()


def _title(method: str, settings: RunSettings) -> str:
    alpha = "raw steps" if settings.alpha is None else f"alpha={settings.alpha:g}"
    return f"{method} ({settings.steps} step{'s' * (settings.steps != 1)}, {alpha})"


def _counterfactuals(
    model: LoadedModel, ascent: PullbackAscent, batch: ImageBatch, fixed: list[int] | None, k: int
) -> tuple[list[_Row], float]:
    """Each image of ``batch`` turned towards each of its target classes, with p(target) before and after; the
    seconds the ascents took."""
    x = batch.tensor
    _, before = classify(model, x)
    targets = batch_targets(before, fixed, k)
    results, after, seconds = [], [], 0.0
    for t in range(targets.shape[1]):
        start = time.perf_counter()
        counterfactual = ascent.run(x, target=targets[:, t]).counterfactual
        seconds += time.perf_counter() - start
        results.append(counterfactual)
        after.append(classify(model, counterfactual)[1])
    changed = torch.stack(results, 1)  # (B, T, C, H, W)
    rows = []
    for i, source in enumerate(batch.sources):
        indices = [int(c) for c in targets[i]]
        notes = [probability_note(float(before[i, c]), float(after[t][i, c])) for t, c in enumerate(indices)]
        names = [model.class_names[c] for c in indices]
        rows.append(_Row(source, x[i], changed[i], indices, names, notes))
    return rows, seconds
