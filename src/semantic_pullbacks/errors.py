"""Typed errors: each names the bad argument and says what to do about it."""

from __future__ import annotations

__all__ = [
    "ImageLoadError",
    "InvalidInputError",
    "MissingDependencyError",
    "NotDifferentiableError",
    "SemanticPullbacksError",
    "UnexpectedArgumentError",
    "UnknownClassError",
    "UnknownLayerError",
    "UnknownModelError",
    "UnsupportedModelError",
    "WeightsUnavailableError",
]


class SemanticPullbacksError(Exception):
    """Base class of every error this library raises on purpose."""


class InvalidInputError(SemanticPullbacksError, ValueError):
    """An argument has the wrong shape, type, range or contains NaN/Inf."""


class UnsupportedModelError(SemanticPullbacksError, TypeError):
    """The model cannot be explained this way (e.g. TorchScript or torch.compile hides its operations)."""


class NotDifferentiableError(SemanticPullbacksError, RuntimeError):
    """A derivative the engine cannot take: of a soft pullback itself (``create_graph=True``, ``torch.func``
    transforms), or with autograd switched off (``torch.inference_mode``)."""


class UnknownModelError(SemanticPullbacksError, KeyError):
    """No model of that name is known."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsUnavailableError(SemanticPullbacksError, RuntimeError):
    """Pretrained weights cannot be had offline."""


class UnknownClassError(SemanticPullbacksError, KeyError):
    """A target class name or index does not match the model's classes."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownLayerError(SemanticPullbacksError, KeyError):
    """A layer name that is not one of the model's ``named_modules()`` names; the message lists the closest."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ImageLoadError(SemanticPullbacksError, OSError):
    """A file is missing, not an image, corrupt, or too large to decode safely."""


class UnexpectedArgumentError(InvalidInputError, TypeError):
    """A keyword argument the function does not take: refused rather than ignored (a TypeError, as Python's own)."""


class MissingDependencyError(SemanticPullbacksError, ImportError):
    """An optional package a method needs is not installed; the message names the extra that brings it."""
