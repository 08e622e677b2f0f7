"""Guided Grad-CAM at a convolutional layer, Captum's implementation, and its pullback version.

The layer is found again by its qualified name in whatever model a call runs (a private copy for the hooks, a
randomised copy in a metric), so the explainer can be re-bound like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from ..engine import Temperatures
from ..errors import InvalidInputError, UnsupportedModelError
from .captum_method import CaptumMethod, Head

__all__ = ["GuidedGradCam", "GuidedPullbackCam"]


class GuidedGradCam(CaptumMethod):
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

    def _captum_method(self, head: Head) -> Any:
        import captum.attr as ca

        # the layer as it is in the model this call runs (a copy sharing the weights, see isolation.hookable)
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
