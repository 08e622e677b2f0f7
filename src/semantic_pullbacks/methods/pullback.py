"""SoftPullback and its plain-gradient twin: one forward, one backward."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..engine import Temperatures, pullback_mode
from ..engine.coverage import CoverageReport
from ..errors import UnexpectedArgumentError
from .base import Explainer
from .checks import check_pullback_exists, input_pullback, positive_number
from .layer_targets import LayerTap
from .targets import OutputSelector, TargetType, objective

__all__ = ["DoublePullback", "Gradient", "SoftPullback", "normalise_step"]


class _Backward(Explainer):
    """``d objective / d inputs`` with the backward pass chosen by :meth:`_context`."""

    def _context(self, backward_passes: int = 1):  # type: ignore[no-untyped-def]
        return contextlib.nullcontext()

    def _attribute(
        self, x: torch.Tensor, target: TargetType, args: tuple[Any, ...], layer: str | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """``layer=``: the pullback with respect to that layer's output instead of the input (Captum's
        ``LayerGradient`` convention)."""
        _reject(kwargs)
        x = x.requires_grad_(True)
        tap = contextlib.nullcontext() if layer is None else LayerTap(self.model, layer)
        with torch.enable_grad(), self._context(), tap:
            output = self._output(x, args)
            score = objective(output, target, x.shape[0])
            if layer is not None:
                return tap.pullback(score.sum())
            _explain_missing_pullback(score, x, output)
            del output  # the backward needs the graph, not the output: a language model's logits go before it
            return input_pullback(score.sum(), x, None, self.model)

    def _attribute_targets(
        self, x: torch.Tensor, targets: list[TargetType], args: tuple[Any, ...], **kwargs: Any
    ) -> torch.Tensor:
        """One shared forward pass; one backward per target through the retained graph."""
        _reject(kwargs)
        x = x.requires_grad_(True)
        maps = []
        with torch.enable_grad(), self._context(backward_passes=len(targets)):
            output = self._output(x, args)
            scores = [objective(output, t, x.shape[0]) for t in targets]
            for score in scores:
                _explain_missing_pullback(score, x, output)
            del output  # as in _attribute: freed before the backward passes
            for i, score in enumerate(scores):
                maps.append(input_pullback(score.sum(), x, None, self.model, retain_graph=i < len(targets) - 1))
        return torch.stack(maps)


class Gradient(_Backward):
    """The plain input gradient (Captum's ``Saliency(abs=False)``): the baseline SP improves on."""


class SoftPullback(_Backward):
    """The soft pullback of a target: gates frozen and softened, forward untouched.

    >>> sp = SoftPullback(model)                      # doctest: +SKIP
    >>> attr = sp.attribute(x, target=285)            # shape of x, signed
    >>> sp.coverage.softened                          # what the last pass softened
    """

    uses_pullback = True

    def __init__(
        self,
        model: nn.Module | Callable[..., Any],
        temperatures: Temperatures | Mapping[str, Any] | None = None,
        *,
        output_selector: OutputSelector = None,
    ) -> None:
        super().__init__(model, output_selector=output_selector)
        self.temperatures = Temperatures.coerce(temperatures)
        self.coverage = CoverageReport()

    def _context(self, backward_passes: int = 1):  # type: ignore[no-untyped-def]
        return _Recorder(self, backward_passes)


class _Recorder:
    """Enter ``pullback_mode`` and keep the coverage of the last pass on the explainer."""

    def __init__(self, owner: SoftPullback, backward_passes: int = 1) -> None:
        self.owner = owner
        self._cm = pullback_mode(owner.temperatures, backward_passes=backward_passes)

    def __enter__(self):  # type: ignore[no-untyped-def]
        session = self._cm.__enter__()
        self.owner.coverage = session.coverage
        return session

    def __exit__(self, *exc: Any) -> bool | None:
        return self._cm.__exit__(*exc)


def normalise_step(v: torch.Tensor, alpha: float | None) -> torch.Tensor:
    """``alpha * v / ||v||`` per sample (``alpha=None``: the raw ``v``); zero maps stay zero."""
    if alpha is None:
        return v
    norm = v.flatten(1).norm(dim=1).clamp_min(torch.finfo(v.dtype).tiny)
    return alpha * v / norm.view(-1, *([1] * (v.dim() - 1)))


class DoublePullback(SoftPullback):
    """The soft pullback taken a second time, at ``x + alpha * v / ||v||`` where ``v`` is the first one.

    The second look, from a point already moved towards the target, sharpens the map around the features the
    first step accentuated.
    """

    def __init__(
        self,
        model: nn.Module | Callable[..., Any],
        temperatures: Temperatures | Mapping[str, Any] | None = None,
        *,
        alpha: float | None = 20.0,
        output_selector: OutputSelector = None,
    ) -> None:
        super().__init__(model, temperatures, output_selector=output_selector)
        self.alpha = positive_number("alpha", alpha, none_means="raw steps")

    def _attribute(self, x: torch.Tensor, target: TargetType, args: tuple[Any, ...], **kwargs: Any) -> torch.Tensor:
        if "layer" in kwargs:
            raise UnexpectedArgumentError("DoublePullback moves the input by its first map: it has no layer= maps")
        if target is None:  # fix the class at the starting point, so both pullbacks explain the same thing
            with torch.no_grad():
                target = self._output(x, args).reshape(x.shape[0], -1).argmax(1)
        first = super()._attribute(x, target, args, **kwargs)
        moved = (x + normalise_step(first, self.alpha)).detach()
        return super()._attribute(moved, target, args, **kwargs)

    def _attribute_targets(self, x, targets, args, **kwargs):  # type: ignore[no-untyped-def]
        return torch.stack([self._attribute(x, t, args, **kwargs) for t in targets])


def _explain_missing_pullback(score: torch.Tensor, x: torch.Tensor, output: torch.Tensor) -> None:
    """Where ``score`` does not require grad, raise the error that says why, while the output is at hand (it tells
    a forward pass without autograd from a target that ignores the output)."""
    if not score.requires_grad:
        check_pullback_exists(score, x, output)


def _reject(kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise TypeError(f"unexpected arguments: {', '.join(kwargs)}")
