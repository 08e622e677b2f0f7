"""DeepLIFT (rescale rule), Captum's implementation, and its pullback version."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import UnsupportedModelError
from .captum_method import CaptumMethod, ConvergenceDelta, Head

__all__ = ["DeepLift", "PullbackDeepLift"]


class DeepLift(ConvergenceDelta, CaptumMethod):
    """DeepLIFT (rescale rule) from a zero baseline; needs an ``nn.Module`` built from module activations.

    ``attribute(inputs, baselines, target, additional_forward_args, return_convergence_delta,
    custom_attribution_func)`` as in Captum.
    """

    captum_name = "DeepLift"
    multiplies_by_inputs = True  # Captum's default multiply_by_inputs=True: the maps carry (input - baseline)
    defaults = {"baselines": None, "custom_attribution_func": None}
    hooks_model = True
    attribute_parameters = (
        "baselines", "target", "additional_forward_args", "return_convergence_delta", "custom_attribution_func",
    )  # fmt: skip

    def _captum_method(self, head: Head) -> Any:
        import captum.attr as ca

        if not isinstance(self.model, nn.Module):
            raise UnsupportedModelError("DeepLift needs an nn.Module (it hooks the model's activation modules)")
        return ca.DeepLift(head)


class PullbackDeepLift(DeepLift):
    uses_pullback = True
