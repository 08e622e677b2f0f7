"""Running a Captum attribution method as an explainer of this library, and as its pullback version.

A pullback version is the classic method run while soft pullbacks replace gradients: the same Captum code,
called inside :func:`pullback_mode`. The ordinary versions are Captum's own implementations, so baselines are
the ones the field already trusts.

Where a name matches Captum's, so does the call: :class:`ConvergenceDelta` gives the methods with a completeness
check Captum's ``attribute`` signature (``attribute(x, baselines, ..., return_convergence_delta=True)``).
Stochastic methods draw fresh noise on every call, as Captum's do; ``seed=`` makes each call reproducible without
touching the caller's random state.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from ..engine import Temperatures, pullback_mode
from ..errors import InvalidInputError, UnexpectedArgumentError
from .base import Explainer, forward_args
from .checks import check_pullback_exists, input_pullback, reentrant_checkpoint_refused
from .isolation import hookable, seeded
from .targets import OutputSelector, TargetType, class_indices, objective, select_output

__all__ = ["CaptumMethod", "ConvergenceDelta", "Head"]


class Head(nn.Module):
    """The model with output selection (and a callable or direction target) folded in, so Captum sees logits.

    Built afresh for every call: it carries that call's target, so an explainer shared between threads never
    runs with another call's target. A direction target (one output-space vector per sample) travels as the last
    additional forward argument, which Captum expands with the inputs (noise samples, path steps, baselines).
    """

    def __init__(
        self,
        model: nn.Module | Callable[..., Any],
        selector: OutputSelector,
        target_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        takes_direction: bool = False,
    ) -> None:
        super().__init__()
        self.inner = model
        self.selector = selector
        self.target_fn = target_fn
        self.takes_direction = takes_direction

    def forward(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        if self.takes_direction:
            *args, direction = args  # type: ignore[assignment]
        out = select_output(self.inner(x, *args), self.selector)
        if self.takes_direction:
            return objective(out, direction, x.shape[0])[:, None]
        if self.target_fn is not None:
            return objective(out, self.target_fn, x.shape[0])[:, None]
        return out.reshape(x.shape[0], -1) if out.dim() > 2 else out


class CaptumMethod(Explainer):
    """Runs a Captum attribution method, inside :func:`pullback_mode` for the pullback variants."""

    captum_name: str = ""
    defaults: dict[str, Any] = {}
    #: whether the Captum implementation registers hooks on the model's modules during a call
    hooks_model: bool = False

    def __init__(
        self,
        model: nn.Module | Callable[..., Any],
        temperatures: Temperatures | Mapping[str, Any] | None = None,
        *,
        output_selector: OutputSelector = None,
        seed: int | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(model, output_selector=output_selector)
        self.temperatures = Temperatures.coerce(temperatures)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InvalidInputError(f"seed must be an int or None (fresh randomness on every call), got {seed!r}")
        self.seed = seed
        _check_settings(type(self).__name__, settings, self.defaults, "settings")
        self.settings = {**self.defaults, **settings}

    def _captum(self, head: Head) -> Any:
        """The Captum method, taking its gradients through :func:`input_pullback` like every explainer here."""
        return _through_input_pullback(self._captum_method(head))

    def _captum_method(self, head: Head) -> Any:
        import captum.attr as ca

        return getattr(ca, self.captum_name)(head)

    def _call(self, head: Head, x: torch.Tensor, target: Any, args: tuple[Any, ...], **settings: Any) -> Any:
        return self._captum(head).attribute(x, target=target, additional_forward_args=args or None, **settings)

    def _context(self):  # type: ignore[no-untyped-def]
        return pullback_mode(self.temperatures) if self.uses_pullback else contextlib.nullcontext()

    def _head(
        self, model: Any, x: torch.Tensor, target: TargetType, args: tuple[Any, ...]
    ) -> tuple[Head, Any, tuple[Any, ...]]:
        """This call's head around ``model``, the target Captum should select from its output, and the additional
        forward arguments to pass.

        One forward pass on the caller's own batch checks the target and that a pullback reaches the input,
        before Captum expands the batch (noise, paths, baselines) or hooks the model, where torch's own errors
        would surface instead, about a batch the caller never made.
        """
        probe = x.detach().requires_grad_(True)
        output = select_output(model(probe, *args), self.output_selector)
        score = objective(output, target, x.shape[0])
        checkpointed = check_pullback_exists(score, probe, output)
        if checkpointed is not None and self.hooks_model:
            raise reentrant_checkpoint_refused(type(self).__name__, checkpointed, model)
        if callable(target) and not isinstance(target, torch.Tensor):
            return Head(model, self.output_selector, target), 0, args
        if isinstance(target, torch.Tensor) and target.is_floating_point():
            return Head(model, self.output_selector, takes_direction=True), 0, (*args, target)
        indices = class_indices(output.detach(), target, x.shape[0]).tolist()
        return Head(model, self.output_selector), indices, args

    def _attribute(self, x: torch.Tensor, target: TargetType, args: tuple[Any, ...], **kwargs: Any) -> Any:
        _check_settings(type(self).__name__, kwargs, {**self.defaults, **self._call_options()}, "arguments")
        settings = {**self.settings, **kwargs}
        model = hookable(self.model) if self.hooks_model else contextlib.nullcontext(self.model)
        with model as forward, seeded(self.seed, x.device), torch.enable_grad(), self._context():
            head, captum_target, head_args = self._head(forward, x, target, args)
            return self._call(head, x, captum_target, head_args, **settings)

    def _call_options(self) -> dict[str, Any]:
        """Per-call arguments beyond the constructor's settings (Captum's ``return_convergence_delta``...)."""
        return {}

    def _attribute_targets(self, x, targets, args, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs.get("return_convergence_delta"):
            raise UnexpectedArgumentError(
                "attribute_targets() returns maps only; call attribute(..., return_convergence_delta=True) per target"
            )
        return super()._attribute_targets(x, targets, args, **kwargs)


class ConvergenceDelta:
    """Mixin for Captum's completeness check, ``sum(attributions) - (f(x) - f(baseline))`` per sample, and for
    Captum's own ``attribute`` signature, which these methods share in all but the order of their settings.

    A method lists in :attr:`attribute_parameters` the parameters of Captum's ``attribute`` after ``inputs``, in
    Captum's order, so that positional calls mean what they mean in Captum (``attribute(x, baselines, target)``);
    one ``attribute``, made for that list, then serves it. Settings left out (``None``) are the constructor's.
    """

    #: the parameters of Captum's ``attribute`` after ``inputs``, in Captum's order
    attribute_parameters: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "attribute_parameters" in vars(cls):
            cls.attribute = _captum_attribute(cls, cls.attribute_parameters)  # type: ignore[attr-defined]

    def has_convergence_delta(self) -> bool:
        return True

    def _call_options(self) -> dict[str, Any]:
        return {"return_convergence_delta": False}

    def _attribute_with_delta(
        self, inputs: torch.Tensor, target: TargetType, additional_forward_args: Any, delta: bool, **call: Any
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Captum's ``return_convergence_delta``: ``(attributions, delta)`` with delta per sample."""
        x = self._check_inputs(inputs)  # type: ignore[attr-defined]
        given = {k: v for k, v in call.items() if v is not None}
        explainer, target = self._for_target(target)  # type: ignore[attr-defined]
        with self._caller_state():  # type: ignore[attr-defined]
            out = explainer._attribute(
                x, target, forward_args(additional_forward_args), return_convergence_delta=delta, **given
            )
        if delta:
            attributions, deltas = out
            return attributions.detach(), deltas.detach()
        return out.detach()


#: parameters of Captum's ``attribute`` with a default other than ``None`` (``None``: the constructor's setting)
_ATTRIBUTE_DEFAULTS = {"return_convergence_delta": False}
_CALL_ARGUMENTS = ("target", "additional_forward_args", "return_convergence_delta")


def _captum_attribute(owner: type, parameters: tuple[str, ...]) -> Callable[..., Any]:
    """``owner.attribute(inputs, *parameters)`` with Captum's signature, passing the settings given on to
    :meth:`ConvergenceDelta._attribute_with_delta`."""
    missing = set(_CALL_ARGUMENTS) - set(parameters)
    if missing:
        raise TypeError(f"{owner.__name__}.attribute_parameters lacks {', '.join(sorted(missing))}")
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    signature = inspect.Signature(
        [
            inspect.Parameter("self", positional),
            inspect.Parameter("inputs", positional),
            *(inspect.Parameter(name, positional, default=_ATTRIBUTE_DEFAULTS.get(name)) for name in parameters),
        ]
    )

    def attribute(*args: Any, **kwargs: Any) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        try:
            call = signature.bind(*args, **kwargs)
        except TypeError as error:
            name = type(args[0]).__name__ if args else owner.__name__
            raise UnexpectedArgumentError(
                f"{name}.attribute() {error}; it takes (inputs, {', '.join(parameters)}), as Captum's does"
            ) from None
        call.apply_defaults()
        given = dict(call.arguments)
        self, inputs = given.pop("self"), given.pop("inputs")
        target, forward, delta = (given.pop(name) for name in _CALL_ARGUMENTS)
        return self._attribute_with_delta(inputs, target, forward, delta, **given)

    attribute.__signature__ = signature  # type: ignore[attr-defined]
    attribute.__name__ = "attribute"
    attribute.__qualname__ = f"{owner.__qualname__}.attribute"
    attribute.__module__ = owner.__module__
    attribute.__doc__ = (
        f"Captum's ``attribute(inputs, {', '.join(parameters)})``; settings left out use the constructor's. With "
        "``return_convergence_delta=True``: ``(attributions, delta)``."
    )
    # Captum's wrappers (NoiseTunnel) call ``method.attribute.__wrapped__`` to skip their usage logging.
    attribute.__wrapped__ = attribute  # type: ignore[attr-defined]
    return attribute


def _through_input_pullback(method: Any) -> Any:
    """Let a Captum method (and the methods it is composed of, as GuidedGradCam of GuidedBackprop) take its
    input gradients with :func:`input_pullback`: the same value, the same refusals as every other explainer, and
    reentrant checkpointing, which refuses ``autograd.grad``, taken with ``.backward()``."""
    for part in (method, *vars(method).values()):
        if callable(getattr(part, "gradient_func", None)):
            part.gradient_func = _captum_gradients
    return method


def _captum_gradients(
    forward_fn: Callable[..., Any],
    inputs: tuple[torch.Tensor, ...],
    target_ind: Any = None,
    additional_forward_args: Any = None,
) -> tuple[torch.Tensor, ...]:
    """Captum's ``gradient_func`` contract: the gradient of the selected outputs' sum w.r.t. each input."""
    from captum._utils.common import _run_forward

    with torch.autograd.set_grad_enabled(True):
        scores = _run_forward(forward_fn, inputs, target_ind, additional_forward_args).sum()
        return tuple(
            input_pullback(scores, x, None, forward_fn, retain_graph=i < len(inputs) - 1) for i, x in enumerate(inputs)
        )


def _check_settings(owner: str, given: Mapping[str, Any], known: Mapping[str, Any], what: str) -> None:
    unknown = set(given) - set(known)
    if unknown:
        raise UnexpectedArgumentError(
            f"{owner} got unexpected {what}: {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
        )
