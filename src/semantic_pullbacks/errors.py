"""Exceptions raised by semantic_pullbacks.

Every error the library raises on purpose derives from :class:`SemanticPullbacksError`, so callers can catch
the library's failures in one place without also swallowing bugs (``TypeError``, torch's ``RuntimeError``).
Messages name the offending argument and say what to do about it.
"""

from __future__ import annotations

__all__ = [
    "ImageLoadError",
    "InvalidInputError",
    "SemanticPullbacksError",
    "UnknownClassError",
    "UnknownModelError",
    "WeightsUnavailableError",
]


class SemanticPullbacksError(Exception):
    """Base class of every error raised deliberately by semantic_pullbacks."""


class InvalidInputError(SemanticPullbacksError, ValueError):
    """An argument has the wrong shape, range or value.

    Also a ``ValueError`` so that code written against plain Python conventions still catches it.
    """


class WeightsUnavailableError(SemanticPullbacksError):
    """Pretrained weights cannot be had without a network download.

    The library never downloads at run time; the message says which file to place where, or how to pass
    ``weights=`` explicitly.
    """


class UnknownModelError(SemanticPullbacksError, LookupError):
    """A model name is not known to any of the supported sources."""


class UnknownClassError(SemanticPullbacksError, LookupError):
    """A class index or name does not resolve to exactly one class.

    ``candidates`` holds ``(index, name)`` pairs of the closest matches, best first (may be empty).
    """

    def __init__(self, message: str, candidates: list[tuple[int, str]] | None = None) -> None:
        super().__init__(message)
        self.candidates: list[tuple[int, str]] = list(candidates or [])

    def __str__(self) -> str:  # LookupError would otherwise quote the message like a key
        return str(self.args[0]) if self.args else ""


class ImageLoadError(SemanticPullbacksError):
    """An image file is missing, unreadable, corrupt, not an image, or too large to decode safely."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"cannot load image {str(path)!r}: {reason}")
        self.path = path
        self.reason = reason
