"""A Quantus-compatible ``explain_func``: SP inside Quantus pipelines unchanged."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InvalidInputError

__all__ = ["quantus_explain_func"]


def quantus_explain_func(model: torch.nn.Module, inputs: Any, targets: Any, **kwargs: Any) -> np.ndarray:
    """Quantus calls ``explain_func(model=..., inputs=..., targets=..., **explain_func_kwargs)`` with numpy arrays.

    Pass ``explain_func_kwargs={"method": "SoftPullback", ...settings}``; the method name is any entry of
    :func:`semantic_pullbacks.methods.available_methods`. Returns numpy attributions shaped like ``inputs``.
    """
    from . import get_method

    name = kwargs.pop("method", "SoftPullback")
    device = kwargs.pop("device", None)
    kwargs.pop("softmax", None)  # Quantus passes its own flags through; they are not settings of ours
    param = next(model.parameters(), None)
    dev = torch.device(device) if device is not None else (param.device if param is not None else torch.device("cpu"))
    x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=dev)
    if x.dim() < 2:
        raise InvalidInputError(f"inputs must be batched, got shape {tuple(x.shape)}")
    t = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=dev).reshape(-1)
    method = get_method(name)(model, **kwargs)
    return method.attribute(x, target=t).cpu().numpy()
