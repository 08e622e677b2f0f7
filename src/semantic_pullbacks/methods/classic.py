"""Classic gradient methods and their pullback versions.

A pullback version is the classic method run while soft pullbacks replace gradients: the same Captum code,
called inside :func:`pullback_mode`. The ordinary versions are Captum's own implementations, so baselines are
the ones the field already trusts. FusionGrad (absent from Captum) is implemented here.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from ..engine import Temperatures, pullback_mode
from ..errors import InvalidInputError, UnsupportedModelError
from .base import Explainer
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
    """The model with output selection (and a callable target) folded in, so Captum sees plain logits."""

    def __init__(self, model: nn.Module | Callable[..., Any], selector: OutputSelector) -> None:
        super().__init__()
        self.inner = model
        self.selector = selector
        self.target_fn: Callable[[torch.Tensor], torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        out = select_output(self.inner(x, *args), self.selector)
        if self.target_fn is not None:
            return objective(out, self.target_fn, x.shape[0])[:, None]
        return out.reshape(x.shape[0], -1) if out.dim() > 2 else out


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Deterministic draws without touching the caller's global RNG state."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class _CaptumMethod(Explainer):
    """Runs a Captum attribution method, inside :func:`pullback_mode` for the pullback variants."""

    captum_name: str = ""
    defaults: dict[str, Any] = {}

    def __init__(
        self,
        model: nn.Module | Callable[..., Any],
        temperatures: Temperatures | Mapping[str, Any] | None = None,
        *,
        output_selector: OutputSelector = None,
        seed: int | None = 0,
        **settings: Any,
    ) -> None:
        super().__init__(model, output_selector=output_selector)
        self.temperatures = Temperatures.coerce(temperatures)
        self.seed = seed
        unknown = set(settings) - set(self.defaults) - set(self._extra_settings())
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected settings: {', '.join(sorted(unknown))}")
        self.settings = {**self.defaults, **settings}
        self._head = _Head(model, output_selector)

    def _extra_settings(self) -> tuple[str, ...]:
        return ()

    def _captum(self) -> Any:
        import captum.attr as ca

        return getattr(ca, self.captum_name)(self._head)

    def _call(self, method: Any, x: torch.Tensor, target: Any, args: tuple[Any, ...], **settings: Any) -> Any:
        return method.attribute(x, target=target, additional_forward_args=args or None, **settings)

    def _context(self):  # type: ignore[no-untyped-def]
        return pullback_mode(self.temperatures) if self.uses_pullback else contextlib.nullcontext()

    def _attribute(self, x: torch.Tensor, target: TargetType, args: tuple[Any, ...], **kwargs: Any) -> torch.Tensor:
        settings = {**self.settings, **kwargs}
        head = self._head
        if callable(target) and not isinstance(target, torch.Tensor):
            head.target_fn, captum_target = target, 0
        else:
            with torch.no_grad():
                out = select_output(self.model(x, *args), self.output_selector)
            if isinstance(target, torch.Tensor) and target.is_floating_point():
                direction = target
                head.target_fn, captum_target = (lambda o: (o * direction).reshape(o.shape[0], -1).sum(1)), 0
            else:
                head.target_fn, captum_target = None, class_indices(out, target, x.shape[0]).tolist()
        try:
            with _seeded(self.seed, x.device), torch.enable_grad(), self._context():
                result = self._call(self._captum(), x, captum_target, args, **settings)
        finally:
            head.target_fn = None
        return result


class SmoothGrad(_CaptumMethod):
    """SmoothGrad: the gradient averaged over ``n`` noisy copies (noise std ``stdevs`` in input units)."""

    captum_name = "Saliency"
    stochastic = True
    defaults = {"nt_samples": 50, "stdevs": 0.15, "nt_samples_batch_size": 10}

    def _call(self, method, x, target, args, **s):  # type: ignore[no-untyped-def]
        from captum.attr import NoiseTunnel

        return NoiseTunnel(method).attribute(
            x, nt_type="smoothgrad", target=target, additional_forward_args=args or None, abs=False, **s
        )


class SmoothPullback(SmoothGrad):
    """SmoothGrad with soft pullbacks in place of gradients."""

    uses_pullback = True


class IntegratedGradients(_CaptumMethod):
    """Integrated Gradients from a baseline (default: zeros, mid-grey in [-1, 1])."""

    captum_name = "IntegratedGradients"
    defaults = {"n_steps": 50, "baselines": None, "internal_batch_size": 25}


class IntegratedPullbacks(IntegratedGradients):
    uses_pullback = True


class GradientShap(_CaptumMethod):
    """GradientSHAP; baselines default to zeros and uniform noise over the input domain."""

    captum_name = "GradientShap"
    stochastic = True
    defaults = {"n_samples": 20, "stdevs": 0.0, "baselines": None, "domain": (-1.0, 1.0)}

    def _call(self, method, x, target, args, baselines=None, domain=(-1.0, 1.0), **s):  # type: ignore[no-untyped-def]
        if baselines is None:
            lo, hi = domain
            noise = torch.rand((4, *x.shape[1:]), dtype=x.dtype, device=x.device) * (hi - lo) + lo
            baselines = torch.cat([torch.zeros_like(x[:1]), noise])
        return method.attribute(x, baselines=baselines, target=target, additional_forward_args=args or None, **s)


class PullbackShap(GradientShap):
    uses_pullback = True


class DeepLift(_CaptumMethod):
    """DeepLIFT (rescale rule) from a zero baseline; needs an ``nn.Module`` built from module activations."""

    captum_name = "DeepLift"
    defaults = {"baselines": None}

    def _captum(self) -> Any:
        import captum.attr as ca

        if not isinstance(self.model, nn.Module):
            raise UnsupportedModelError("DeepLift needs an nn.Module (it hooks the model's activation modules)")
        return ca.DeepLift(self._head)


class PullbackDeepLift(DeepLift):
    uses_pullback = True


class GuidedGradCam(_CaptumMethod):
    """Guided Grad-CAM at a convolutional layer (default: the model's last ``nn.Conv2d``)."""

    captum_name = "GuidedGradCam"
    defaults = {"interpolate_mode": "nearest"}

    def __init__(self, model, temperatures=None, *, layer: nn.Module | None = None, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(model, temperatures, **kwargs)
        self.layer = layer if layer is not None else _last_conv(model)

    def _captum(self) -> Any:
        import captum.attr as ca

        return ca.GuidedGradCam(self._head, self.layer)


class GuidedPullbackCam(GuidedGradCam):
    uses_pullback = True


def _last_conv(model: Any) -> nn.Module:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)] if isinstance(model, nn.Module) else []
    if not convs:
        raise InvalidInputError("Guided Grad-CAM needs a convolutional layer; pass layer= (no nn.Conv2d found)")
    return convs[-1]


class FusionGrad(_CaptumMethod):
    """FusionGrad: SmoothGrad averaged over models with multiplicative N(1, sigma_w) weight noise.

    The noise goes on a private copy of the model; the caller's parameters are never touched.
    """

    captum_name = "Saliency"
    stochastic = True
    defaults = {"model_samples": 10, "weight_noise": 0.1, "nt_samples": 10, "stdevs": 0.15, "nt_samples_batch_size": 10}

    def _captum(self) -> Any:
        return None

    def _call(self, method, x, target, args, model_samples, weight_noise, **s):  # type: ignore[no-untyped-def]
        from captum.attr import NoiseTunnel, Saliency

        if not isinstance(self.model, nn.Module):
            raise UnsupportedModelError("FusionGrad perturbs the model's weights and needs an nn.Module")
        noisy = copy.deepcopy(self._head)
        originals = [p.detach().clone() for p in self._head.parameters()]
        total = None
        for _ in range(model_samples):
            with torch.no_grad():
                for p, p0 in zip(noisy.parameters(), originals):
                    p.copy_(p0 * torch.normal(1.0, weight_noise, size=p0.shape, device=p0.device, dtype=p0.dtype))
            a = NoiseTunnel(Saliency(noisy)).attribute(
                x, nt_type="smoothgrad", target=target, additional_forward_args=args or None, abs=False, **s
            )
            total = a if total is None else total + a
        return total / model_samples


class FusionPullback(FusionGrad):
    uses_pullback = True
