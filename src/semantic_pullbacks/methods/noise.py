"""Noise-based methods: SmoothGrad averages over noisy inputs, FusionGrad also over noisy weights.

FusionGrad is absent from Captum and implemented here, on Captum's NoiseTunnel; the pullback versions run the
same code with soft pullbacks in place of gradients.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import UnsupportedModelError
from .captum_method import CaptumMethod

__all__ = ["FusionGrad", "FusionPullback", "SmoothGrad", "SmoothPullback"]


class SmoothGrad(CaptumMethod):
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


class FusionGrad(CaptumMethod):
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
