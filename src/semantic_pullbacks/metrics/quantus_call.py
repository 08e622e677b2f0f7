"""Quantus's call form, read into ours: ``metric(model=, x_batch=, y_batch=, a_batch=, explain_func=, ...)``.

Quantus passes numpy arrays, channel-first or channel-last images, channel-less maps and an ``explain_func`` that
takes keywords and works on numpy. :class:`QuantusCall` checks those arguments and turns them into the tensors
and the explainer our call form takes, so every metric accepts both forms from one template.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from semantic_pullbacks.errors import InvalidInputError, UnexpectedArgumentError
from semantic_pullbacks.metrics.explainers import AttributeLike, as_explainer

__all__ = ["QUANTUS_KEYWORDS", "QuantusCall"]

#: Quantus's ``__call__`` keywords; ``x_batch`` marks the Quantus call form
QUANTUS_KEYWORDS = (
    "model", "x_batch", "y_batch", "a_batch", "s_batch", "channel_first", "explain_func", "explain_func_kwargs",
    "model_predict_kwargs", "softmax", "device", "batch_size", "custom_batch",
)  # fmt: skip


@dataclass(frozen=True)
class QuantusCall:
    """Quantus's call arguments, checked, and turned into what our call form takes."""

    x_batch: Any
    y_batch: Any
    a_batch: Any
    channel_first: bool | None
    explain_func: Any
    explain_func_kwargs: Mapping[str, Any]
    softmax: bool | None
    device: Any
    batch_size: int | None
    custom_batch: Any
    options: Mapping[str, Any]

    @classmethod
    def read(cls, owner: str, model: Any, kwargs: Mapping[str, Any], own: Sequence[str]) -> QuantusCall:
        unknown = set(kwargs) - set(QUANTUS_KEYWORDS) - set(own)
        if unknown:
            raise UnexpectedArgumentError(
                f"{owner}() got unexpected keyword argument(s) {', '.join(sorted(unknown))}; in Quantus's call "
                f"form it takes {', '.join(QUANTUS_KEYWORDS)}" + (f" and {', '.join(own)}" if own else "")
            )
        if model is None:
            raise InvalidInputError(f"{owner}: pass model= (a torch.nn.Module)")
        if kwargs.get("model_predict_kwargs"):
            raise UnexpectedArgumentError(
                f"{owner}: model_predict_kwargs is not supported; wrap the model so that model(x) takes only inputs"
            )
        for name in ("x_batch", "y_batch"):
            if kwargs.get(name) is None:
                raise InvalidInputError(f"{owner}: pass {name}= (Quantus's call form)")
        return cls(
            x_batch=kwargs["x_batch"],
            y_batch=kwargs["y_batch"],
            a_batch=kwargs.get("a_batch"),
            channel_first=kwargs.get("channel_first"),
            explain_func=kwargs.get("explain_func"),
            explain_func_kwargs=dict(kwargs.get("explain_func_kwargs") or {}),
            softmax=kwargs.get("softmax"),
            device=kwargs.get("device"),
            batch_size=kwargs.get("batch_size"),
            custom_batch=kwargs.get("custom_batch"),
            options={k: v for k, v in kwargs.items() if k in own},
        )

    def tensors(self, model: Any) -> tuple[Tensor, Tensor, Tensor | None]:
        """Inputs channel-first in the model's dtype and on ``device``, targets, and attributions if given."""
        x = _as_tensor(self.x_batch, "x_batch")
        if not x.is_floating_point():
            raise InvalidInputError(f"x_batch must hold floating-point values, got {x.dtype}")
        first = _channel_first(x) if self.channel_first is None else bool(self.channel_first)
        if not first:
            x = x.movedim(-1, 1)
        device = torch.device(self.device) if self.device is not None else _model_device(model)
        x = x.to(device=device, dtype=_model_dtype(model) or x.dtype)
        y = _as_tensor(self.y_batch, "y_batch").to(device)
        a = None
        if self.a_batch is not None:
            a = _as_tensor(self.a_batch, "a_batch").to(device=device, dtype=x.dtype)
            if a.ndim == x.ndim - 1:  # Quantus's channel-less maps
                a = a.unsqueeze(1)
        return x, y, a

    def explainer(self) -> Any:
        """Quantus's ``explain_func(model=, inputs=, targets=, **explain_func_kwargs)``, numpy in and out."""
        if self.explain_func is None:
            return None
        if isinstance(self.explain_func, AttributeLike):  # a Captum-like method object: kwargs go to .attribute
            return as_explainer(self.explain_func, **self.explain_func_kwargs)
        func = self.explain_func
        kwargs = dict(self.explain_func_kwargs)
        if self.device is not None:
            kwargs.setdefault("device", self.device)

        def explain(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
            out = func(model=model, inputs=inputs.detach().cpu().numpy(), targets=targets.cpu().numpy(), **kwargs)
            a = _as_tensor(out, "explain_func output")
            return a.unsqueeze(1) if a.ndim == inputs.ndim - 1 else a

        return explain


def _as_tensor(value: Any, name: str) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach()
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError) as err:
        raise InvalidInputError(f"{name} must be a numpy array or tensor, got {type(value).__name__}") from err


def _channel_first(x: Tensor) -> bool:
    """Quantus's rule: the smallest of the non-batch dimensions of an image batch is the channel dimension."""
    if x.ndim != 4:
        return True
    c_first, c_last = x.shape[1], x.shape[-1]
    if c_first < min(x.shape[2], x.shape[3]):
        return True
    if c_last < min(x.shape[1], x.shape[2]):
        return False
    raise InvalidInputError(
        f"cannot tell whether x_batch of shape {tuple(x.shape)} is channel-first or channel-last; pass channel_first="
    )


def _model_device(model: Any) -> torch.device:
    if isinstance(model, nn.Module):
        for t in (*model.parameters(), *model.buffers()):
            return t.device
    return torch.device("cpu")


def _model_dtype(model: Any) -> torch.dtype | None:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            if p.is_floating_point():
                return p.dtype
    return None
