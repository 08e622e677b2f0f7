"""What every subcommand shares: its entry in the command table, its option groups, and turning the options into
library objects (model, settings, methods, targets).

Everything the user typed is validated before the model is loaded or any image decoded, so mistakes cost a
second, not a run. Nothing here is heavier than the package itself (no matplotlib, no Gradio): ``--help`` reads
this module.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..calibration import Settings, load_settings, recommended_settings
from ..engine import Temperatures
from ..errors import InvalidInputError
from ..imagenet import Prediction
from ..methods import Explainer, accepted_settings, get_method
from ..methods.configure import method_settings
from ..models import LoadedModel, load

__all__ = [
    "COMMANDS",
    "Command",
    "RunSettings",
    "add_command",
    "add_image_arguments",
    "add_image_options",
    "add_model_options",
    "add_output_options",
    "add_settings_options",
    "batch_targets",
    "build_method",
    "classify",
    "format_predictions",
    "load_model",
    "parse_temperatures",
    "resolve_method_names",
    "resolve_targets",
    "settings_from_args",
    "split_list",
]


# ------------------------------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Command:
    """A subcommand as ``--help`` lists it, and the extra its module needs (``pip install
    'semantic-pullbacks[extra]'``)."""

    name: str
    extra: str
    help: str

    @property
    def module(self) -> str:
        return self.name.replace("-", "_")


#: every subcommand, in the order ``--help`` lists them
COMMANDS = {
    command.name: command
    for command in (
        Command("explain", "vision", "explain images: top-5 and an attribution figure per class"),
        Command("explain-text", "text", "explain a text model: words coloured by relevance, HTML page"),
        Command("compare", "vision", "compare explanation methods side by side"),
        Command(
            "counterfactuals", "vision", "turn images towards target classes (pullback ascent) and show what changed"
        ),
        Command("classes", "vision", "search ImageNet class names"),
        Command("layers", "vision", "list the model's layers and output shapes (for --neuron LAYER:CHANNEL)"),
        Command(
            "evaluate", "vision", "benchmark methods with the paper's metrics: one table with confidence intervals"
        ),
        Command(
            "calibrate",
            "vision",
            "choose temperatures for a model on its images, cross-validated; writes a settings file",
        ),
        Command("app", "app", "start the web app (Gradio) on localhost"),
    )
}


def add_command(
    subparsers: Any, name: str, run: Callable[[argparse.Namespace], int], *, description: str, epilog: str | None = None
) -> argparse.ArgumentParser:
    """The parser of command ``name``, which runs ``run(args)``; an epilog (examples) keeps its line breaks."""
    parser = subparsers.add_parser(
        name,
        help=COMMANDS[name].help,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter if epilog else argparse.HelpFormatter,
    )
    parser.set_defaults(func=run)
    return parser


# ------------------------------------------------------------------------------------------------- argparse


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def seed_int(text: str) -> int:
    """A seed: a whole number from 0 to 2**63 - 1."""
    value = _int_at_least(text, 0)
    if value > 2**63 - 1:
        raise argparse.ArgumentTypeError(f"must be at most 2**63 - 1, got {value}")
    return value


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def positive_or_none(text: str) -> float | str:
    """A positive number, or the string ``"none"`` (distinct from the option's absence, which is ``None``)."""
    if text.strip().lower() in ("none", "null", "off"):
        return "none"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'none', got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number or 'none', got {text!r}")
    return value


def add_image_arguments(parser: argparse.ArgumentParser, *, default: list[str] | None = None) -> None:
    """The ``IMAGE`` arguments: at least one, or with ``default`` (e.g. ``["examples"]``) any number."""
    if default is not None:
        parser.add_argument(
            "images", nargs="*", default=default, metavar="IMAGE",
            help="image files, folders, 'example:NAME' or 'examples' (default: the bundled photos)",
        )  # fmt: skip
        return
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="image files, folders (every image inside), 'example:NAME' (bundled photos: chelsea, coffee, rocket, "
        "cameraman, grace_hopper) or 'examples' (all of them)",
    )


def add_image_options(parser: argparse.ArgumentParser) -> None:
    """The option groups of the commands that draw figures of images: model, method settings, output."""
    add_model_options(parser)
    add_settings_options(parser)
    add_output_options(parser)


def add_model_options(parser: argparse.ArgumentParser, *, model_help: str | None = None) -> None:
    """``--model`` (default efficientnet_lite0; with ``model_help``, no default: the command picks one and says
    so in that help), ``--weights``, ``--offline``, ``--device``."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default=None if model_help else "efficientnet_lite0",
        help=model_help or "embedded name, 'torchvision:NAME' or 'timm:NAME' (default: %(default)s, embedded, offline)",
    )
    group.add_argument("--weights", help="checkpoint file or URL for the model ('random' for untrained weights)")
    group.add_argument(
        "--offline",
        action="store_true",
        help="never download weights; missing torchvision/timm weights are an error saying where to put them "
        "(also SEMANTIC_PULLBACKS_OFFLINE=1, HF_HUB_OFFLINE=1)",
    )
    group.add_argument(
        "--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1, mps (default: %(default)s)"
    )


def add_settings_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("method settings (later options override earlier sources)")
    group.add_argument(
        "--settings",
        metavar="FILE.json",
        help='settings file: {"temperatures": {"relu": 0.5, ...}, "ascent": {"steps": 5, "alpha": 20}}',
    )
    group.add_argument(
        "--paper-defaults",
        action="store_true",
        help="start from the paper's temperatures instead of the model family's recommended (calibrated) ones",
    )
    group.add_argument(
        "--temperatures",
        metavar="FAMILY=VALUE,...",
        help="soft-pullback temperatures, e.g. 'relu=0.5,maxpool=none,silu=2*std' (overrides --settings)",
    )
    group.add_argument("--steps", type=positive_int, help="pullback-ascent steps (default 5, or the settings file's)")
    group.add_argument(
        "--alpha",
        type=positive_or_none,
        help="pullback-ascent step length; 'none' for raw steps (default 20, or the settings file's)",
    )
    group.add_argument(
        "--seed", type=seed_int, default=0, help="seed of stochastic methods, 0 to 2**63-1 (default: %(default)s)"
    )


def add_output_options(
    parser: argparse.ArgumentParser,
    *,
    default: str = "out",
    what: str = "folder for the figures",
    batch_size: bool = True,
) -> argparse._ArgumentGroup:
    """The ``output`` group: ``--out`` (``what``, by default ``default``) and, with ``batch_size``, images per
    forward pass; a command adds its own output options to the group returned."""
    group = parser.add_argument_group("output")
    group.add_argument("--out", default=default, metavar="DIR", help=f"{what} (default: %(default)s)")
    if batch_size:
        group.add_argument(
            "--batch-size", type=positive_int, default=8, help="images per forward pass (default: %(default)s)"
        )
    return group


def split_list(values: Iterable[str] | None) -> list[str]:
    """Repeated and comma-separated values as one flat list: ``["a,b", "c"]`` -> ``["a", "b", "c"]``."""
    return [part.strip() for value in values or () for part in value.split(",") if part.strip()]


# ------------------------------------------------------------------------------------------------- library objects


@dataclass(frozen=True)
class RunSettings:
    """What shapes an explanation besides model, image and target (``alpha=None``: raw ascent steps)."""

    temperatures: Temperatures
    steps: int = 5
    alpha: float | None = 20.0
    #: temperatures of the stepping methods (PullbackAscent, DoublePullback), when the settings give their own
    ascent_temperatures: Temperatures | None = None

    @classmethod
    def of(cls, settings: Settings) -> RunSettings:
        """From a settings file's (or a model family's recommended) :class:`Settings`."""
        a = settings.ascent
        return cls(settings.temperatures, a.steps, a.alpha, a.temperatures)


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """The model family's recommended settings (the paper's defaults where none were measured), then the
    settings file (``--settings``), then explicit options; ``--paper-defaults`` starts from the paper instead."""
    if getattr(args, "paper_defaults", False) or not getattr(args, "model", None):
        settings = RunSettings(Temperatures())
    else:
        settings = RunSettings.of(recommended_settings(args.model))
    if getattr(args, "settings", None):
        settings = _from_file(args.settings)
    if getattr(args, "temperatures", None):
        changes = parse_temperatures(args.temperatures)
        try:
            parsed = Temperatures.coerce(changes)
        except InvalidInputError as error:
            raise InvalidInputError(f"--temperatures {args.temperatures!r}: {error}") from None
        temperatures = settings.temperatures.replace(**{name: parsed.get(name) for name in changes})
        # explicit temperatures are meant for every method, the stepping ones included
        settings = replace(settings, temperatures=temperatures, ascent_temperatures=None)
    if getattr(args, "steps", None) is not None:
        settings = replace(settings, steps=args.steps)
    alpha = getattr(args, "alpha", None)
    if alpha is not None:
        settings = replace(settings, alpha=None if alpha == "none" else alpha)
    return settings


def parse_temperatures(text: str) -> dict[str, str]:
    """Read ``"relu=0.5,maxpool=none,silu=2*std"`` into a family -> value mapping."""
    result: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise InvalidInputError(
                f"--temperatures {text!r}: write FAMILY=VALUE pairs separated by commas, "
                "e.g. 'relu=0.5,maxpool=none,silu=2*std'"
            )
        result[name.strip().lower()] = value.strip()
    if not result:
        raise InvalidInputError("--temperatures is empty; write FAMILY=VALUE pairs, e.g. 'relu=0.5'")
    return result


def _from_file(path: str) -> RunSettings:
    """A calibrated settings file (format of :mod:`semantic_pullbacks.calibration.settings`)."""
    return RunSettings.of(load_settings(path))


def load_model(args: argparse.Namespace, device: Any = None) -> LoadedModel:
    """The model on the requested device (``device`` overrides ``--device``: a torchrun rank's own GPU); an
    unusable device is an error, never a silent fallback."""
    try:
        device = torch.device(device if device is not None else args.device)
    except (RuntimeError, ValueError):
        raise InvalidInputError(f"--device {args.device!r} is not a torch device; use e.g. cpu, cuda or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"--device {args.device}: CUDA is not available here; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidInputError(f"--device {args.device}: MPS is not available here; use --device cpu")
    return load(args.model, weights=args.weights, device=device, offline=getattr(args, "offline", False))


def resolve_method_names(names: Sequence[str]) -> list[str]:
    """Canonical method names (``soft-pullback`` -> ``SoftPullback``); unknown names fail before any work."""
    if not names:
        raise InvalidInputError("no method given; list them like 'SoftPullback,Gradient'")
    resolved = [get_method(n).__name__ for n in names]
    return list(dict.fromkeys(resolved))


def build_method(
    name: str, model: LoadedModel, settings: RunSettings, *, seed: int | None = 0, clip: str = "never"
) -> Explainer:
    """Instantiate method ``name`` with the settings it understands (temperatures, ascent, seed, clip, domain),
    through the same mapping ``SoftPullback(loaded)`` uses in Python."""
    cls = get_method(name)
    _quiet_captum()
    kwargs = method_settings(
        cls,
        settings.temperatures,
        ascent_temperatures=settings.ascent_temperatures,
        steps=settings.steps,
        alpha=settings.alpha,
        domain=model.domain,
    )
    accepted = accepted_settings(cls)
    kwargs.update({k: v for k, v in {"seed": seed, "clip": clip}.items() if k in accepted})
    return cls(model.model, **kwargs)


def _quiet_captum() -> None:
    """Captum announces, on every call, things the methods do on purpose (inputs given ``requires_grad``, ReLU
    hooks set for Guided Grad-CAM); on a console that reads like a problem, so the CLI drops those two notes."""
    for message in ("Input Tensor .* did not already require gradients", "Setting backward hooks on ReLU"):
        warnings.filterwarnings("ignore", message=message, category=UserWarning, module="captum")


def resolve_targets(model: LoadedModel, specs: Sequence[str]) -> list[int]:
    """Class indices for ``--target``/``--classes`` values (indices or names, fuzzy, with suggestions)."""
    return list(dict.fromkeys(model.target(spec) for spec in specs))


def classify(model: LoadedModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's logits for a batch and its class probabilities (float32, on the batch's device)."""
    with torch.no_grad():
        logits = model.model(x)
    return logits, logits.float().softmax(1)


def batch_targets(probs: torch.Tensor, fixed: Sequence[int] | None, k: int) -> torch.Tensor:
    """The ``(B, T)`` classes to explain: the ``fixed`` ones for every image, else each image's ``k`` most likely."""
    if fixed is not None:
        return torch.tensor([list(fixed)] * probs.shape[0], device=probs.device)
    return probs.topk(min(k, probs.shape[1]), dim=1).indices


def took(method: str, seconds: float, images: int, classes: int) -> str:
    """What a batch's explanation cost, in the form the app shows it."""
    plural = ("s" if images != 1 else "", "es" if classes != 1 else "")
    return f"{method} took {seconds:.2f} s ({images} image{plural[0]} x {classes} class{plural[1]})"


def format_predictions(predictions: Sequence[Prediction]) -> list[str]:
    width = max(len(p.name) for p in predictions)
    return [f"  {rank}. {p.name:<{width}}  {p.index:>4}  {100 * p.prob:5.1f}%" for rank, p in enumerate(predictions, 1)]
