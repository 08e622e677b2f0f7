"""What the web app does for one request, without any web framework: read an upload safely, classify it, explain it.

Kept apart from the Gradio layout (:mod:`semantic_pullbacks.app.ui`) so every rule a user can hit through the
browser — rejected files, limits, timeouts, method settings — is a plain function that unit tests call directly.

>>> cache = ModelCache()
>>> loaded = cache.get("efficientnet_lite0")
>>> x = read_image("cat.jpg", loaded)                                 # doctest: +SKIP
>>> result = explain(loaded, x, ExplainRequest(target=None))          # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from semantic_pullbacks.engine import Relative, Temperatures
from semantic_pullbacks.errors import ImageLoadError, InvalidInputError, SemanticPullbacksError
from semantic_pullbacks.imagenet import Prediction
from semantic_pullbacks.images import to_display
from semantic_pullbacks.methods import METHODS, PAIRS, AscentResult, accepted_settings, get_method
from semantic_pullbacks.methods.configure import method_settings
from semantic_pullbacks.models import DEFAULT_MODEL, LoadedModel, load
from semantic_pullbacks.visualize import heatmap_rgb, overlay_rgb, probability_note, robust_vmax

__all__ = [
    "ALLOWED_FORMATS",
    "ASCENT_METHODS",
    "DEFAULT_METHODS",
    "FREEZE_FAMILIES",
    "SLIDER_FAMILIES",
    "ExplainRequest",
    "ExplainResult",
    "Limits",
    "MethodPanels",
    "ModelCache",
    "RequestTimeoutError",
    "class_choices",
    "classify",
    "discover_models",
    "explain",
    "method_choices",
    "paper_temperatures",
    "read_image",
    "result_figure",
    "temperatures_from_controls",
]

#: PIL decoders the app lets near an upload. Formats such as EPS (which runs Ghostscript) are never opened.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
#: Methods whose result is a counterfactual image of their own (the others get one step along their map).
ASCENT_METHODS = frozenset({"PullbackAscent", "GradientAscent"})
DEFAULT_METHODS: tuple[str, ...] = ("SoftPullback",)
#: Families with a temperature slider; the others are freeze on/off switches (any number freezes them).
SLIDER_FAMILIES: tuple[str, ...] = ("relu", "gelu", "silu", "maxpool", "attention")
FREEZE_FAMILIES: tuple[str, ...] = ("gate", "norm")


class RequestTimeoutError(SemanticPullbacksError, TimeoutError):
    """A request ran past the app's time limit; it was stopped at the next forward pass."""


@dataclass(frozen=True)
class Limits:
    """Per-request guards of a public app: pixel count (decompression bombs), wall time, methods per request."""

    max_pixels: int = 25_000_000
    timeout_s: float | None = 120.0
    max_methods: int = 6

    def __post_init__(self) -> None:
        if self.max_pixels < 1:
            raise InvalidInputError(f"max_pixels must be positive, got {self.max_pixels}")
        if self.timeout_s is not None and not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise InvalidInputError(f"timeout_s must be a positive number of seconds or None, got {self.timeout_s}")
        if self.max_methods < 1:
            raise InvalidInputError(f"max_methods must be at least 1, got {self.max_methods}")


# ---------------------------------------------------------------------------------------------- models


def discover_models() -> list[str]:
    """The default model plus every torchvision/timm classifier whose weights are already on this machine.

    Only looks at caches (never downloads), so the list shows what can load offline right now.
    """
    found = [DEFAULT_MODEL]
    found += _cached_torchvision()
    found += _cached_timm()
    return list(dict.fromkeys(found))


def _cached_torchvision() -> list[str]:
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    if not folder.is_dir():  # checked first: importing torchvision costs seconds
        return []
    present = {p.name for p in folder.iterdir()}
    try:
        import torchvision.models as tvm
    except ImportError:
        return []
    names = []
    for name in tvm.list_models(module=tvm):
        try:
            url = tvm.get_model_weights(name).DEFAULT.url
        except (ValueError, AttributeError):  # a model without pretrained weights
            continue
        if os.path.basename(url) in present:
            names.append(f"torchvision:{name}")
    return names


def _hf_cache() -> Path:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    return Path(HF_HUB_CACHE)


def _cached_timm() -> list[str]:
    candidates = []
    for entry in sorted(_hf_cache().glob("models--timm--*")):
        if any(entry.glob("snapshots/*/*.safetensors")) or any(entry.glob("snapshots/*/*.bin")):
            candidates.append(entry.name.removeprefix("models--timm--"))
    if not candidates:  # checked first: importing timm costs seconds
        return []
    try:
        import timm
    except ImportError:
        return []
    return [f"timm:{name}" for name in candidates if timm.is_model(name)]


class ModelCache:
    """Loaded models kept in memory (least recently used dropped first), so switching back is instant.

    Thread-safe: Gradio may call from several worker threads, and a model must load once, not once per request.
    """

    def __init__(self, max_models: int = 2, loader: Callable[[str], LoadedModel] = load) -> None:
        if max_models < 1:
            raise InvalidInputError(f"max_models must be at least 1, got {max_models}")
        self.max_models = max_models
        self._loader = loader
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str) -> LoadedModel:
        with self._lock:
            if name in self._models:
                self._models.move_to_end(name)
                return self._models[name]
            loaded = self._loader(name)
            self._models[name] = loaded
            while len(self._models) > self.max_models:
                self._models.popitem(last=False)
            return loaded

    def __contains__(self, name: object) -> bool:
        return name in self._models


# ---------------------------------------------------------------------------------------------- inputs


def read_image(path: str | os.PathLike[str], loaded: LoadedModel, limits: Limits | None = None) -> torch.Tensor:
    """An uploaded file as the model's ``(3, H, W)`` input; :class:`ImageLoadError` for anything not a safe image.

    The format is sniffed from the content (the name proves nothing) and must be one of :data:`ALLOWED_FORMATS`;
    the pixel count is checked from the header, before any decoding, against ``limits.max_pixels``.
    """
    from PIL import Image, UnidentifiedImageError

    limits = limits or Limits()
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ImageLoadError("the upload is missing; please upload the image again")
    file = Path(path)
    if not file.is_file():
        raise ImageLoadError("the upload is missing; please upload the image again")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file, formats=list(ALLOWED_FORMATS)) as probe:
                width, height = probe.size
    except UnidentifiedImageError as error:
        raise ImageLoadError(
            f"this file is not a supported image; upload a {', '.join(ALLOWED_FORMATS)} file"
        ) from error
    except Image.DecompressionBombError as error:
        raise ImageLoadError("the image is refused as a possible decompression bomb (far too many pixels)") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageLoadError(f"the image file is corrupt or truncated ({error})") from error
    if width * height > limits.max_pixels:
        raise ImageLoadError(
            f"the image is {width}×{height} = {width * height:,} pixels, more than this app accepts "
            f"({limits.max_pixels:,}); downscale it first"
        )
    try:
        return loaded.preprocess.load(file, max_pixels=limits.max_pixels)
    except ImageLoadError as error:  # the library's message names the server-side temp path: keep it out
        reason = str(error).split(": ", 1)[-1]
        raise ImageLoadError(f"cannot read the image: {reason}") from error


def classify(loaded: LoadedModel, x: torch.Tensor, k: int = 5) -> list[Prediction]:
    """Top-``k`` classes for one ``(3, H, W)`` input (fewer if the model has fewer classes)."""
    return loaded.predict(_batch(x, loaded), k=min(k, len(loaded.class_names)))[0]


def class_choices(loaded: LoadedModel) -> list[tuple[str, int]]:
    """``(label, index)`` pairs for a searchable class picker; the index disambiguates repeated names."""
    return [(f"{name} ({i})", i) for i, name in enumerate(loaded.class_names)]


def method_choices() -> list[str]:
    """Pullback methods first, then their gradient baselines, as the picker lists them."""
    pullbacks = list(PAIRS)
    baselines = [cls.__name__ for cls in PAIRS.values() if cls is not None]
    return list(dict.fromkeys(pullbacks + baselines + list(METHODS)))


def paper_temperatures() -> dict[str, float | bool]:
    """The paper's defaults as the app's controls hold them: slider values and freeze switches."""
    defaults = Temperatures()
    values: dict[str, float | bool] = {f: float(defaults.get(f)) for f in SLIDER_FAMILIES}  # type: ignore[arg-type]
    values.update({f: defaults.get(f) is not None for f in FREEZE_FAMILIES})
    return values


def temperatures_from_controls(values: Mapping[str, Any], *, relative: bool = False) -> Temperatures:
    """Slider values (0 = hard gate, the ordinary gradient) and freeze switches as :class:`Temperatures`.

    With ``relative`` the slider values are multiples of each layer's pre-activation std (scale-aware
    temperatures, :class:`~semantic_pullbacks.Relative`), which transfer across models better than absolute ones;
    the attention slider stays absolute, as attention temperatures only can be.
    """
    _check_controls(values)
    settings: dict[str, Any] = {}
    for family in SLIDER_FAMILIES:
        value = float(values.get(family, paper_temperatures()[family]))
        settings[family] = Relative(value) if relative and value > 0 and family != "attention" else value
    for family in FREEZE_FAMILIES:
        settings[family] = 1.0 if values.get(family, True) else None
    return Temperatures.coerce(settings)


def _check_controls(values: Any) -> None:
    """The controls as the UI sends them, checked for direct callers too: a misspelt family would otherwise be
    dropped and the default kept, a string reach arithmetic."""
    if not isinstance(values, Mapping):
        raise InvalidInputError(f"temperatures must be a mapping of family to value, got {type(values).__name__}")
    unknown = [k for k in values if k not in (*SLIDER_FAMILIES, *FREEZE_FAMILIES)]
    if unknown:
        raise InvalidInputError(
            f"unknown temperature famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))}; the "
            f"controls are {', '.join(SLIDER_FAMILIES)} (numbers >= 0) and {', '.join(FREEZE_FAMILIES)} (True/False)"
        )
    for family in SLIDER_FAMILIES:
        if family in values and not _is_number(values[family], minimum=0.0):
            raise InvalidInputError(f"temperature {family!r} must be a number >= 0, got {values[family]!r}")
    for family in FREEZE_FAMILIES:
        if family in values and not isinstance(values[family], bool):
            raise InvalidInputError(f"{family!r} is a switch: True (frozen) or False, got {values[family]!r}")


def _is_number(value: Any, *, minimum: float) -> bool:
    """Whether ``value`` is a real number (not a bool, not a string), finite and at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and value >= minimum


# ---------------------------------------------------------------------------------------------- explaining


@dataclass(frozen=True)
class ExplainRequest:
    """One click on "Explain": the target (``None`` = top-1), methods, temperatures, ascent steps K and size α."""

    target: int | str | None = None
    methods: Sequence[str] = DEFAULT_METHODS
    temperatures: Mapping[str, Any] = field(default_factory=paper_temperatures)
    steps: int = 5
    alpha: float = 20.0
    #: slider values as multiples of each layer's std rather than absolute temperatures
    relative: bool = False
    #: a finished set of temperatures (a preset: recommended, settings file, paper) that overrides the sliders
    preset: Temperatures | None = None
    #: the preset's own temperatures for the stepping methods (PullbackAscent, DoublePullback), if it has them
    ascent_preset: Temperatures | None = None


@dataclass(frozen=True)
class MethodPanels:
    """What one method shows: its signed map and overlay, and a counterfactual with the target's probability
    before and after (uint8 ``H×W×3`` arrays)."""

    method: str
    signed: np.ndarray
    overlay: np.ndarray
    counterfactual: np.ndarray
    counterfactual_note: str
    prob_before: float
    prob_after: float
    seconds: float

    @property
    def raises_target(self) -> bool:
        """Whether the counterfactual raised the target's probability (if not, it is shown as no counterfactual)."""
        return self.prob_after > self.prob_before

    @property
    def probability_note(self) -> str:
        """``"p 0.61 → 0.98"``, or the same followed by why it is no counterfactual."""
        return probability_note(self.prob_before, self.prob_after)


@dataclass(frozen=True)
class ExplainResult:
    """All panels of a request, with the input as the model saw it and the target it explains."""

    model: str
    image: np.ndarray
    target: int
    target_name: str
    panels: tuple[MethodPanels, ...]
    top: tuple[Prediction, ...] = ()


class _Deadline(nn.Module):
    """Wraps the model so that every forward pass first checks the request's deadline.

    PyTorch work cannot be interrupted from outside; checking here stops even a 50-sample SmoothGrad within one
    forward pass of the limit, and the engine's context managers clean up as the error passes through.
    """

    def __init__(self, model: nn.Module, deadline: float | None, limit_s: float | None) -> None:
        super().__init__()
        self.model = model
        self.deadline = deadline
        self.limit_s = limit_s
        self.eval()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise RequestTimeoutError(
                f"the request took longer than {self.limit_s:g} s and was stopped; choose fewer or faster methods "
                "(SoftPullback and PullbackAscent take about a second)"
            )
        return self.model(*args, **kwargs)


def _batch(x: torch.Tensor, loaded: LoadedModel) -> torch.Tensor:
    size = loaded.input_size
    if not isinstance(x, torch.Tensor) or tuple(x.shape) != (3, size, size):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InvalidInputError(f"x must be one image tensor of shape (3, {size}, {size}), got {shape}")
    if not x.is_floating_point():
        raise InvalidInputError(
            f"x must be a floating-point tensor as read_image returns it (the model's input range), got {x.dtype}"
        )
    if not bool(torch.isfinite(x).all()):
        raise InvalidInputError("x has NaN or infinite pixels: read the image with read_image, or clean the tensor")
    return x.unsqueeze(0).to(loaded.device)


def _make(name: str, model: nn.Module, temperatures: Temperatures, request: ExplainRequest, loaded: LoadedModel):  # type: ignore[no-untyped-def]
    """The method with the request's settings it accepts (ascent K, alpha and clipping, the model's domain), through
    the same mapping the CLI and ``SoftPullback(loaded)`` use; stochastic methods are seeded, so the same request
    shows the same map."""
    cls = get_method(name)
    kwargs = method_settings(
        cls,
        temperatures,
        ascent_temperatures=request.ascent_preset if request.preset else None,
        steps=request.steps,
        alpha=request.alpha,
        domain=loaded.domain,
    )
    accepted = accepted_settings(cls)
    kwargs.update({k: v for k, v in {"clip": "last", "seed": 0}.items() if k in accepted})
    return cls(model, **kwargs)


def _check(request: ExplainRequest, limits: Limits) -> list[str]:
    if not request.methods:
        raise InvalidInputError("choose at least one method")
    names = [get_method(m).__name__ for m in request.methods]
    names = list(dict.fromkeys(names))
    if len(names) > limits.max_methods:
        raise InvalidInputError(f"at most {limits.max_methods} methods per request, got {len(names)}")
    if isinstance(request.steps, bool) or not isinstance(request.steps, int) or not 1 <= request.steps <= 50:
        raise InvalidInputError(f"K (ascent steps) must be an integer from 1 to 50, got {request.steps!r}")
    if not (_is_number(request.alpha, minimum=0.0) and request.alpha > 0):
        raise InvalidInputError(f"α (step size) must be a positive number, got {request.alpha!r}")
    return names


def _target_prob(loaded: LoadedModel, x: torch.Tensor, target: int) -> float:
    with torch.no_grad():
        return float(torch.softmax(loaded.model(x).float(), dim=1)[0, target])


def explain(
    loaded: LoadedModel,
    x: torch.Tensor,
    request: ExplainRequest,
    *,
    limits: Limits | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> ExplainResult:
    """Run each requested method on the ``(3, H, W)`` input ``x`` and turn the results into display panels.

    Counterfactuals: an ascent method shows its own ``x_K``; any other method shows one step of size α along its
    normalised map, ``x + α·a/‖a‖`` (clipped to the domain), so every row answers "what does this map ask the
    image to become?". ``progress(fraction, message)`` is called before each method.
    """
    limits = limits or Limits()
    names = _check(request, limits)
    temperatures = request.preset or temperatures_from_controls(request.temperatures, relative=request.relative)
    batch = _batch(x, loaded)
    target = loaded.target(request.target) if request.target is not None else classify(loaded, x, 1)[0].index
    deadline = None if limits.timeout_s is None else time.monotonic() + limits.timeout_s
    guarded = _Deadline(loaded.model, deadline, limits.timeout_s)
    lo, hi = loaded.domain
    prob_before = _target_prob(loaded, batch, target)
    panels = []
    for i, name in enumerate(names):
        if progress is not None:
            progress(i / len(names), f"{name} ({i + 1}/{len(names)})")
        start = time.perf_counter()
        method = _make(name, guarded, temperatures, request, loaded)
        target_tensor = torch.tensor([target], device=batch.device)
        if name in ASCENT_METHODS:
            result: AscentResult = method.run(batch, target=target_tensor)
            attribution, counterfactual = result.attribution, result.counterfactual
            note = f"counterfactual: K={request.steps} steps of α={request.alpha:g}"
        else:
            attribution = method.attribute(batch, target=target_tensor)
            norm = float(attribution.flatten().norm())
            step = attribution * (request.alpha / norm) if norm > 0 else torch.zeros_like(attribution)
            counterfactual = (batch + step).clamp(lo, hi)
            note = f"one step of α={request.alpha:g} along the map"
        seconds = time.perf_counter() - start
        limit = robust_vmax(attribution[0].sum(0))
        panels.append(
            MethodPanels(
                method=name,
                signed=heatmap_rgb(attribution[0], vmax=limit),
                overlay=overlay_rgb(batch[0], attribution[0], loaded.domain, vmax=limit),
                counterfactual=to_display(counterfactual[0], loaded.domain, dtype="uint8"),
                counterfactual_note=note,
                prob_before=prob_before,
                prob_after=_target_prob(loaded, counterfactual, target),
                seconds=seconds,
            )
        )
    if progress is not None:
        progress(1.0, "done")
    return ExplainResult(
        model=loaded.name,
        image=to_display(batch[0], loaded.domain, dtype="uint8"),
        target=target,
        target_name=loaded.class_names[target],
        panels=tuple(panels),
        top=tuple(classify(loaded, x, 5)),
    )


def result_figure(result: ExplainResult):  # -> matplotlib.figure.Figure
    """One row per method — input, signed map, overlay, counterfactual — for the PNG download."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = len(result.panels)
    fig = Figure(figsize=(10.4, 2.6 * rows + 0.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 4, squeeze=False)
    for row, panel in zip(axes, result.panels):
        pictures = (result.image, panel.signed, panel.overlay, panel.counterfactual)
        titles = (
            "input",
            f"{panel.method} · signed map",
            f"{panel.method} · overlay",
            ("counterfactual · " if panel.raises_target else "") + panel.probability_note,
        )
        for ax, picture, title in zip(row, pictures, titles):
            ax.imshow(picture)
            warn = title is titles[-1] and not panel.raises_target
            ax.set_title(title, fontsize=9 if warn else 10, pad=4, color="#b03a2e" if warn else "black")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
    fig.suptitle(
        f"{result.model} · target: {result.target_name} ({result.target}) · maps: red = evidence for, blue = against",
        fontsize=11,
    )
    return fig
