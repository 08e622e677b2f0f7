"""pytorch-grad-cam's class activation maps as peers: ``GradCAM``, ``HiResCAM`` and ``LayerCAM``.

A CAM weighs one layer's activations by their gradients, so its map has that layer's resolution (7 x 7 for the
last block of a 224-px ImageNet CNN, 14 x 14 tokens for ViT-B/16). The package rectifies it (negative evidence is
cut to 0), rescales it to [0, 1] per image and resizes it to the input (bilinear, OpenCV); here that map is then
given in the input's shape, the same value on every channel. CAMs are therefore coarse and unsigned: metrics that
reward signed, pixel-level detail see a smooth blob, metrics that perturb patches see a good localiser.

The layer, unless given: ViTs (torchvision, timm) take the first norm of the last block, with the tokens folded
back into their grid, as pytorch-grad-cam's documentation does; any other model takes its last block, i.e. the
last module called once that returns a (B, C, H, W) map with H * W > 1 and holds at least two layers with
weights (EfficientNet-Lite0: ``_blocks.15``; ResNet50: ``layer4``). The package runs on a private copy of the
model that does not require gradients for its weights, so the caller's modules get no hooks, keep their mode
and no parameter gets a ``.grad``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ...errors import InvalidInputError, UnsupportedModelError
from ..targets import OutputSelector, TargetType, class_indices, objective, select_output
from .base import PeerExplainer, plain_classes
from .structure import CopyCache, private_copy

__all__ = ["GradCAM", "HiResCAM", "LayerCAM", "default_cam_layer", "tokens_to_grid"]

ReshapeTransform = Callable[[torch.Tensor], torch.Tensor]


def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """``(B, 1 + h*w, D)`` ViT tokens -> ``(B, D, h, w)``: the class token dropped, patches on their grid."""
    patches = tokens[:, 1:, :]
    side = math.isqrt(patches.shape[1])
    if side * side != patches.shape[1]:
        raise UnsupportedModelError(
            f"cannot fold {patches.shape[1]} patch tokens into a square grid; pass reshape_transform="
        )
    return patches.reshape(patches.shape[0], side, side, patches.shape[2]).permute(0, 3, 1, 2)


_VIT_LAYERS = {  # class name -> (the container of its blocks, the first norm in a block)
    "VisionTransformer": (("encoder.layers", "ln_1"), ("blocks", "norm1")),  # torchvision, timm
}


def default_cam_layer(
    model: nn.Module, x: torch.Tensor, args: tuple[Any, ...] = ()
) -> tuple[str, ReshapeTransform | None]:
    """The layer a CAM reads when none is given, and how to fold its output into a (B, C, H, W) map."""
    for name, module in model.named_modules():
        for blocks, norm in _VIT_LAYERS.get(type(module).__name__, ()):
            found = _last_block_norm(module, blocks, norm)
            if found is not None:
                return (f"{name}.{found}" if name else found), tokens_to_grid
    return _last_block(model, x, args), None


def _last_block_norm(vit: nn.Module, blocks: str, norm: str) -> str | None:
    try:
        children = list(vit.get_submodule(blocks).named_children())
    except AttributeError:
        return None
    if not children or not hasattr(children[-1][1], norm):
        return None
    return f"{blocks}.{children[-1][0]}.{norm}"


def _last_block(model: nn.Module, x: torch.Tensor, args: tuple[Any, ...]) -> str:
    names = {m: n for n, m in model.named_modules()}
    finished: list[nn.Module] = []
    calls: dict[nn.Module, int] = {}

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        calls[module] = calls.get(module, 0) + 1
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-1] * output.shape[-2] > 1:
            finished.append(module)

    handles = [m.register_forward_hook(record) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            model(x[:1], *args)
    finally:
        for h in handles:
            h.remove()
    for module in reversed(finished):
        weighted = sum(1 for m in module.modules() if any(True for _ in m.parameters(recurse=False)))
        if calls[module] == 1 and weighted >= 2:
            return names[module]
    raise UnsupportedModelError(
        f"found no block of {type(model).__name__} that returns a (B, C, H, W) feature map; pass target_layer= "
        "(a module name or the module itself) and, for token outputs, reshape_transform="
    )


class _Selected(nn.Module):
    """The copy with the caller's output selection and extra forward arguments folded in: logits ``(B, K)``."""

    def __init__(self, model: nn.Module, selector: OutputSelector, args: tuple[Any, ...]) -> None:
        super().__init__()
        self.inner = model
        self.selector = selector
        self.args = args

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = select_output(self.inner(x, *self.args), self.selector)
        return out.reshape(x.shape[0], -1)


class _CAM(PeerExplainer):
    """Runs one of pytorch-grad-cam's CAM classes (``cam_class``) on the private copy."""

    requires = ("pytorch_grad_cam",)
    cam_class: str = ""

    def __init__(
        self,
        model: nn.Module,
        target_layer: str | nn.Module | None = None,
        *,
        reshape_transform: ReshapeTransform | None = None,
        output_selector: OutputSelector = None,
    ) -> None:
        super().__init__(model, output_selector=output_selector)
        self.target_layer = self._layer_name(target_layer)
        self.reshape_transform = reshape_transform
        self._copies = CopyCache()
        self._layers: dict[tuple[int, ...], tuple[str, ReshapeTransform | None]] = {}

    def _bind(self, model: Any) -> None:
        super()._bind(model)
        self._copies = CopyCache()
        self._layers = {}

    def _layer_name(self, layer: str | nn.Module | None) -> str | None:
        if layer is None or isinstance(layer, str):
            if isinstance(layer, str):
                try:
                    self.model.get_submodule(layer)
                except AttributeError:
                    raise InvalidInputError(f"target_layer {layer!r} is not a module of the model") from None
            return layer
        if isinstance(layer, nn.Module):
            for name, module in self.model.named_modules():
                if module is layer:
                    return name
            raise InvalidInputError("target_layer is a module that is not part of the model; pass one of its own")
        raise InvalidInputError(f"target_layer must be a module name or a module, got {type(layer).__name__}")

    def layer(self, x: torch.Tensor, args: tuple[Any, ...] = ()) -> tuple[str, ReshapeTransform | None]:
        """The layer read and the token folding used for inputs like ``x``."""
        if self.target_layer is not None:
            return self.target_layer, self.reshape_transform
        name, fold = default_cam_layer(self.model, x, args)
        return name, self.reshape_transform or fold

    def _attribute(self, x: torch.Tensor, target: TargetType, args: tuple[Any, ...], **kwargs: Any) -> torch.Tensor:
        self._no_options(kwargs)
        if x.dim() != 4:
            raise InvalidInputError(f"{type(self).__name__} explains images (B, C, H, W), got shape {tuple(x.shape)}")
        import pytorch_grad_cam

        name, fold = self._layer_cached(x, args)
        with self._copies.lock:
            copy = self._copies.get(self.model, lambda: private_copy(self.model, share_weights=False))
            head = _Selected(copy, self.output_selector, args)
            targets = self._targets(head, x, target)
            cam_class = getattr(pytorch_grad_cam, self.cam_class)
            with cam_class(model=head, target_layers=[copy.get_submodule(name)], reshape_transform=fold) as cam:
                cam.compute_input_gradient = True  # the copy's weights need no gradient; the input's carries it
                maps = cam(input_tensor=x.detach(), targets=targets)
        maps = torch.as_tensor(maps, device=x.device, dtype=x.dtype)
        return maps[:, None].expand(x.shape).clone()

    def _targets(self, head: nn.Module, x: torch.Tensor, target: TargetType) -> list[Callable[[torch.Tensor], Any]]:
        """pytorch-grad-cam's per-sample targets for any target the library takes; class indices are checked on
        the output the CAM computes anyway (one forward pass, as the package itself makes)."""
        batch = x.shape[0]
        if isinstance(target, torch.Tensor) and target.is_floating_point():
            if target.numel() != batch * _classes(head, x):
                raise InvalidInputError(
                    f"a float target is an output-space direction and must have the output's shape, got "
                    f"{tuple(target.shape)}"
                )
            return [_Direction(d) for d in target.reshape(batch, -1)]
        if callable(target):
            return [_Sample(target)] * batch
        classes = plain_classes(target, batch)
        if classes is None:  # element tuples and the like: resolved against the output
            with torch.no_grad():
                classes = class_indices(head(x), target, batch).tolist()
        return [_Class(c) for c in classes]

    def _layer_cached(self, x: torch.Tensor, args: tuple[Any, ...]) -> tuple[str, ReshapeTransform | None]:
        key = tuple(x.shape[1:])
        if key not in self._layers:
            self._layers[key] = self.layer(x, args)
        return self._layers[key]


def _classes(head: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return head(x[:1]).shape[1]


class _Class:
    """The logit of one class (pytorch-grad-cam's ``ClassifierOutputTarget``), checked against the output;
    ``None``: the sample's top-1."""

    def __init__(self, index: int | None) -> None:
        self.index = index

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        index = int(output.argmax()) if self.index is None else self.index
        if not -output.shape[-1] <= index < output.shape[-1]:
            raise InvalidInputError(f"target class {index} is out of range for an output of {output.shape[-1]} classes")
        return output[..., index]


class _Direction:
    def __init__(self, direction: torch.Tensor) -> None:
        self.direction = direction

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return (output.reshape(-1) * self.direction.to(output.dtype)).sum()


class _Sample:
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.fn = fn

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return objective(output[None], self.fn, 1)[0]


class GradCAM(_CAM, name="GradCAM"):
    """pytorch-grad-cam's ``GradCAM``: activations weighted by their spatially averaged gradient."""

    cam_class = "GradCAM"


class HiResCAM(_CAM, name="HiResCAM"):
    """pytorch-grad-cam's ``HiResCAM``: activations times their gradient, element by element, summed over
    channels (faithful to the layer's own linearisation)."""

    cam_class = "HiResCAM"


class LayerCAM(_CAM, name="LayerCAM"):
    """pytorch-grad-cam's ``LayerCAM``: activations weighted by their positive gradient, element by element."""

    cam_class = "LayerCAM"
