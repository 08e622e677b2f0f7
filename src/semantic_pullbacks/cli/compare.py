"""``semantic-pullbacks compare``: several methods' maps for the same image and class, side by side.

The default set is quick on a CPU and tells the paper's story: the soft pullback against the plain gradient it
replaces, pullback ascent, and Guided Grad-CAM as the best-known classic.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..visualize import plot_method_grid
from ._common import (
    add_command,
    add_image_arguments,
    add_image_options,
    batch_targets,
    build_method,
    classify,
    load_model,
    resolve_method_names,
    resolve_targets,
    settings_from_args,
    split_list,
)
from ._images import expand_images, iter_batches
from ._output import Output, slug

__all__ = ["DEFAULT_METHODS", "register", "run"]

DEFAULT_METHODS = ("SoftPullback", "Gradient", "PullbackAscent", "GuidedGradCam")


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "compare",
        run,
        description="Explain each image with several methods for the same class and write one PNG per image\n"
        "with the maps side by side (each on its own colour scale).",
        epilog="Any method of semantic_pullbacks.methods works (an unknown name lists them all); SmoothGrad,\n"
        "IntegratedGradients, FusionGrad and their pullback versions take tens of seconds per image on a CPU.\n\n"
        "example:\n"
        "  semantic-pullbacks compare example:coffee --methods SoftPullback,Gradient,SmoothPullback",
    )
    add_image_arguments(parser)
    parser.add_argument(
        "--methods",
        action="append",
        metavar="A,B,...",
        help=f"methods to compare, comma-separated (default: {','.join(DEFAULT_METHODS)})",
    )
    parser.add_argument("--target", metavar="CLASS", help="class name or index (default: each image's top-1)")
    add_image_options(parser)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    names = resolve_method_names(split_list(args.methods) if args.methods else list(DEFAULT_METHODS))
    sources = expand_images(args.images)
    model = load_model(args)
    fixed = resolve_targets(model, [args.target]) if args.target else None
    methods = {name: build_method(name, model, settings, seed=args.seed) for name in names}

    with Output(args.out, len(sources), "compare") as out:
        for batch in iter_batches(model, sources, args.batch_size, out.fail):
            x = batch.tensor
            _, probs = classify(model, x)
            targets = batch_targets(probs, fixed, 1)[:, 0]
            maps = {name: method.attribute(x, target=targets) for name, method in methods.items()}
            for i, source in enumerate(batch.sources):
                index = int(targets[i])
                name = model.class_names[index]
                fig = plot_method_grid(
                    x[i : i + 1],
                    {m: a[i : i + 1] for m, a in maps.items()},
                    model.domain,
                    image_titles=[source.name],
                    class_name=f"{name} ({index}, p={float(probs[i, index]):.2f})",
                )
                out.say(f"{source.label}: {name} ({index}) with {', '.join(names)}")
                out.figure(fig, f"{source.name}_compare_{index}-{slug(name)}")
                out.advance()
    return out.finish()
