"""What every peer method shares: the library's Captum-style interface, the optional package it needs, and a name
that reads well in a table (``Zennit-EpsilonPlusFlat``).

Peers are other projects' methods run through this library, so that ``evaluate --methods``, the metrics and the
benchmarks treat them like our own. They never run on the caller's modules: the packages hook modules, set
attributes on them or rewrite their weights, so each works on a private copy (:mod:`.structure`).
"""

from __future__ import annotations

import importlib
import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ...errors import InvalidInputError, MissingDependencyError, UnexpectedArgumentError, UnsupportedModelError
from ..base import Explainer
from ..targets import OutputSelector, TargetType

__all__ = ["EXTRA", "PeerExplainer", "plain_classes", "require"]

#: the optional dependency group that installs every peer package
EXTRA = "peers"


def require(modules: tuple[str, ...], method: str) -> None:
    """Import ``modules`` or say which extra installs them (a broken install is reported the same way)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise MissingDependencyError(
                f"{method} needs the package that provides {name!r}, which is not installed: "
                f"pip install 'semantic-pullbacks[{EXTRA}]' (in a checkout: uv sync --extra {EXTRA})"
            ) from error


class PeerExplainer(Explainer):
    """Base class of the peers: ``Peer(model_or_loaded).attribute(x, target=...)``, a map of ``x``'s shape.

    Subclasses name the modules they import (``requires``) and may give a table name with a class keyword,
    ``class ZennitBetaSmooth(..., name="Zennit-BetaSmooth")``; :func:`~semantic_pullbacks.methods.get_method`
    finds them under it, separators ignored.
    """

    #: importable module names the method needs, all installed by the ``peers`` extra
    requires: tuple[str, ...] = ()

    def __init_subclass__(cls, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name is not None:
            cls.__name__ = name  # the qualified name stays the Python identifier, so pickling still finds it

    def __init__(self, model: nn.Module | Callable[..., Any], *, output_selector: OutputSelector = None) -> None:
        require(self.requires, type(self).__name__)
        super().__init__(model, output_selector=output_selector)
        _check_module(model, type(self).__name__)

    def _bind(self, model: Any) -> None:
        _check_module(model, type(self).__name__)
        super()._bind(model)

    def _no_options(self, kwargs: dict[str, Any]) -> None:
        """Peers take their settings in the constructor; a keyword ``attribute()`` does not know is refused."""
        if kwargs:
            raise UnexpectedArgumentError(
                f"{type(self).__name__}.attribute() got unexpected keyword arguments: {', '.join(sorted(kwargs))}"
            )


def _check_module(model: Any, method: str) -> None:
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(
            f"{method} works on the modules of an nn.Module (its package hooks them), got a "
            f"{type(model).__name__}; wrap the function in an nn.Module"
        )


def plain_classes(target: TargetType, batch: int) -> list[int | None] | None:
    """Per-sample class indices when the target spells them out (an int, one per sample, or None for each
    sample's top-1); ``None`` when the output is needed to read the target."""
    if target is None:
        return [None] * batch
    if isinstance(target, bool):
        raise InvalidInputError("target must be a class index, not a bool")
    classes: list[int] | None = None
    if isinstance(target, numbers.Integral):
        classes = [int(target)] * batch
    elif isinstance(target, torch.Tensor) and not target.is_floating_point() and target.dtype != torch.bool:
        flat = target.reshape(-1).tolist()
        classes = flat * batch if len(flat) == 1 else flat if len(flat) == batch else None
    elif isinstance(target, list) and len(target) == batch and all(_is_index(t) for t in target):
        classes = [int(t) for t in target]
    # negative indices and anything else go through the library's own target checks, on the output
    return classes if classes is not None and min(classes) >= 0 else None


def _is_index(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
