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
from typing import Any

from ._common import (
    add_image_arguments,
    add_model_options,
    add_output_options,
    add_settings_options,
    build_method,
    load_model,
    positive_int,
    resolve_method_names,
    resolve_targets,
    settings_from_args,
    split_list,
)
from ._images import expand_images, iter_batches
from ._output import Output

__all__ = ["MAX_GRID_IMAGES", "register", "run"]

#: a combined image × class grid is also written for runs of 2..MAX_GRID_IMAGES images
MAX_GRID_IMAGES = 12


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "counterfactuals",
        help="turn images towards target classes (pullback ascent) and show what changed",
        description="Move each image a few steps along the soft pullback of each target class and write an\n"
        "image × class grid of the results (and of the changes): one PNG per image, plus one grid of all\n"
        f"images for 2 to {MAX_GRID_IMAGES} images.",
        epilog="example:\n  semantic-pullbacks counterfactuals example:chelsea example:coffee "
        "--classes 'tiger cat,espresso,lynx'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    add_model_options(parser)
    add_settings_options(parser)
    add_output_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..errors import InvalidInputError
    from ..methods import PullbackAscent
    from ..visualize import plot_class_grid, plot_counterfactual_grid, probability_note

    settings = settings_from_args(args)
    (method_name,) = resolve_method_names([args.method])
    sources = expand_images(args.images)
    model = load_model(args)
    fixed = resolve_targets(model, split_list(args.classes)) if args.classes else None
    ascent = build_method(method_name, model, settings, seed=args.seed, clip="last")
    if not isinstance(ascent, PullbackAscent):
        raise InvalidInputError(f"--method {args.method!r} is not an ascent; use PullbackAscent or GradientAscent")
    keep_for_grid = 2 <= len(sources) <= MAX_GRID_IMAGES
    kept: list[tuple[str, Any, Any, list[str], list[str]]] = []
    alpha = "raw steps" if settings.alpha is None else f"alpha={settings.alpha:g}"
    title = f"{method_name} ({settings.steps} step{'s' * (settings.steps != 1)}, {alpha})"

    def draw(images: Any, changed: Any, names: Any, notes: Any, image_titles: list[str]) -> Any:
        if args.show == "maps":
            titled = [[f"{n}\n{note}" for n, note in zip(row, notes_row)] for row, notes_row in zip(names, notes)]
            return plot_class_grid(
                images, changed - images[:, None], titled, model.domain,
                image_titles=image_titles, method=title, shared_scale=False,
            )  # fmt: skip
        return plot_counterfactual_grid(
            images, changed, names, model.domain,
            image_titles=image_titles, notes=notes, differences=args.show == "both", method=title,
        )  # fmt: skip

    with Output(args.out, len(sources), "counterfactuals") as out:
        out.say(title)
        for batch in iter_batches(model, sources, args.batch_size, out.fail):
            x = batch.tensor
            with torch.no_grad():
                before = model.model(x).float().softmax(1)
            if fixed is not None:
                targets = torch.tensor([fixed] * x.shape[0], device=x.device)
            else:
                k = min(args.top_k, before.shape[1])
                targets = before.topk(k, dim=1).indices
            results, after, seconds = [], [], 0.0
            for t in range(targets.shape[1]):
                start = time.perf_counter()
                counterfactual = ascent.run(x, target=targets[:, t]).counterfactual
                seconds += time.perf_counter() - start
                with torch.no_grad():
                    after.append(model.model(counterfactual).float().softmax(1))
                results.append(counterfactual)
            changed = torch.stack(results, 1)  # (B, T, C, H, W)
            for i, source in enumerate(batch.sources):
                indices = [int(c) for c in targets[i]]
                names = [model.class_names[c] for c in indices]
                notes = [probability_note(float(before[i, c]), float(after[t][i, c])) for t, c in enumerate(indices)]
                out.say(f"{source.label}: " + ", ".join(f"{n} ({c}): {m}" for n, c, m in zip(names, indices, notes)))
                fig = draw(x[i : i + 1], changed[i : i + 1], [names], [notes], [source.name])
                out.figure(fig, f"{source.name}_{method_name}_counterfactuals")
                if keep_for_grid:
                    kept.append((source.name, x[i].cpu(), changed[i].cpu(), names, notes))
                out.advance()
            images, classes = len(batch.sources), targets.shape[1]
            plural = ("s" if images != 1 else "", "es" if classes != 1 else "")
            out.say(f"{method_name} took {seconds:.2f} s ({images} image{plural[0]} x {classes} class{plural[1]})")
        if len(kept) >= 2:
            fig = draw(
                torch.stack([k[1] for k in kept]),
                torch.stack([k[2] for k in kept]),
                [k[3] for k in kept],
                [k[4] for k in kept],
                [k[0] for k in kept],
            )
            out.figure(fig, f"{method_name}_counterfactuals_grid")
    return out.finish()
