"""Pullback ascent: a few normalised steps along the soft pullback (counterfactuals, feature accentuation)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..engine import Temperatures
from ..errors import InvalidInputError
from .base import Explainer, forward_args
from .checks import input_pullback, positive_number
from .pullback import Gradient, SoftPullback, _Backward, normalise_step
from .targets import OutputSelector, TargetType, class_indices, objective

__all__ = ["AscentResult", "ClipMode", "GradientAscent", "PullbackAscent"]

ClipMode = Literal["never", "each", "last"]


@dataclass(frozen=True)
class AscentResult:
    """What an ascent produced: ``attribution = counterfactual - inputs``; ``scores[k]`` is the target's value
    at step k (k = 0 is the input), one row per sample."""

    inputs: torch.Tensor
    counterfactual: torch.Tensor
    attribution: torch.Tensor
    scores: torch.Tensor  # (steps + 1, B)
    trajectory: tuple[torch.Tensor, ...] = ()


class PullbackAscent(Explainer):
    """``x_k = x_{k-1} + alpha * v / ||v||`` with ``v`` the soft pullback at ``x_{k-1}``; attribution ``x_K - x``.

    Paper defaults for 224x224 inputs in [-1, 1]: ``steps=5, alpha=20, eps=None``, evaluated without clipping
    (``clip="never"``) and visualised with ``clip="last"``.

    >>> result = PullbackAscent(model, clip="last").run(x, target=285)   # doctest: +SKIP
    >>> result.counterfactual, result.scores[-1]                          # doctest: +SKIP
    """

    uses_pullback = True

    def __init__(
        self,
        model: nn.Module | Callable[..., Any],
        temperatures: Temperatures | Mapping[str, Any] | None = None,
        *,
        steps: int = 5,
        alpha: float | None = 20.0,
        eps: float | None = None,
        clip: ClipMode = "never",
        domain: tuple[float, float] = (-1.0, 1.0),
        keep_trajectory: bool = False,
        output_selector: OutputSelector = None,
    ) -> None:
        super().__init__(model, output_selector=output_selector)
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise InvalidInputError(f"steps must be a positive integer, got {steps!r}")
        alpha = positive_number("alpha", alpha, none_means="raw steps")
        eps = positive_number("eps", eps, none_means="no bound on the distance")
        if clip not in ("never", "each", "last"):
            raise InvalidInputError(f"clip must be 'never', 'each' or 'last', got {clip!r}")
        self.steps, self.alpha, self.eps, self.clip, self.domain = steps, alpha, eps, clip, _domain(domain)
        self.keep_trajectory = keep_trajectory
        self.temperatures = Temperatures.coerce(temperatures)
        self._step_method: _Backward = self._make_step_method(model, output_selector)

    def _make_step_method(self, model: Any, output_selector: OutputSelector) -> _Backward:
        return SoftPullback(model, self.temperatures, output_selector=output_selector)

    def run(self, inputs: torch.Tensor, target: TargetType = None, additional_forward_args: Any = None) -> AscentResult:
        """The full ascent: counterfactual, attribution, per-step target scores and (optionally) the path."""
        x0 = self._check_inputs(inputs)
        ascent, target = self._for_target(target)
        with self._caller_state():
            return ascent._run(x0, target, forward_args(additional_forward_args))

    def _run(
        self, x0: torch.Tensor, target: TargetType, args: tuple[Any, ...], final_score: bool = True
    ) -> AscentResult:
        """The loop; ``final_score=False`` (plain ``attribute``) skips the forward pass that only scores x_K."""
        step = self._step_method
        # "top-1" must be resolved once at x0, not drift to another class along the way; the first step's own
        # forward pass (bit-identical to the model's) resolves it, so no extra pass is spent on it.
        resolve = target is None or isinstance(target, (int, list, tuple))
        lo, hi = self.domain
        x = x0.clone()
        scores, path = [], [x0] if self.keep_trajectory else []
        for _ in range(self.steps):
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                with step._context():
                    output = step._output(xr, args)
                    if resolve:
                        target, resolve = class_indices(output.detach(), target, x0.shape[0]), False
                    score = objective(output, target, x0.shape[0])
                    v = input_pullback(score.sum(), xr, output, self.model)
            scores.append(score.detach())
            x = x + normalise_step(v, self.alpha)
            if self.eps is not None:
                delta = x - x0
                norm = delta.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))
                x = x0 + delta * torch.clamp(self.eps / norm.clamp_min(1e-12), max=1.0)
            if self.clip == "each":
                x = x.clamp(lo, hi)
            if self.keep_trajectory:
                path.append(x.detach())
        if self.clip == "last":
            x = x.clamp(lo, hi)
            if self.keep_trajectory:
                path[-1] = x.detach()
        if final_score:
            with torch.no_grad():
                scores.append(step._objective(x, target, args))
        x = x.detach()
        return AscentResult(x0, x, x - x0, torch.stack(scores), tuple(path))

    def _attribute(self, x: torch.Tensor, target: TargetType, args: tuple[Any, ...], **kwargs: Any) -> torch.Tensor:
        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(kwargs)}")
        return self._run(x, target, args, final_score=False).attribution


def _domain(domain: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in domain)
    except (TypeError, ValueError):
        lo = hi = math.nan
    if not lo < hi:  # False for NaN too
        raise InvalidInputError(f"domain must be (low, high) with low < high, got {domain!r}")
    return lo, hi


class GradientAscent(PullbackAscent):
    """The same loop with the ordinary gradient: the baseline for :class:`PullbackAscent`."""

    uses_pullback = False

    def _make_step_method(self, model: Any, output_selector: OutputSelector) -> _Backward:
        return Gradient(model, output_selector=output_selector)
