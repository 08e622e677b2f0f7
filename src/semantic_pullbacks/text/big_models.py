"""Models too big for float32 on one device: half precision, device maps, and quantised layers.

A model loaded in bfloat16/float16 runs its forward pass in that precision, bit for bit as without the
explainer (the rules compute their gates in float32 and cast back); token relevance, the sum of embedding times
pullback over the embedding, is accumulated in float32 so that thousands of half-precision products do not
round away. A model sharded with accelerate's ``device_map`` keeps accelerate's hooks: they move activations
between devices, which the pullback mode neither sees nor needs to.

Quantised linear layers (bitsandbytes, GPTQ, AWQ...) are recognised by class name, without importing their
packages. A linear layer needs no rule, so one whose own backward pass works is explained as it is (bitsandbytes
4-bit and 8-bit layers do, on CPU too); each quantised class is tried once, on a tiny input, when the model is
wrapped, and one whose kernel cannot be differentiated is refused with a typed error naming it.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError, MissingDependencyError, UnsupportedModelError

__all__ = ["check_quantised_layers", "execution_device", "loading_options", "relevance_dtype"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}

#: Class names of quantised linear layers: bitsandbytes, GPTQ (auto-gptq, gptqmodel), AWQ, HQQ, torchao, EETQ.
QUANTISED_LAYERS = ("Linear4bit", "Linear8bitLt", "QuantLinear", "WQLinear", "HQQLinear", "EetqLinear")


def loading_options(dtype: Any, device_map: Any, transformers_version: str) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments for a dtype and a device map, checked before anything is read."""
    options: dict[str, Any] = {}
    if dtype is not None:
        key = "dtype" if _version(transformers_version) >= (4, 56) else "torch_dtype"
        options[key] = _checked_dtype(dtype)
    if device_map is not None:
        if importlib.util.find_spec("accelerate") is None:
            raise MissingDependencyError(
                f"device_map={device_map!r} needs the accelerate package, which places the model's layers on "
                "devices: pip install 'semantic-pullbacks[text]' (or pip install accelerate), or leave "
                "device_map out to load the model on one device"
            )
        options["device_map"] = device_map
    return options


def _checked_dtype(dtype: Any) -> Any:
    if dtype == "auto" or (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise InvalidInputError(
        f"dtype={dtype!r} is not a floating-point dtype: give torch.bfloat16, torch.float16, torch.float32, "
        "their names as strings, or 'auto' (the dtype the checkpoint was saved in)"
    )


def _version(text: str) -> tuple[int, int]:
    parts = [int("".join(c for c in p if c.isdigit()) or 0) for p in text.split(".")[:2]]
    return (parts[0], parts[1] if len(parts) > 1 else 0)


def quantised_layers(model: nn.Module) -> dict[str, int]:
    """Class name -> count of the quantised linear layers in ``model``."""
    found: dict[str, int] = {}
    for module in model.modules():
        name = type(module).__name__
        if name in QUANTISED_LAYERS:
            found[name] = found.get(name, 0) + 1
    return found


def check_quantised_layers(model: nn.Module) -> None:
    """Run one backward pass through one layer of each quantised class; refuse the model if one fails.

    Linear layers need no rule (their pullback is their gradient), so a quantised layer whose own backward
    works is explained as it is; one whose kernel has no backward on this device would fail deep inside
    ``autograd.grad``, so it is found here, with its name.
    """
    tried: set[str] = set()
    for module in model.modules():
        name = type(module).__name__
        if name not in QUANTISED_LAYERS or name in tried:
            continue
        tried.add(name)
        try:
            _probe_backward(module)
        except Exception as e:
            raise UnsupportedModelError(
                f"the model's quantised {name} layers cannot be differentiated here ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else 'no message'}), and explanations need the pullback "
                "through them. Load the model in half precision instead, "
                "load_text_model(name, dtype=torch.bfloat16, device_map='auto'), or use a bitsandbytes version "
                "whose kernels have a backward pass on this device."
            ) from None


def _probe_backward(module: nn.Module) -> None:
    features = int(module.in_features)
    dtype = getattr(module, "compute_dtype", None) or torch.float32
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    x = torch.randn(2, features, dtype=dtype, device=device, requires_grad=True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(module(x).float().sum(), x)
    if g is None or not bool(torch.isfinite(g).all()):
        raise RuntimeError("the input gradient is missing or not finite")


def execution_device(module: nn.Module) -> torch.device:
    """The device ``module`` computes on: accelerate's hook says so for offloaded weights (kept on ``meta``)."""
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    return next(module.parameters()).device


def relevance_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float32 for half-precision inputs (float64 stays float64): the dtype token relevance is summed in."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
