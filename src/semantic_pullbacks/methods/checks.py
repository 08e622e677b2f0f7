"""What every explainer checks and keeps: the input it is given, the model's state, and that a pullback exists.

Each mistake a new user makes (an image without its batch dimension, half-precision pixels into a float32
model, a forward pass under ``no_grad``) gets a typed error that says what to do, before torch's own message
can surface from deep inside a layer; and an explanation never changes the model, even one in training mode.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError, NotDifferentiableError, UnsupportedModelError

__all__ = [
    "check_inputs",
    "check_pullback_exists",
    "input_pullback",
    "model_state_kept",
    "positive_number",
    "reentrant_checkpoint_refused",
    "warn_if_training",
]


def positive_number(name: str, value: Any, *, none_means: str | None = None) -> float | None:
    """A constructor's numeric setting as a float; ``None`` only where it has a meaning (``none_means``)."""
    if value is None and none_means is not None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        alternative = f", or None ({none_means})" if none_means else ""
        raise InvalidInputError(f"{name} must be a positive number{alternative}; got {value!r}")
    return float(value)


# --- inputs --------------------------------------------------------------------------------------------------
def check_inputs(inputs: Any, model: Any) -> torch.Tensor:
    """``inputs`` detached (an inference tensor becomes a normal one), or a typed error naming what is wrong."""
    if not isinstance(inputs, torch.Tensor):
        raise InvalidInputError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if inputs.device.type == "meta":
        raise InvalidInputError(
            "inputs are on the meta device, which holds shapes but no values: create them with real data "
            "(e.g. torch.randn(..., device='cpu'))"
        )
    if not inputs.is_floating_point():
        raise InvalidInputError(f"inputs must be a floating-point tensor, got {inputs.dtype}; e.g. inputs.float()")
    if inputs.dim() < 2:
        raise InvalidInputError(
            f"inputs must have a batch dimension first, got shape {tuple(inputs.shape)}; use inputs[None]"
        )
    if inputs.shape[0] == 0:
        raise InvalidInputError("inputs is an empty batch")
    if inputs.numel() == 0:
        raise InvalidInputError(f"inputs have no values, shape {tuple(inputs.shape)}")
    _check_layout(inputs, model)
    _check_against_parameters(inputs, model)
    if not bool(torch.isfinite(inputs).all()):
        raise InvalidInputError("inputs contain NaN or Inf values")
    if torch.is_inference_mode_enabled():
        raise NotDifferentiableError(
            "explanations need autograd, which torch.inference_mode() switches off: call attribute() outside "
            "inference_mode (torch.no_grad() around it is fine, the explainer enables what it needs)"
        )
    x = inputs.detach()
    return x.clone() if x.is_inference() else x  # a normal tensor, so autograd may record on it


def _first_layer(model: Any) -> nn.Module | None:
    """The first module (in registration order) that holds parameters of its own: usually the input layer."""
    if not isinstance(model, nn.Module):
        return None
    for module in model.modules():
        if next(module.parameters(recurse=False), None) is not None:
            return module
    return None


_CONV_DIMS = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}


def _check_layout(inputs: torch.Tensor, model: Any) -> None:
    """A convolution also accepts one sample without its batch dimension, so an image passed as (C, H, W) would be
    explained as a batch of C one-channel rows; refuse that before it happens."""
    first = _first_layer(model)
    nd = next((n for cls, n in _CONV_DIMS.items() if isinstance(first, cls)), None)
    if nd is None or inputs.dim() == nd + 2:
        return
    layout = ("(batch, channels, length)", "(batch, channels, height, width)", "(batch, channels, D, H, W)")[nd - 1]
    hint = " It looks like one sample without its batch dimension: use inputs[None]." if inputs.dim() == nd + 1 else ""
    raise InvalidInputError(
        f"inputs have shape {tuple(inputs.shape)}, but the model's first layer, {type(first).__name__}, takes "
        f"{layout}.{hint}"
    )


def _check_against_parameters(inputs: torch.Tensor, model: Any) -> None:
    if not isinstance(model, nn.Module):
        return
    params = list(model.parameters())
    if any(p.is_inference() for p in params):
        raise NotDifferentiableError(
            "the model's parameters are inference tensors (the model was created or loaded under "
            "torch.inference_mode()), which autograd cannot differentiate through: build or load it outside "
            "inference_mode"
        )
    reference = next((p for p in params if p.is_floating_point()), None)
    if reference is None:
        reference = next((b for b in model.buffers() if b.is_floating_point()), None)
    if reference is None:
        return
    # weights offloaded by accelerate wait on the meta device; its hooks bring them to the inputs' device
    if reference.device.type != "meta" and reference.device != inputs.device:
        raise InvalidInputError(
            f"inputs are on {inputs.device} but the model is on {reference.device}; move one of them (nothing is "
            "moved silently)"
        )
    if params and reference.dtype != inputs.dtype:
        cast = {torch.float32: "float()", torch.float16: "half()", torch.bfloat16: "bfloat16()"}
        how = cast.get(reference.dtype, f"to({reference.dtype})")
        raise InvalidInputError(
            f"inputs are {inputs.dtype} but the model's parameters are {reference.dtype}: convert one of them "
            f"(inputs.{how}, or the model to {inputs.dtype}); nothing is converted silently"
        )


# --- the model's state -----------------------------------------------------------------------------------------
#: Modules that behave differently in training mode: batch statistics, random masks.
_MODE_DEPENDENT = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.MultiheadAttention)


def warn_if_training(model: Any, stacklevel: int) -> None:
    """Warn when the model, or any of its batch-norm or dropout layers, is in training mode (never call eval())."""
    if not isinstance(model, nn.Module):
        return
    training = [name or "the model" for name, m in model.named_modules() if m.training and _changes_in_training(m)]
    if not training and not model.training:
        return
    where = f" ({', '.join(training[:3])}{', ...' if len(training) > 3 else ''})" if training else ""
    warnings.warn(
        f"the model is in training mode{where}: dropout and batch statistics make explanations random and "
        "batch-dependent (running statistics are restored afterwards). Call model.eval() first if that is not "
        "intended.",
        stacklevel=stacklevel + 1,
    )


def _changes_in_training(module: nn.Module) -> bool:
    if isinstance(module, nn.MultiheadAttention):
        return module.dropout > 0
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return module.p > 0
    return isinstance(module, _MODE_DEPENDENT)


@contextlib.contextmanager
def model_state_kept(model: Any) -> Iterator[None]:
    """Parameters keep their ``.grad``, and modules in training mode their buffers (BatchNorm's running
    statistics), also when the block fails: an explanation never changes the model."""
    params = list(model.parameters()) if isinstance(model, nn.Module) else []
    grads = [p.grad for p in params]
    buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
    if isinstance(model, nn.Module):
        with torch.no_grad():
            buffers = [(b, b.clone()) for m in model.modules() if m.training for b in m.buffers(recurse=False)]
    try:
        yield
    finally:
        for p, g in zip(params, grads):
            p.grad = g
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)


# --- the pullback itself ---------------------------------------------------------------------------------------
def check_pullback_exists(score: torch.Tensor, x: torch.Tensor, output: torch.Tensor | None = None) -> Any:
    """Raise the typed error that says why no pullback connects ``score`` to ``x``; otherwise return the function
    a reentrant ``torch.utils.checkpoint`` in the graph runs (``None`` if there is none): such a checkpoint refuses
    ``autograd.grad``.

    Read from the graph, without a backward pass, so methods that hand the model to other code (Captum's) can
    refuse before that code meets torch's own error. ``output`` (the model's output, when known) tells a forward
    pass without autograd from a target that ignores the output.
    """
    if not score.requires_grad:
        if output is not None and not output.requires_grad:
            raise UnsupportedModelError(_NO_AUTOGRAD)
        if output is not None:
            raise InvalidInputError(
                "the target's score does not depend on the model's output: a callable target must compute its "
                "per-sample score from the output it is given (e.g. lambda out: out[:, 3])"
            )
        raise UnsupportedModelError(f"{_NO_AUTOGRAD} (or a callable target ignores the output it is given)")
    reaches, checkpointed = _graph_facts(score, x)
    if not reaches:
        raise UnsupportedModelError(_NOT_CONNECTED)
    return checkpointed


def input_pullback(
    score: torch.Tensor,
    x: torch.Tensor,
    output: torch.Tensor | None,
    model: Any,
    retain_graph: bool = False,
) -> torch.Tensor:
    """``d score / d x`` through whatever backward pass is active, or an error saying why there is none.

    Every explainer's backward pass comes here, Captum's included (see ``captum_method.py``), so each meets the same
    refusals and the same way around reentrant checkpointing.
    """
    if check_pullback_exists(score, x, output) is not None:
        return _pullback_by_backward(score, x, model, retain_graph)
    (g,) = torch.autograd.grad(score, x, retain_graph=retain_graph, allow_unused=True)
    if g is None:
        raise UnsupportedModelError(_NOT_CONNECTED)
    return g


_NO_AUTOGRAD = (
    "the model's output does not depend on the inputs through autograd: its forward pass runs under "
    "torch.no_grad() or inference_mode, detaches, or leaves torch (numpy). Explanations need a forward "
    "pass autograd can follow"
)
_NOT_CONNECTED = (
    "the model's output does not depend on the inputs: its forward pass ignores them or detaches them "
    "(x.detach(), torch.from_numpy(x.numpy())) before any layer uses them"
)


def _graph_facts(score: torch.Tensor, x: torch.Tensor) -> tuple[bool, Any]:
    """Whether ``score``'s graph reaches ``x``, and the function of a reentrant checkpoint in it (one walk)."""
    reaches, checkpointed = False, None
    stack, seen = [score.grad_fn], set()
    x_node = x.grad_fn  # read once: under pullback_mode every tensor property read is an intercepted call
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node is x_node or getattr(node, "variable", None) is x:  # x itself, or the leaf x's accumulator
            reaches = True
            continue
        if type(node).__name__ == "CheckpointFunctionBackward":
            checkpointed = node.run_function
        stack.extend(next_node for next_node, _ in node.next_functions)
    return reaches, checkpointed


def reentrant_checkpoint_refused(method: str, checkpointed: Any, model: Any) -> UnsupportedModelError:
    """For methods that hook the model's modules: inside a reentrant checkpoint they would see nothing."""
    return UnsupportedModelError(
        f"{method} hooks the model's modules, and the model runs {_part_name(checkpointed, model)} under reentrant "
        "activation checkpointing (torch.utils.checkpoint(..., use_reentrant=True)), whose first forward pass runs "
        "under no_grad where those hooks see no graph. Use use_reentrant=False, which every method supports, or "
        "a method that hooks nothing (IntegratedPullbacks, SmoothPullback, SoftPullback, ...)"
    )


def _part_name(function: Any, model: Any) -> str:
    """``submodule 'encoder.layer.3' (BertLayer)`` for a module of the model (or its bound ``forward``)."""
    module = function if isinstance(function, nn.Module) else getattr(function, "__self__", None)
    if isinstance(module, nn.Module) and isinstance(model, nn.Module):
        for name, candidate in model.named_modules():
            if candidate is module:
                return f"submodule {name!r} ({type(module).__name__})" if name else "its whole forward"
    if isinstance(module, nn.Module):
        return f"a {type(module).__name__}"
    return repr(getattr(function, "__qualname__", function))


def _pullback_by_backward(score: torch.Tensor, x: torch.Tensor, model: Any, retain_graph: bool) -> torch.Tensor:
    """Reentrant checkpointing works only with ``.backward()``: accumulate into ``x.grad``; the parameters' own
    ``.grad`` are set aside first (and restored by :func:`model_state_kept`), so nothing is added to them."""
    for p in model.parameters() if isinstance(model, nn.Module) else ():
        p.grad = None
    if not x.is_leaf:
        x.retain_grad()
    x.grad = None
    score.backward(retain_graph=retain_graph)
    g, x.grad = x.grad, None
    if g is None:
        raise UnsupportedModelError(_NOT_CONNECTED)
    return g
