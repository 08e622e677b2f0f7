"""One entry point, :func:`load`, for every supported source of pretrained classifiers.

Names are ``"efficientnet_lite0"`` (embedded, the default), ``"torchvision:NAME"`` or ``"timm:NAME"``; a bare
name is looked up in that order. The embedded models' weights come from installed packages; torchvision and timm
weights come from their caches, downloaded there on first use as those libraries do. Offline (``offline=True``,
``SEMANTIC_PULLBACKS_OFFLINE=1``, ``HF_HUB_OFFLINE=1``) a missing file is a :class:`WeightsUnavailableError`
that says what to do.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Sequence

import torch
from torch import nn

from semantic_pullbacks.errors import InvalidInputError, UnknownModelError
from semantic_pullbacks.imagenet import imagenet_classes
from semantic_pullbacks.models.efficientnet_lite import EFFICIENTNET_LITE, build_efficientnet_lite
from semantic_pullbacks.models.loaded import LoadedModel, Preprocess
from semantic_pullbacks.models.normalize import NormalizedModel
from semantic_pullbacks.models.timm_models import build_timm, timm_is_model
from semantic_pullbacks.models.torchvision_models import build_torchvision, torchvision_names

__all__ = ["DEFAULT_MODEL", "embedded_models", "load"]

DEFAULT_MODEL = "efficientnet_lite0"
_SOURCES = ("embedded", "torchvision", "timm")


def embedded_models() -> list[str]:
    """Names of the embedded EfficientNet-Lite variants (Lite1–4 need their weight package installed)."""
    return list(EFFICIENTNET_LITE)


def _split(name: str) -> tuple[str | None, str]:
    text = name.strip()
    if ":" in text:
        prefix, _, rest = text.partition(":")
        prefix = {"tv": "torchvision"}.get(prefix.lower(), prefix.lower())
        if prefix not in _SOURCES:
            raise UnknownModelError(
                f"unknown model source {prefix!r} in {name!r}; use one of: "
                + ", ".join(f"'{s}:NAME'" for s in _SOURCES)
            )
        return prefix, rest.strip()
    return None, text


def _embedded_key(name: str) -> str | None:
    key = name.lower().replace("-", "_")
    return key if key in EFFICIENTNET_LITE else None


def _suggest(name: str) -> str:
    pool = embedded_models() + torchvision_names()
    try:
        import timm

        pool += timm.list_models()
    except ImportError:
        pass
    close = difflib.get_close_matches(name, list(dict.fromkeys(pool)), n=5, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _freeze(model: nn.Module, device: torch.device | str | None) -> nn.Module:
    # Explanations differentiate with respect to inputs only; frozen parameters save memory and time.
    model.requires_grad_(False)
    model.eval()
    return model.to(device) if device is not None else model


def _check_domain(domain: Sequence[float]) -> tuple[float, float]:
    if len(domain) != 2 or not float(domain[0]) < float(domain[1]):
        raise InvalidInputError(f"domain must be (lo, hi) with lo < hi, e.g. (-1.0, 1.0); got {domain!r}")
    return float(domain[0]), float(domain[1])


def _class_names(count: int, fallback: Sequence[str] | None = None) -> tuple[str, ...]:
    if fallback is not None and len(fallback) == count:
        return tuple(fallback)
    if count == 1000:
        return tuple(imagenet_classes())
    return tuple(f"class {i}" for i in range(count))


def load(
    name: str = DEFAULT_MODEL,
    *,
    weights: str | os.PathLike[str] | None = None,
    device: torch.device | str | None = None,
    domain: Sequence[float] = (-1.0, 1.0),
    offline: bool = False,
) -> LoadedModel:
    """Load a pretrained classifier, ready to explain inputs in ``domain`` (default ``[-1, 1]``).

    ``weights``: ``None`` = the source's default pretrained weights (embedded package; torchvision/timm: their
    cache, downloaded there on first use), ``"random"`` = untrained (only when asked), a path to a checkpoint
    file, or a checkpoint URL (downloaded once into the torch hub cache). ``offline=True`` (or the environment
    variables ``SEMANTIC_PULLBACKS_OFFLINE``, ``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``) never downloads.
    torchvision and timm models are wrapped in :class:`NormalizedModel`, so every model takes pixels in ``domain``
    whatever its own mean/std normalisation; parameters are frozen (``requires_grad=False``) and the model is in
    eval mode.

    >>> m = load()                                     # embedded EfficientNet-Lite0, inputs in [-1, 1]
    >>> m = load("torchvision:resnet50", device="cuda")               # downloads the weights on first use
    >>> m = load("torchvision:resnet50", weights="~/ckpt/resnet50.pth", offline=True)
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError(f"name must be a non-empty model name such as {DEFAULT_MODEL!r}, got {name!r}")
    lo_hi = _check_domain(domain)
    if isinstance(weights, str | os.PathLike) and not isinstance(weights, str):
        weights = os.fspath(weights)
    if isinstance(weights, str) and weights.startswith("~"):
        weights = os.path.expanduser(weights)
    source, bare = _split(name)

    key = _embedded_key(bare)
    if source in (None, "embedded") and key is not None:
        model, size, description = build_efficientnet_lite(key, weights)
        if lo_hi != (-1.0, 1.0):  # native domain is x * 2 - 1
            model = NormalizedModel(model, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), domain=lo_hi)
        return LoadedModel(
            model=_freeze(model, device),
            name=key,
            input_size=size,
            domain=lo_hi,
            class_names=tuple(imagenet_classes()),
            preprocess=Preprocess(size=size, resize=size, domain=lo_hi, interpolation="bicubic"),
            source="embedded",
            weights=description,
        )
    if source == "embedded":
        raise UnknownModelError(f"no embedded model named {bare!r}; embedded: {', '.join(embedded_models())}")

    if source == "torchvision" or (source is None and bare in torchvision_names()):
        net, spec, description = build_torchvision(bare, weights, offline=offline)
        model = NormalizedModel(net, spec.mean, spec.std, domain=lo_hi)
        out_features = _num_outputs(net)
        return LoadedModel(
            model=_freeze(model, device),
            name=f"torchvision:{bare}",
            input_size=spec.size,
            domain=lo_hi,
            class_names=_class_names(out_features, spec.categories),
            preprocess=Preprocess(spec.size, spec.resize, lo_hi, _interpolation(spec.interpolation)),
            source="torchvision",
            weights=description,
        )

    if source == "timm" or (source is None and timm_is_model(bare)):
        net, config, description = build_timm(bare, weights, offline=offline)
        size = int(config["input_size"][-1])
        resize = math.floor(size / float(config.get("crop_pct") or 1.0))
        model = NormalizedModel(net, config["mean"], config["std"], domain=lo_hi)
        return LoadedModel(
            model=_freeze(model, device),
            name=f"timm:{bare}",
            input_size=size,
            domain=lo_hi,
            class_names=_class_names(int(getattr(net, "num_classes", 1000))),
            preprocess=Preprocess(size, resize, lo_hi, _interpolation(str(config.get("interpolation")))),
            source="timm",
            weights=description,
        )

    raise UnknownModelError(
        f"unknown model {name!r}{_suggest(bare)}. Use an embedded name ({', '.join(embedded_models())}), "
        "'torchvision:NAME' or 'timm:NAME', or wrap your own module with semantic_pullbacks.models.wrap()"
    )


def _interpolation(value: str) -> str:
    value = value.lower()
    return value if value in ("nearest", "bilinear", "bicubic", "lanczos") else "bilinear"


def _num_outputs(model: nn.Module) -> int:
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            last = module
    if isinstance(last, nn.Linear):
        return last.out_features
    if isinstance(last, nn.Conv2d):  # squeezenet classifies with a 1×1 convolution
        return last.out_channels
    return 1000
