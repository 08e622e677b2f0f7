"""Path-based methods: gradients integrated from baselines to the input (Integrated Gradients, GradientSHAP).

Captum's own implementations run them, with Captum's ``attribute`` signature (``baselines`` second,
``return_convergence_delta``); the pullback versions run the same code with soft pullbacks in place of gradients.
"""

from __future__ import annotations

import torch

from .captum_method import CaptumMethod, ConvergenceDelta

__all__ = ["GradientShap", "IntegratedGradients", "IntegratedPullbacks", "PullbackShap"]


class IntegratedGradients(ConvergenceDelta, CaptumMethod):
    """Integrated Gradients from a baseline (default: zeros, mid-grey in [-1, 1]).

    ``attribute(inputs, baselines, target, additional_forward_args, n_steps, method, internal_batch_size,
    return_convergence_delta)`` as in Captum; arguments left out use the constructor's settings.
    """

    captum_name = "IntegratedGradients"
    multiplies_by_inputs = True  # Captum's default multiply_by_inputs=True: the maps carry (input - baseline)
    defaults = {"n_steps": 50, "method": "gausslegendre", "baselines": None, "internal_batch_size": 25}
    attribute_parameters = (
        "baselines", "target", "additional_forward_args", "n_steps", "method", "internal_batch_size",
        "return_convergence_delta",
    )  # fmt: skip


class IntegratedPullbacks(IntegratedGradients):
    uses_pullback = True


class GradientShap(ConvergenceDelta, CaptumMethod):
    """GradientSHAP; baselines default to zeros and uniform noise over the input domain.

    ``attribute(inputs, baselines, n_samples, stdevs, target, additional_forward_args, return_convergence_delta)``
    as in Captum; arguments left out use the constructor's settings.
    """

    captum_name = "GradientShap"
    multiplies_by_inputs = True  # Captum's default multiply_by_inputs=True: the maps carry (input - baseline)
    stochastic = True
    defaults = {"n_samples": 20, "stdevs": 0.0, "baselines": None, "domain": (-1.0, 1.0)}
    attribute_parameters = (
        "baselines", "n_samples", "stdevs", "target", "additional_forward_args", "return_convergence_delta",
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
