"""A Quantus-compatible ``explain_func``: SP inside Quantus pipelines unchanged."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InvalidInputError
from .catalog import get_method

__all__ = ["quantus_explain_func"]


def quantus_explain_func(model: torch.nn.Module, inputs: Any, targets: Any, **kwargs: Any) -> np.ndarray:
    """Quantus calls ``explain_func(model=..., inputs=..., targets=..., **explain_func_kwargs)`` with numpy arrays.

    Pass ``explain_func_kwargs={"method": "SoftPullback", ...settings}``; the method name is any entry of
    :func:`semantic_pullbacks.methods.available_methods` (``quantus.evaluate`` passes its ``xai_methods`` key as
    ``method``). The model runs in its own dtype; the attributions come back as numpy arrays shaped like
    ``inputs`` and in their dtype.
    """
    name = kwargs.pop("method", "SoftPullback")
    device = kwargs.pop("device", None)
    kwargs.pop("softmax", None)  # Quantus passes its own flags through; they are not settings of ours
    array = np.asarray(inputs)
    if not np.issubdtype(array.dtype, np.floating):
        raise InvalidInputError(f"inputs must hold floating-point values, got {array.dtype}")
    if array.ndim < 2:
        raise InvalidInputError(f"inputs must be batched, got shape {array.shape}")
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    dev = torch.device(device) if device is not None else (param.device if param is not None else torch.device("cpu"))
    dtype = param.dtype if param is not None else torch.from_numpy(array[:0]).dtype
    x = torch.as_tensor(array, device=dev).to(dtype)
    t = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=dev).reshape(-1)
    method = get_method(name)(model, **kwargs)
    return method.attribute(x, target=t).cpu().numpy().astype(array.dtype, copy=False)
