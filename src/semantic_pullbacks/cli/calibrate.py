"""``semantic-pullbacks calibrate``: fit temperatures to a model and its images, write a settings file."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..calibration import (
    DEFAULT_CRITERIA,
    CalibrationResult,
    Criterion,
    Settings,
    calibrate,
    recommended_settings,
    save_settings,
)
from ..errors import InvalidInputError
from ..examples import get_example
from ..models import LoadedModel
from ._common import (
    add_command,
    add_image_arguments,
    add_model_options,
    add_output_options,
    load_model,
    seed_int,
    split_list,
)
from ._images import ImageSource, expand_images
from ._output import output_folder

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers,
        "calibrate",
        run,
        description="Scores every candidate temperature setting of the op families the model uses on every image, "
        "by eight metrics each compared with the gradient under its own bound (infidelity, max-sensitivity, "
        "aliasing, top-layer randomisation, faithfulness correlation, monotonicity, Focus, random logit), and "
        "cross-validates the choice: each fold is chosen on the others and reported with the paper's metric "
        "settings. The settings file it writes is accepted by explain, compare, counterfactuals, evaluate and app.",
    )
    add_image_arguments(p, default=["examples"])
    add_model_options(p)
    p.add_argument("--families", help="families to search, e.g. 'relu,maxpool' (default: those the model uses)")
    p.add_argument("--folds", type=int, default=3, help="cross-validation folds (default: %(default)s)")
    p.add_argument("--budget", type=float, default=3600.0, help="time budget in seconds (default: %(default)s)")
    p.add_argument(
        "--bound",
        "--constraint",
        dest="bounds",
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        help="change one criterion's bound, e.g. 'max_sensitivity=0.4' (ratio to the gradient; repeatable)",
    )
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the folds and the metrics (default: %(default)s)")
    add_output_options(p, default="calibration", what="output folder", batch_size=False)


def run(args: argparse.Namespace) -> int:
    criteria = _criteria(DEFAULT_CRITERIA, args.bounds)
    sources = expand_images(args.images)
    out = output_folder(args.out)  # before the search: its result must have somewhere to go
    model = load_model(args)
    x, y = _images_and_labels(model, sources)
    start = recommended_settings(model.name)
    print(f"calibrating {model.name} on {len(sources)} images (budget {args.budget:.0f}s)", file=sys.stderr)
    result = calibrate(
        model.model,
        x,
        y,
        families=split_list([args.families]) if args.families else None,
        criteria=criteria,
        folds=args.folds,
        start=Settings(start.temperatures, start.ascent, model.name, {}),
        budget_s=args.budget,
        seed=args.seed,
        progress=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True),
    )
    _write(result, model, sources, out)
    return 0


def _images_and_labels(model: LoadedModel, sources: Sequence[ImageSource]) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoded images and their targets: a bundled photo's label, the model's top-1 for other images."""
    x = torch.stack([model.preprocess.load(s.path) for s in sources]).to(model.device)
    with torch.no_grad():
        top1 = model.model(x).argmax(1).tolist()
    y = torch.tensor([_label(s) if _label(s) is not None else t for s, t in zip(sources, top1)], device=model.device)
    return x, y


def _write(result: CalibrationResult, model: LoadedModel, sources: Sequence[ImageSource], out: Path) -> None:
    """The settings file (with the images it was fitted on), the table and the chart; the table also on stdout."""
    settings = Settings(
        result.settings.temperatures,
        result.settings.ascent,
        model.name,
        {**result.settings.evidence, "images": [s.label for s in sources]},
    )
    path = save_settings(settings, out / "settings.json")
    (out / "calibration.md").write_text(result.markdown(), encoding="utf-8")
    chart = result.plot(out / "calibration.png")
    print(result.markdown())
    print(f"settings: {path}\ntable:    {out / 'calibration.md'}\nchart:    {chart}")


def _label(source: ImageSource) -> int | None:
    """A bundled photo's target (its ImageNet label, else the model's top-1); other images: the top-1 (None)."""
    if source.label.startswith("example:"):
        return get_example(source.label.removeprefix("example:")).target
    return None


def _criteria(defaults: Sequence[Criterion], values: list[str]) -> tuple[Criterion, ...]:
    by_metric = {c.metric: c for c in defaults}
    for text in values:
        name, sep, value = text.partition("=")
        try:
            bound = float(value)
        except ValueError:
            bound = float("nan")
        key = name.strip()
        if not sep or key not in by_metric or bound != bound:
            raise InvalidInputError(
                f"--bound {text!r}: write METRIC=VALUE with METRIC one of {', '.join(by_metric)} and a number"
            )
        try:
            by_metric[key] = replace(by_metric[key], bound=bound)
        except InvalidInputError as error:
            raise InvalidInputError(f"--bound {text!r}: {error}") from None
    return tuple(by_metric.values())
