"""``semantic-pullbacks explain``: what the model sees, and why, for each image.

Prints each image's top-5 and writes one figure per explained class (image, signed heat map,
input ⊙ attribution, overlay); several classes share one forward pass and also get a side-by-side grid.
A plain rerun explains everything again. Under torchrun
(``torchrun --nproc-per-node N -m semantic_pullbacks explain FOLDER --save-tensors npy``) each rank explains a
share, so each image is written once, and images finished by an earlier run with the same settings (the same
file: path and a digest of its bytes) are skipped; ``--resume`` asks for that skipping in one process too.
Stochastic methods are seeded per image, so a map does not depend on the batch or the rank that computed it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..evaluation import World
from ..evaluation.seeds import derive_seed
from ..evaluation.specs import temperatures_record
from ..imagenet import top_k
from ..methods import Explainer
from ..models import LoadedModel
from ..visualize import plot_class_grid, plot_explanation
from ._common import (
    RunSettings,
    add_command,
    add_image_arguments,
    add_image_options,
    batch_targets,
    build_method,
    classify,
    format_predictions,
    load_model,
    positive_int,
    resolve_method_names,
    resolve_targets,
    settings_from_args,
    split_list,
    took,
)
from ._done import DoneLog
from ._images import ImageBatch, ImageSource, expand_images, iter_batches
from ._neurons import explain_neurons, parse_neurons
from ._output import Output, slug

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "explain",
        run,
        description="Explain why the model predicts a class for each image. Prints the top-5 predictions and\n"
        "writes one PNG per image and class: input, signed heat map, input ⊙ attribution, overlay.",
        epilog="examples:\n  semantic-pullbacks explain example:chelsea --out out/\n"
        "  semantic-pullbacks explain photos/ --top-k 3 --save-tensors npy\n"
        "  semantic-pullbacks explain cat.jpg --target 'tiger cat' --method PullbackAscent\n"
        "  torchrun --nproc-per-node 4 -m semantic_pullbacks explain photos/ --save-tensors pt --device cuda\n\n"
        "Under torchrun each rank explains a share of the images (on cuda:LOCAL_RANK with --device cuda) and, with\n"
        "--save-tensors, skips those an earlier run with the same settings finished (same file: path and a\n"
        "digest of its bytes); --resume skips them in one process too, --no-resume never. Stochastic methods are\n"
        "seeded per image (from --seed), so maps do not depend on the batch or the number of processes.",
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
    which.add_argument(
        "--neuron",
        action="append",
        metavar="LAYER:CHANNEL",
        help="explain channel CHANNEL of layer LAYER (its mean over positions) instead of a class, repeatable or "
        "comma-separated; `semantic-pullbacks layers` lists the layers",
    )
    parser.add_argument(
        "--save-tensors", choices=("npy", "pt"), help="also save each raw (3, H, W) attribution in this format"
    )
    add_image_options(parser)
    parser.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="skip images an earlier run with the same settings finished in --out (default: only under torchrun "
        "with --save-tensors)",
    )


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    (method_name,) = resolve_method_names([args.method])
    everything = expand_images(args.images)
    with World.join(args.device) as world:
        model = load_model(args, device=world.device)
        fixed = resolve_targets(model, split_list(args.target)) if args.target else None
        explainer = build_method(method_name, model, settings, seed=args.seed)
        if args.neuron:
            return _explain_neurons(args, model, explainer, method_name, everything)
        job = _Job(model, explainer, method_name, args.seed, fixed, args.top_k or 1, args.save_tensors)
        done = DoneLog(args.out, job.record(settings), world.rank)
        sources = _still_to_do(args, world, everything, done)[world.rank :: world.size]  # each image by one rank
        with Output(args.out, len(sources), "explain") as out:
            for batch in iter_batches(model, sources, args.batch_size, out.fail):
                job.explain(batch, out, done)
        return out.finish()


def _explain_neurons(
    args: argparse.Namespace, model: LoadedModel, explainer: Explainer, method: str, sources: list[ImageSource]
) -> int:
    neurons = parse_neurons(model, args.neuron)
    with Output(args.out, len(sources), "explain") as out:
        explain_neurons(model, explainer, method, neurons, sources, out, args.batch_size, args.save_tensors)
    return out.finish()


def _still_to_do(
    args: argparse.Namespace, world: World, everything: list[ImageSource], done: DoneLog
) -> list[ImageSource]:
    """The images a resumed run has not finished yet (all of them when not resuming), saying how many it skips."""
    resume = args.resume if args.resume is not None else world.size > 1 and args.save_tensors is not None
    todo = [s for s in everything if not done.is_done(s.path)] if resume else everything
    if world.is_main and len(todo) < len(everything):
        print(
            f"{len(everything) - len(todo)} of {len(everything)} images were already explained in {args.out} "
            f"with these settings; skipping them (--no-resume to redo them)"
        )
    return todo


@dataclass(frozen=True)
class _Job:
    """What every image of a run is explained with: the model, the method and which classes (``fixed`` ones, or
    each image's top ``k``); ``save_tensors`` is the format raw maps are saved in, if any."""

    model: LoadedModel
    explainer: Explainer
    method: str
    seed: int
    fixed: list[int] | None
    k: int
    save_tensors: str | None

    def record(self, settings: RunSettings) -> dict[str, Any]:
        """Everything that changes the files: a resumed run skips an image only if all of it is the same."""
        ascent = settings.ascent_temperatures
        return {
            "model": [self.model.name, self.model.weights], "method": self.method, "seed": self.seed,
            "temperatures": temperatures_record(settings.temperatures), "steps": settings.steps,
            "alpha": settings.alpha, "targets": self.fixed, "top_k": self.k, "save_tensors": self.save_tensors,
            "ascent_temperatures": None if ascent is None else temperatures_record(ascent),
        }  # fmt: skip

    def explain(self, batch: ImageBatch, out: Output, done: DoneLog) -> None:
        """Each image's top-5 on the console, a figure per explained class (and a grid of them), then marked done."""
        x = batch.tensor
        logits, probs = classify(self.model, x)
        predictions = top_k(logits, min(max(5, self.k), logits.shape[1]), self.model.class_names)
        targets = batch_targets(probs, self.fixed, self.k)
        start = time.perf_counter()
        maps = _attribute(self.explainer, x, targets, batch.sources, self.method, self.seed)  # (T, B, C, H, W)
        seconds = time.perf_counter() - start
        for i, source in enumerate(batch.sources):
            out.say(f"{source.label}: top-5 of {self.model.name}")
            for line in format_predictions(predictions[i][:5]):
                out.say(line)
            labels = [
                self._figure(out, source, x[i], maps[t, i], int(c), float(probs[i, c]))
                for t, c in enumerate(targets[i])
            ]
            if len(labels) > 1:
                grid = plot_class_grid(
                    x[i : i + 1], maps[:, i : i + 1].transpose(0, 1), labels, self.model.domain,
                    image_titles=[source.name], method=f"{self.method} · {source.name}", shared_scale=True,
                )  # fmt: skip
                which = f"top{self.k}" if self.fixed is None else "targets"
                out.figure(grid, f"{source.name}_{self.method}_{which}")
            done.mark(source.path)
            out.advance()
        out.say(took(self.method, seconds, len(batch.sources), targets.shape[1]))

    def _figure(
        self, out: Output, source: ImageSource, image: torch.Tensor, attribution: torch.Tensor, index: int, p: float
    ) -> str:
        """One class's figure (and raw map, if asked); its label for the grid."""
        name = self.model.class_names[index]
        label = f"{name} ({index}, p={p:.2f})"
        stem = f"{source.name}_{self.method}_{index}-{slug(name)}"
        fig = plot_explanation(
            image, attribution, self.model.domain, image_title=source.name, class_name=label, method=self.method
        )
        out.figure(fig, stem)
        if self.save_tensors:
            out.tensor(attribution, stem, self.save_tensors)
        return label


def _attribute(
    explainer: Explainer, x: torch.Tensor, targets: torch.Tensor, sources: Sequence[ImageSource], method: str, seed: int
) -> torch.Tensor:
    """The maps of a batch; a stochastic method explains each image with a seed of its own (from ``seed``, the
    image's name and the method), so its map does not depend on the batch or the rank it was computed in."""
    if not getattr(explainer, "stochastic", False) or not hasattr(explainer, "seed"):
        return explainer.attribute_targets(x, targets)
    maps = []
    for i, source in enumerate(sources):
        explainer.seed = derive_seed(seed, source.name, method)
        maps.append(explainer.attribute_targets(x[i : i + 1], targets[i : i + 1]))
    return torch.cat(maps, dim=1)
