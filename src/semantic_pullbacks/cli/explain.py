"""``semantic-pullbacks explain``: what the model sees, and why, for each image.

Prints each image's top-5 and writes one figure per explained class (image, signed heat map,
input ⊙ attribution, overlay); several classes share one forward pass and also get a side-by-side grid.
A plain rerun explains everything again. Under torchrun
(``torchrun --nproc-per-node N -m semantic_pullbacks explain FOLDER --save-tensors npy``) each rank explains a
share, so each image is written once, and images finished by an earlier run with the same settings (the same
file: path, size and modification time) are skipped; ``--resume`` asks for that skipping in one process too.
Stochastic methods are seeded per image, so a map does not depend on the batch or the rank that computed it.
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
    format_predictions,
    load_model,
    positive_int,
    resolve_method_names,
    resolve_targets,
    settings_from_args,
    split_list,
)
from ._images import expand_images, iter_batches
from ._output import Output, slug

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="explain images: top-5 and an attribution figure per class",
        description="Explain why the model predicts a class for each image. Prints the top-5 predictions and\n"
        "writes one PNG per image and class: input, signed heat map, input ⊙ attribution, overlay.",
        epilog="examples:\n  semantic-pullbacks explain example:chelsea --out out/\n"
        "  semantic-pullbacks explain photos/ --top-k 3 --save-tensors npy\n"
        "  semantic-pullbacks explain cat.jpg --target 'tiger cat' --method PullbackAscent\n"
        "  torchrun --nproc-per-node 4 -m semantic_pullbacks explain photos/ --save-tensors pt --device cuda\n\n"
        "Under torchrun each rank explains a share of the images (on cuda:LOCAL_RANK with --device cuda) and, with\n"
        "--save-tensors, skips those an earlier run with the same settings finished (same file: path, size,\n"
        "modification time); --resume skips them in one process too, --no-resume never. Stochastic methods are\n"
        "seeded per image (from --seed), so maps do not depend on the batch or the number of processes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_image_arguments(parser)
    parser.add_argument(
        "--method",
        default="SoftPullback",
        help="explanation method (default: %(default)s), e.g. Gradient, PullbackAscent, DoublePullback, "
        "SmoothPullback; an unknown name lists them all",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--target",
        action="append",
        metavar="CLASS",
        help="class name or index to explain, repeatable or comma-separated (default: each image's top-1)",
    )
    which.add_argument("--top-k", type=positive_int, metavar="K", help="explain each image's K most likely classes")
    parser.add_argument(
        "--save-tensors", choices=("npy", "pt"), help="also save each raw (3, H, W) attribution in this format"
    )
    add_model_options(parser)
    add_settings_options(parser)
    add_output_options(parser)
    parser.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="skip images an earlier run with the same settings finished in --out (default: only under torchrun "
        "with --save-tensors)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..evaluation import World
    from ..evaluation.specs import temperatures_record
    from ..imagenet import top_k
    from ..visualize import plot_class_grid, plot_explanation
    from ._done import DoneLog

    settings = settings_from_args(args)
    (method_name,) = resolve_method_names([args.method])
    everything = expand_images(args.images)
    with World.join(args.device) as world:
        model = load_model(args, device=world.device)
        fixed = resolve_targets(model, split_list(args.target)) if args.target else None
        explainer = build_method(method_name, model, settings, seed=args.seed)
        k = args.top_k or 1
        ascent = settings.ascent_temperatures
        done = DoneLog(
            args.out,
            {
                "model": [model.name, model.weights], "method": method_name, "seed": args.seed,
                "temperatures": temperatures_record(settings.temperatures), "steps": settings.steps,
                "alpha": settings.alpha, "targets": fixed, "top_k": k, "save_tensors": args.save_tensors,
                "ascent_temperatures": None if ascent is None else temperatures_record(ascent),
            },
            world.rank,
        )  # fmt: skip
        resume = args.resume if args.resume is not None else world.size > 1 and args.save_tensors is not None
        todo = [s for s in everything if not done.is_done(s.path)] if resume else everything
        sources = todo[world.rank :: world.size]  # each image written once, by one rank
        if world.is_main and len(todo) < len(everything):
            print(
                f"{len(everything) - len(todo)} of {len(everything)} images were already explained in {args.out} "
                f"with these settings; skipping them (--no-resume to redo them)"
            )
        with Output(args.out, len(sources), "explain") as out:
            for batch in iter_batches(model, sources, args.batch_size, out.fail):
                x = batch.tensor
                with torch.no_grad():
                    logits = model.model(x)
                probs = logits.float().softmax(1).cpu()
                predictions = top_k(logits, min(max(5, k), logits.shape[1]), model.class_names)
                if fixed is not None:
                    targets = torch.tensor([fixed] * x.shape[0], device=x.device)
                else:
                    targets = torch.tensor([[p.index for p in row[:k]] for row in predictions], device=x.device)
                start = time.perf_counter()
                maps = _attribute(explainer, x, targets, batch.sources, method_name, args.seed)  # (T, B, C, H, W)
                seconds = time.perf_counter() - start
                for i, source in enumerate(batch.sources):
                    out.say(f"{source.label}: top-5 of {model.name}")
                    for line in format_predictions(predictions[i][:5]):
                        out.say(line)
                    labels = []
                    for t in range(targets.shape[1]):
                        index = int(targets[i, t])
                        name = model.class_names[index]
                        label = f"{name} ({index}, p={float(probs[i, index]):.2f})"
                        labels.append(label)
                        stem = f"{source.name}_{method_name}_{index}-{slug(name)}"
                        fig = plot_explanation(
                            x[i],
                            maps[t, i],
                            model.domain,
                            image_title=source.name,
                            class_name=label,
                            method=method_name,
                        )
                        out.figure(fig, stem)
                        if args.save_tensors:
                            out.tensor(maps[t, i], stem, args.save_tensors)
                    if len(labels) > 1:
                        grid = plot_class_grid(
                            x[i : i + 1], maps[:, i : i + 1].transpose(0, 1), labels, model.domain,
                            image_titles=[source.name], method=f"{method_name} · {source.name}", shared_scale=True,
                        )  # fmt: skip
                        which = f"top{k}" if fixed is None else "targets"
                        out.figure(grid, f"{source.name}_{method_name}_{which}")
                    done.mark(source.path)
                    out.advance()
                images, classes = len(batch.sources), targets.shape[1]
                plural = ("s" if images != 1 else "", "es" if classes != 1 else "")
                out.say(f"{method_name} took {seconds:.2f} s ({images} image{plural[0]} x {classes} class{plural[1]})")
        return out.finish()


def _attribute(explainer: Any, x: Any, targets: Any, sources: list[Any], method: str, seed: int) -> Any:
    """The maps of a batch; a stochastic method explains each image with a seed of its own (from ``seed``, the
    image's name and the method), so its map does not depend on the batch or the rank it was computed in."""
    import torch

    from ..evaluation.seeds import derive_seed

    if not getattr(explainer, "stochastic", False) or not hasattr(explainer, "seed"):
        return explainer.attribute_targets(x, targets)
    maps = []
    for i, source in enumerate(sources):
        explainer.seed = derive_seed(seed, source.name, method)
        maps.append(explainer.attribute_targets(x[i : i + 1], targets[i : i + 1]))
    return torch.cat(maps, dim=1)
