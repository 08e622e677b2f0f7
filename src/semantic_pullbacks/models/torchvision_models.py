"""torchvision classifiers by name, with weights from the torch hub cache, a local file or a URL.

Missing pretrained weights are downloaded on first use into the torch hub cache, from the URL and with the hash
check torchvision's own loader uses; offline, :class:`WeightsUnavailableError` says where to put the file
instead.
"""

from __future__ import annotations

import os

from torch import nn

from semantic_pullbacks.errors import UnknownModelError
from semantic_pullbacks.models._weights import (
    apply_state_dict,
    fetch_url,
    is_random,
    is_url,
    read_state_dict,
)

__all__ = ["TorchvisionSpec", "build_torchvision", "torchvision_names"]


def torchvision_names() -> list[str]:
    """Names of torchvision's image classification models (empty if torchvision is not installed)."""
    try:
        import torchvision.models as tvm
    except ImportError:
        return []
    return list(tvm.list_models(module=tvm))


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


def build_torchvision(
    name: str, weights: str | os.PathLike[str] | None, *, offline: bool = False
) -> tuple[nn.Module, TorchvisionSpec, str]:
    """``(unnormalised model, spec, weights description)``; ``weights`` is None (default pretrained: from the
    cache, downloaded on first use), ``"random"``, a weights enum member name such as ``"IMAGENET1K_V2"``, a
    checkpoint path, or a checkpoint URL (downloaded once into the torch hub cache)."""
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
        path = fetch_url(weights, f"torchvision:{name}", offline=offline) if is_url(weights) else os.fspath(weights)
        apply_state_dict(model, read_state_dict(path, name), name, str(weights))
        return model, spec, str(path)

    # the file torchvision itself would download, fetched the same way (torch hub cache, hash checked); it then
    # reads the cached file, so the key fix-ups of its own loader still apply
    cached = fetch_url(chosen.url, f"torchvision:{name}", offline=offline)
    return tvm.get_model(name, weights=chosen), spec, str(cached)
