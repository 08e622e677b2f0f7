"""What a loaded classifier is: the module plus everything needed to feed it and read its output.

Explanations depend on the input domain (attributions are in its units), on the preprocessing (what the model
actually saw) and on the class names (what a target means); bundling them keeps CLI, app and scripts in step.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from semantic_pullbacks.calibration import Settings, load_settings, recommended_settings
from semantic_pullbacks.errors import InvalidInputError
from semantic_pullbacks.imagenet import Prediction, imagenet_classes, resolve_target, top_k
from semantic_pullbacks.images import DEFAULT_MAX_PIXELS, image_to_tensor, load_image, load_images
from semantic_pullbacks.methods import Explainer, get_method
from semantic_pullbacks.methods.configure import method_settings

__all__ = ["LoadedModel", "Preprocess", "wrap"]


@dataclass(frozen=True)
class Preprocess:
    """How a photo becomes a model input: resize the shorter side to ``resize``, centre-crop ``size``, map the
    pixels to ``domain``."""

    size: int
    resize: int
    domain: tuple[float, float]
    interpolation: str = "bicubic"

    def __call__(self, image) -> torch.Tensor:  # PIL.Image.Image -> (3, size, size)
        return image_to_tensor(image, self.size, self.domain, resize=self.resize, interpolation=self.interpolation)

    def load(self, path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> torch.Tensor:
        """Read one image file as a ``(3, size, size)`` tensor."""
        return load_image(
            path,
            self.size,
            self.domain,
            resize=self.resize,
            interpolation=self.interpolation,
            max_pixels=max_pixels,
        )

    def load_batch(
        self, paths: Sequence[str | os.PathLike[str]], *, max_pixels: int | None = DEFAULT_MAX_PIXELS
    ) -> torch.Tensor:
        """Read image files as one ``(N, 3, size, size)`` batch."""
        return load_images(
            paths,
            self.size,
            self.domain,
            resize=self.resize,
            interpolation=self.interpolation,
            max_pixels=max_pixels,
        )


@dataclass(frozen=True)
class LoadedModel:
    """A classifier ready to explain: ``model`` (eval mode) takes ``(N, 3, input_size, input_size)`` inputs in
    ``domain`` and returns logits over ``class_names``.

    ``source`` says where it came from (``"embedded"``, ``"torchvision"``, ``"timm"``, ``"user"``) and
    ``weights`` which weights it carries (a path, ``"random"``, ...).
    """

    model: nn.Module
    name: str
    input_size: int
    domain: tuple[float, float]
    class_names: tuple[str, ...]
    preprocess: Preprocess
    source: str = "user"
    weights: str = ""
    extra: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    def load_image(self, path: str | os.PathLike[str]) -> torch.Tensor:
        """Read an image file as this model expects it: a ``(1, 3, H, W)`` batch on the model's device."""
        return self.preprocess.load(path).unsqueeze(0).to(self.device)

    @property
    def device(self) -> torch.device:
        """Device of the model's first parameter or buffer (CPU for a parameter-less model)."""
        for tensor in (*self.model.parameters(), *self.model.buffers()):
            return tensor.device
        return torch.device("cpu")

    def predict(self, x: torch.Tensor, k: int = 5) -> list[list[Prediction]]:
        """Top-``k`` classes of each input in the batch ``x`` (no gradient is recorded)."""
        with torch.no_grad():
            logits = self.model(x.to(self.device))
        return top_k(logits, k, self.class_names)

    def target(self, spec: int | str) -> int:
        """Logit index for a class index, numeric string or (approximate) class name."""
        return resolve_target(spec, self.class_names)

    def method_settings(self, method: type[Explainer], settings: Settings | None = None) -> dict[str, Any]:
        """The constructor settings ``method`` accepts among ``settings`` (default: those recommended for this
        model's family) and this model's input domain: what ``SoftPullback(loaded)`` applies."""
        chosen = recommended_settings(self.name) if settings is None else settings
        a = chosen.ascent
        return method_settings(
            method,
            chosen.temperatures,
            ascent_temperatures=a.temperatures,
            steps=a.steps,
            alpha=a.alpha,
            domain=self.domain,
        )

    def explainer(
        self,
        method: str = "SoftPullback",
        *,
        settings: Settings | str | os.PathLike[str] | None = None,
        **overrides: Any,
    ) -> Explainer:
        """Method ``method`` for this model, with the settings the CLI and the app would use.

        ``settings``: ``None`` for the family's recommended settings (what ``SoftPullback(loaded)`` also gets), a
        :class:`~semantic_pullbacks.calibration.Settings` or the path of a settings file (``calibrate`` writes
        them). ``overrides`` (``temperatures=``, ``steps=``, ``seed=``...) win over both.

        >>> loaded.explainer("PullbackAscent", clip="last").run(x, target=285)   # doctest: +SKIP
        """
        cls = get_method(method)
        if settings is None:
            return cls(self, **overrides)
        if not isinstance(settings, Settings):
            settings = load_settings(settings)
        return cls(self.model, **{**self.method_settings(cls, settings), **overrides})


def _domain(domain: Sequence[float]) -> tuple[float, float]:
    if len(domain) != 2 or not float(domain[0]) < float(domain[1]):
        raise InvalidInputError(f"domain must be (lo, hi) with lo < hi, e.g. (0.0, 1.0); got {domain!r}")
    return float(domain[0]), float(domain[1])


def wrap(
    model: nn.Module,
    *,
    domain: Sequence[float] = (0.0, 1.0),
    input_size: int = 224,
    class_names: Sequence[str] | None = None,
    name: str | None = None,
    resize: int | None = None,
    set_eval: bool = True,
) -> LoadedModel:
    """Describe your own classifier so the CLI, app and visualisations can use it.

    ``domain`` is the value range ``model`` expects its pixels in (wrap it in :class:`NormalizedModel`
    first if it wants mean/std-normalised inputs). ``class_names`` defaults to ImageNet-1k. ``set_eval=True``
    puts the model in eval mode, because dropout or batch statistics would make explanations random; pass
    ``False`` to leave its mode as it is.

    >>> loaded = wrap(NormalizedModel(my_net, mean, std, domain=(0, 1)), domain=(0, 1), class_names=names)
    """
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if int(input_size) < 1:
        raise InvalidInputError(f"input_size must be a positive number of pixels, got {input_size}")
    lo_hi = _domain(domain)
    names = tuple(imagenet_classes() if class_names is None else (str(n) for n in class_names))
    if not names:
        raise InvalidInputError("class_names is empty; give one name per output logit")
    if set_eval:
        model.eval()
    size = int(input_size)
    return LoadedModel(
        model=model,
        name=name or type(model).__name__,
        input_size=size,
        domain=lo_hi,
        class_names=names,
        preprocess=Preprocess(size=size, resize=int(resize or size), domain=lo_hi),
        source="user",
        weights="user",
    )
