"""torchvision classifiers by name, with weights from a local file or the torch hub cache only.

torchvision would download missing weights; we look for the checkpoint file in the cache ourselves first and
raise :class:`WeightsUnavailableError` (saying where to put the file) instead of touching the network.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from semantic_pullbacks.errors import UnknownModelError, WeightsUnavailableError
from semantic_pullbacks.models._weights import apply_state_dict, is_random, read_state_dict

__all__ = ["TorchvisionSpec", "build_torchvision", "torchvision_names"]


def torchvision_names() -> list[str]:
    """Names of torchvision's image classification models (empty if torchvision is not installed)."""
    try:
        import torchvision.models as tvm
    except ImportError:
        return []
    return list(tvm.list_models(module=tvm))


def _cached_checkpoint(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


class TorchvisionSpec:
    """Preprocessing and labels torchvision declares for a model's pretrained weights."""

    def __init__(self, name: str) -> None:
        import torchvision.models as tvm

        self.enum = tvm.get_model_weights(name)
        self.default = self.enum.DEFAULT
        transform = self.default.transforms()
        self.size = int(transform.crop_size[0])
        self.resize = int(transform.resize_size[0])
        self.mean = tuple(float(v) for v in transform.mean)
        self.std = tuple(float(v) for v in transform.std)
        self.interpolation = str(transform.interpolation.value)
        self.categories = list(self.default.meta.get("categories") or [])


def build_torchvision(name: str, weights: str | os.PathLike[str] | None) -> tuple[nn.Module, TorchvisionSpec, str]:
    """``(unnormalised model, spec, weights description)``; ``weights`` is None (default pretrained, from the
    cache), ``"random"``, a weights enum member name such as ``"IMAGENET1K_V2"``, or a checkpoint path."""
    try:
        import torchvision.models as tvm
    except ImportError as error:
        raise UnknownModelError(
            f"model 'torchvision:{name}' needs torchvision: `pip install semantic-pullbacks[vision]`"
        ) from error
    if name not in torchvision_names():
        raise UnknownModelError(f"torchvision has no classification model named {name!r}")
    spec = TorchvisionSpec(name)
    if is_random(weights):
        return tvm.get_model(name, weights=None), spec, "random"

    chosen = spec.default
    if isinstance(weights, str) and weights in spec.enum.__members__:
        chosen = spec.enum[weights]
    elif weights is not None:
        model = tvm.get_model(name, weights=None)
        path = os.fspath(weights)
        apply_state_dict(model, read_state_dict(path, name), name, path)
        return model, spec, path

    cached = _cached_checkpoint(chosen.url)
    if not cached.is_file():
        raise WeightsUnavailableError(
            f"pretrained weights for 'torchvision:{name}' ({chosen}) are not in the local cache and this "
            f"library never downloads. Either download {chosen.url} on a machine with internet and save "
            f"it as {cached}, or pass weights='/path/to/checkpoint.pth' (or weights='random' for an "
            "untrained model)"
        )
    # The file is cached, so torchvision reads it from disk without any network access.
    return tvm.get_model(name, weights=chosen), spec, str(cached)
