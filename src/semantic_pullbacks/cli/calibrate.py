"""``semantic-pullbacks calibrate``: fit temperatures to a model and its images, write a settings file."""

from __future__ import annotations

import argparse
import sys

from ._common import add_model_options, load_model, split_list

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="search temperatures (and ascent K, alpha) for a model on its images; writes a settings file",
        description="Coordinate search over the temperatures of the op families the model uses, scored by the "
        "median ratio infidelity(SP)/infidelity(Gradient) on one split of the images and reported on the other. "
        "The settings file it writes is accepted by explain, compare, counterfactuals, evaluate and app.",
    )
    p.add_argument(
        "images",
        nargs="*",
        default=["examples"],
        metavar="IMAGE",
        help="image files, folders, 'example:NAME' or 'examples' (default: the bundled photos)",
    )
    add_model_options(p)
    p.add_argument("--families", help="families to search, e.g. 'relu,maxpool' (default: those the model uses)")
    p.add_argument("--budget", type=float, default=600.0, help="time budget in seconds (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=1, help="coordinate-descent rounds (default: %(default)s)")
    p.add_argument("--ascent", action="store_true", help="also tune PullbackAscent's K and alpha")
    p.add_argument(
        "--constraint",
        action="append",
        default=[],
        metavar="METRIC=RATIO",
        help="upper bound on another metric's median ratio to the gradient, e.g. 'max_sensitivity=0.5' (repeatable)",
    )
    p.add_argument(
        "--calibration-fraction",
        type=float,
        default=0.5,
        help="share of the images used to fit; the rest report (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the metric (default: %(default)s)")
    p.add_argument("--out", default="calibration", metavar="DIR", help="output folder (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..calibration import calibrate, save_settings
    from ._images import expand_images
    from ._output import output_folder

    sources = expand_images(args.images)
    out = output_folder(args.out)  # before the search: its result must have somewhere to go
    model = load_model(args)
    x = torch.stack([model.preprocess.load(s.path) for s in sources]).to(model.device)
    families = split_list([args.families]) if args.families else None
    constraints = _parse_constraints(args.constraint)
    print(f"calibrating {model.name} on {len(sources)} images (budget {args.budget:.0f}s)", file=sys.stderr)
    result = calibrate(
        model.model,
        x,
        families=families,
        constraints=constraints,
        tune_ascent=args.ascent,
        calibration_fraction=args.calibration_fraction,
        budget_s=args.budget,
        rounds=args.rounds,
        seed=args.seed,
        progress=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True),
    )
    settings = type(result.settings)(
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
    return 0


def _parse_constraints(values: list[str]) -> dict[str, float]:
    from ..errors import InvalidInputError

    bounds = {}
    for text in values:
        name, sep, value = text.partition("=")
        try:
            bound = float(value)
        except ValueError:
            bound = -1.0
        if not sep or not name.strip() or not bound > 0:
            raise InvalidInputError(f"--constraint {text!r}: write METRIC=RATIO with a positive ratio")
        bounds[name.strip()] = bound
    return bounds
