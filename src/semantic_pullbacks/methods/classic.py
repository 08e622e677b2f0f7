"""Classic gradient methods and their pullback versions.

A pullback version is the classic method run while soft pullbacks replace gradients: the same Captum code,
called inside :func:`pullback_mode`. The ordinary versions are Captum's own implementations, so baselines are
the ones the field already trusts. FusionGrad (absent from Captum) is implemented here.

Where a name matches Captum's, so does the call: ``IntegratedGradients(model).attribute(x, baselines,
target=..., return_convergence_delta=True)``, ``GradientShap(model).attribute(x, baselines, n_samples)``,
``GuidedGradCam(model, layer)``. Stochastic methods draw fresh noise on every call, as Captum's do; ``seed=``
makes each call reproducible without touching the caller's random state.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ..engine import Temperatures, pullback_mode
from ..errors import InvalidInputError, UnexpectedArgumentError, UnsupportedModelError
from .base import Explainer, forward_args
from .checks import check_pullback_exists, input_pullback, reentrant_checkpoint_refused
from .targets import OutputSelector, TargetType, class_indices, objective, select_output

__all__ = [
    "DeepLift",
    "FusionGrad",
    "FusionPullback",
    "GradientShap",
    "GuidedGradCam",
    "GuidedPullbackCam",
    "IntegratedGradients",
    "IntegratedPullbacks",
    "PullbackDeepLift",
    "PullbackShap",
    "SmoothGrad",
    "SmoothPullback",
]


class _Head(nn.Module):
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


# Captum draws its noise from the global torch and numpy generators; a seeded call swaps in its own state for
# its whole length, so seeded calls from several threads take turns instead of interleaving their draws.
_GLOBAL_RNG = threading.RLock()


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Deterministic draws (torch and numpy, which Captum's GradientShap uses), the caller's RNG state restored."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with _GLOBAL_RNG, torch.random.fork_rng(devices=devices):
        numpy_state = np.random.get_state()
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)


_MODEL_TURNS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_TURNS_GUARD = threading.Lock()


@contextlib.contextmanager
def _hookable(model: Any) -> Iterator[Any]:
    """The model for Captum methods that hook its modules (DeepLift, Guided Grad-CAM) during a call.

    Hooks on the caller's modules would act on every other pass through them while the call runs: other threads,
    other explainers, the caller's own forward passes. So the hooks go on a copy of the module tree that shares
    every parameter and buffer (no weights are copied, and the copy always has the current ones). A model that
    cannot be copied is hooked itself, one call at a time.
    """
    private = None
    if isinstance(model, nn.Module):
        shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
        try:
            private = copy.deepcopy(model, shared)
        except (TypeError, RuntimeError, copy.Error):
            private = None
    if private is not None:
        yield private
        return
    with _TURNS_GUARD:
        lock = _MODEL_TURNS.setdefault(model, threading.RLock())
    with lock:
        yield model


def _captum_visible(method: Callable[..., Any]) -> Callable[..., Any]:
    """Captum's wrappers (NoiseTunnel) call ``method.attribute.__wrapped__`` to skip their usage logging."""
    method.__wrapped__ = method  # type: ignore[attr-defined]
    return method


class _CaptumMethod(Explainer):
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

    def _captum(self, head: _Head) -> Any:
        """The Captum method, taking its gradients through :func:`input_pullback` like every explainer here."""
        return _through_input_pullback(self._captum_method(head))

    def _captum_method(self, head: _Head) -> Any:
        import captum.attr as ca

        return getattr(ca, self.captum_name)(head)

    def _call(self, head: _Head, x: torch.Tensor, target: Any, args: tuple[Any, ...], **settings: Any) -> Any:
        return self._captum(head).attribute(x, target=target, additional_forward_args=args or None, **settings)

    def _context(self):  # type: ignore[no-untyped-def]
        return pullback_mode(self.temperatures) if self.uses_pullback else contextlib.nullcontext()

    def _head(
        self, model: Any, x: torch.Tensor, target: TargetType, args: tuple[Any, ...]
    ) -> tuple[_Head, Any, tuple[Any, ...]]:
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
            return _Head(model, self.output_selector, target), 0, args
        if isinstance(target, torch.Tensor) and target.is_floating_point():
            return _Head(model, self.output_selector, takes_direction=True), 0, (*args, target)
        indices = class_indices(output.detach(), target, x.shape[0]).tolist()
        return _Head(model, self.output_selector), indices, args

    def _attribute(self, x: torch.Tensor, target: TargetType, args: tuple[Any, ...], **kwargs: Any) -> Any:
        _check_settings(type(self).__name__, kwargs, {**self.defaults, **self._call_options()}, "arguments")
        settings = {**self.settings, **kwargs}
        model = _hookable(self.model) if self.hooks_model else contextlib.nullcontext(self.model)
        with model as forward, _seeded(self.seed, x.device), torch.enable_grad(), self._context():
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

    def _attribute_with_delta(
        self, inputs: torch.Tensor, target: TargetType, additional_forward_args: Any, delta: bool, **call: Any
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Captum's ``return_convergence_delta``: ``(attributions, delta)`` with delta per sample."""
        x = self._check_inputs(inputs)
        given = {k: v for k, v in call.items() if v is not None}
        with self._caller_state():
            out = self._attribute(
                x, target, forward_args(additional_forward_args), return_convergence_delta=delta, **given
            )
        if delta:
            attributions, deltas = out
            return attributions.detach(), deltas.detach()
        return out.detach()


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


class _ConvergenceDelta:
    """Mixin for Captum's completeness check: ``sum(attributions) - (f(x) - f(baseline))`` per sample."""

    def has_convergence_delta(self) -> bool:
        return True

    def _call_options(self) -> dict[str, Any]:
        return {"return_convergence_delta": False}


class SmoothGrad(_CaptumMethod):
    """SmoothGrad: the gradient averaged over ``n`` noisy copies (noise std ``stdevs`` in input units)."""

    captum_name = "Saliency"
    stochastic = True
    defaults = {"nt_samples": 50, "stdevs": 0.15, "nt_samples_batch_size": 10}

    def _call(self, head, x, target, args, **s):  # type: ignore[no-untyped-def]
        from captum.attr import NoiseTunnel

        return NoiseTunnel(self._captum(head)).attribute(
            x, nt_type="smoothgrad", target=target, additional_forward_args=args or None, abs=False, **s
        )


class SmoothPullback(SmoothGrad):
    """SmoothGrad with soft pullbacks in place of gradients."""

    uses_pullback = True


class IntegratedGradients(_ConvergenceDelta, _CaptumMethod):
    """Integrated Gradients from a baseline (default: zeros, mid-grey in [-1, 1]).

    ``attribute(inputs, baselines, target, additional_forward_args, n_steps, method, internal_batch_size,
    return_convergence_delta)`` as in Captum; arguments left out use the constructor's settings.
    """

    captum_name = "IntegratedGradients"
    multiplies_by_inputs = True  # Captum's default multiply_by_inputs=True: the maps carry (input - baseline)
    defaults = {"n_steps": 50, "method": "gausslegendre", "baselines": None, "internal_batch_size": 25}

    @_captum_visible
    def attribute(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        baselines: Any = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int | None = None,
        method: str | None = None,
        internal_batch_size: int | None = None,
        return_convergence_delta: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self._attribute_with_delta(
            inputs, target, additional_forward_args, return_convergence_delta,
            baselines=baselines, n_steps=n_steps, method=method, internal_batch_size=internal_batch_size,
        )  # fmt: skip


class IntegratedPullbacks(IntegratedGradients):
    uses_pullback = True


class GradientShap(_ConvergenceDelta, _CaptumMethod):
    """GradientSHAP; baselines default to zeros and uniform noise over the input domain.

    ``attribute(inputs, baselines, n_samples, stdevs, target, additional_forward_args, return_convergence_delta)``
    as in Captum; arguments left out use the constructor's settings.
    """

    captum_name = "GradientShap"
    multiplies_by_inputs = True  # Captum's default multiply_by_inputs=True: the maps carry (input - baseline)
    stochastic = True
    defaults = {"n_samples": 20, "stdevs": 0.0, "baselines": None, "domain": (-1.0, 1.0)}

    @_captum_visible
    def attribute(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        baselines: Any = None,
        n_samples: int | None = None,
        stdevs: float | None = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self._attribute_with_delta(
            inputs, target, additional_forward_args, return_convergence_delta,
            baselines=baselines, n_samples=n_samples, stdevs=stdevs,
        )  # fmt: skip

    def _call(self, head, x, target, args, baselines=None, domain=(-1.0, 1.0), **s):  # type: ignore[no-untyped-def]
        if baselines is None:
            lo, hi = domain
            noise = torch.rand((4, *x.shape[1:]), dtype=x.dtype, device=x.device) * (hi - lo) + lo
            baselines = torch.cat([torch.zeros_like(x[:1]), noise])
        return self._captum(head).attribute(
            x, baselines=baselines, target=target, additional_forward_args=args or None, **s
        )


class PullbackShap(GradientShap):
    uses_pullback = True


class DeepLift(_ConvergenceDelta, _CaptumMethod):
    """DeepLIFT (rescale rule) from a zero baseline; needs an ``nn.Module`` built from module activations.

    ``attribute(inputs, baselines, target, additional_forward_args, return_convergence_delta,
    custom_attribution_func)`` as in Captum.
    """

    captum_name = "DeepLift"
    multiplies_by_inputs = True  # Captum's default multiply_by_inputs=True: the maps carry (input - baseline)
    defaults = {"baselines": None, "custom_attribution_func": None}
    hooks_model = True

    @_captum_visible
    def attribute(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        baselines: Any = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
        custom_attribution_func: Callable[..., Any] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self._attribute_with_delta(
            inputs, target, additional_forward_args, return_convergence_delta,
            baselines=baselines, custom_attribution_func=custom_attribution_func,
        )  # fmt: skip

    def _captum_method(self, head: _Head) -> Any:
        import captum.attr as ca

        if not isinstance(self.model, nn.Module):
            raise UnsupportedModelError("DeepLift needs an nn.Module (it hooks the model's activation modules)")
        return ca.DeepLift(head)


class PullbackDeepLift(DeepLift):
    uses_pullback = True


class GuidedGradCam(_CaptumMethod):
    """Guided Grad-CAM at a convolutional layer: ``GuidedGradCam(model, layer)`` as in Captum (default layer: the
    model's last ``nn.Conv2d``).
    """

    captum_name = "GuidedGradCam"
    defaults = {"interpolate_mode": "nearest", "attribute_to_layer_input": False}
    hooks_model = True

    def __init__(  # type: ignore[no-untyped-def]
        self,
        model: nn.Module | Callable[..., Any],
        layer: nn.Module | None = None,
        temperatures: Temperatures | Mapping[str, Any] | None = None,
        **kwargs,
    ) -> None:
        if layer is not None and not isinstance(layer, nn.Module):
            raise InvalidInputError(
                f"layer must be a module of the model, as in Captum's GuidedGradCam(model, layer); got "
                f"{type(layer).__name__} (pass temperatures= by keyword)"
            )
        super().__init__(model, temperatures, **kwargs)
        self.layer = _last_conv(self.model) if layer is None else layer
        _module_name(self.model, self.layer)  # the layer must belong to the model

    def _bind(self, model: Any) -> None:
        name = _module_name(self.model, self.layer)
        super()._bind(model)
        self.layer = model.get_submodule(name)

    def _captum_method(self, head: _Head) -> Any:
        import captum.attr as ca

        # the layer as it is in the model this call runs (a copy sharing the weights, see _hookable)
        return ca.GuidedGradCam(head, head.inner.get_submodule(_module_name(self.model, self.layer)))


class GuidedPullbackCam(GuidedGradCam):
    uses_pullback = True


def _last_conv(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError("Guided Grad-CAM hooks a layer of the model and needs an nn.Module")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise InvalidInputError("Guided Grad-CAM needs a convolutional layer; pass layer= (no nn.Conv2d found)")
    return convs[-1]


def _module_name(model: Any, layer: nn.Module) -> str:
    """The layer's qualified name in ``model``, which is how it is found again in a copy of the model."""
    if isinstance(model, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name
    raise InvalidInputError(f"layer {type(layer).__name__} is not a module of the model being explained")


class FusionGrad(_CaptumMethod):
    """FusionGrad: SmoothGrad averaged over models with multiplicative N(1, sigma_w) weight noise.

    The noise goes on a private copy of the model; the caller's parameters are never touched.
    """

    captum_name = "Saliency"
    stochastic = True
    defaults = {"model_samples": 10, "weight_noise": 0.1, "nt_samples": 10, "stdevs": 0.15, "nt_samples_batch_size": 10}

    def _call(self, head, x, target, args, model_samples, weight_noise, **s):  # type: ignore[no-untyped-def]
        from captum.attr import NoiseTunnel

        if not isinstance(self.model, nn.Module):
            raise UnsupportedModelError("FusionGrad perturbs the model's weights and needs an nn.Module")
        noisy = copy.deepcopy(head)
        originals = [p.detach().clone() for p in head.parameters()]
        total = None
        for _ in range(model_samples):
            with torch.no_grad():
                for p, p0 in zip(noisy.parameters(), originals):
                    p.copy_(p0 * torch.normal(1.0, weight_noise, size=p0.shape, device=p0.device, dtype=p0.dtype))
            a = NoiseTunnel(self._captum(noisy)).attribute(
                x, nt_type="smoothgrad", target=target, additional_forward_args=args or None, abs=False, **s
            )
            total = a if total is None else total + a
        return total / model_samples


class FusionPullback(FusionGrad):
    uses_pullback = True
