"""What metrics call to re-explain inputs: ``explain_func(model, inputs, targets) -> attributions``.

Metrics re-explain noisy inputs, other targets or a randomised copy of the model, so they need the explanation
method as a function of the model. :func:`as_explainer` makes one from a Captum-like method or a plain callable.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from semantic_pullbacks.errors import InvalidInputError

__all__ = ["AttributeLike", "Explainer", "as_explainer"]

Explainer = Callable[[nn.Module, Tensor, Tensor], Tensor]
"""``explain_func(model, inputs, targets) -> attributions`` shaped like ``inputs`` (or
channel-broadcastable).
"""


@runtime_checkable
class AttributeLike(Protocol):
    """A Captum-like method: anything with ``.attribute(inputs, target=...)``."""

    def attribute(self, inputs: Tensor, *args: Any, **kwargs: Any) -> Any: ...


def as_explainer(method: Any, **attribute_kwargs: Any) -> Explainer:
    """Adapt a Captum-like method (anything with ``.attribute(inputs, target=...)``) or a callable.

    The metrics call explainers as ``explain_func(model, inputs, targets)``. A method is bound to its model; when
    a metric passes another model (the randomised copy of ModelParameterRandomisation), the method is re-bound to
    it: this library's explainers through :meth:`~semantic_pullbacks.methods.Explainer.rebind` (Guided Grad-CAM
    finds its layer again by name), Captum's through a shallow copy with a new ``forward_func``. Captum's layer
    methods cannot be re-bound that way: pass a plain function building the method for the given model. Extra
    keyword arguments go to ``.attribute``. Gradients are enabled inside, because metrics run their own forward
    passes under ``torch.no_grad``.

    Example: ``explain = as_explainer(captum.attr.Saliency(model), abs=False)``.
    """
    if isinstance(method, AttributeLike):

        def explain(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
            bound = _bound_to(method, model)
            with torch.enable_grad():
                out = bound.attribute(inputs.detach().clone().requires_grad_(True), target=targets, **attribute_kwargs)
            if isinstance(out, tuple):
                out = out[0]
            return out.detach()

        return explain
    if callable(method):

        def call(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
            with torch.enable_grad():
                out = method(model, inputs, targets, **attribute_kwargs)
            return torch.as_tensor(out).detach()

        return call
    raise InvalidInputError(
        f"explain_func must be callable or have an .attribute(inputs, target=...) method, got {type(method)!r}"
    )


def _bound_to(method: Any, model: Any) -> Any:
    """``method`` as it would be constructed for ``model``."""
    if getattr(method, "forward_func", model) is model:
        return method
    rebind = getattr(method, "rebind", None)
    if callable(rebind):
        return rebind(model)
    if hasattr(method, "layer"):
        raise InvalidInputError(
            f"{type(method).__name__} is bound to a layer of another model; pass a function "
            "explain_func(model, inputs, targets) that builds the method for the given model"
        )
    bound = copy.copy(method)
    bound.forward_func = model
    return bound
