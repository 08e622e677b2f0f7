"""What to explain: targets and output selection, in Captum's conventions plus callables.

A target turns the model's output into one scalar per sample whose pullback is the explanation:
``None`` (each sample's top-1 class), an ``int`` (same class for all), a list or ``(B,)`` tensor (one class
per sample), a float tensor shaped like the output (an output-space direction), or a callable
``f(output) -> (B,)`` (a segmentation region, a single-logit model, a hidden direction), or a layer target
(:class:`~.layer_targets.Neuron`, :class:`~.layer_targets.Direction`, :class:`~.layer_targets.Feature`): a unit
inside the model, explained through the model cut at its layer.

As in Captum, a *tuple* indexes one element of a multi-dimensional output per sample: ``(row, col)`` explains
``output[i, row, col]`` for every sample ``i``, and a list of tuples gives each sample its own element.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import torch

from ..errors import InvalidInputError, UnknownClassError
from .layer_targets import LayerTarget

__all__ = ["OutputSelector", "TargetType", "objective", "select_output"]

TargetType = Union[
    None,
    int,
    tuple[int, ...],
    Sequence[int],
    Sequence[tuple[int, ...]],
    torch.Tensor,
    Callable[[torch.Tensor], torch.Tensor],
    LayerTarget,
]
OutputSelector = Union[None, int, str, Callable[[Any], torch.Tensor]]


def select_output(output: Any, selector: OutputSelector = None) -> torch.Tensor:
    """Pick the tensor to explain from a model's output (tuples, dicts, HuggingFace-style objects)."""
    if callable(selector):
        out = selector(output)
    elif selector is not None:
        try:
            out = output[selector]
        except (KeyError, IndexError, TypeError) as e:
            raise InvalidInputError(f"output selector {selector!r} does not match the model's output: {e}") from None
    elif isinstance(output, torch.Tensor):
        out = output
    elif isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        out = output[0]
    elif isinstance(output, Mapping) and "logits" in output:
        out = output["logits"]
    elif hasattr(output, "logits") and isinstance(output.logits, torch.Tensor):
        out = output.logits
    else:
        raise InvalidInputError(
            f"cannot tell which part of the model's output ({type(output).__name__}) to explain; pass "
            "output_selector= (an index, a key, or a callable returning a tensor)"
        )
    if not isinstance(out, torch.Tensor):
        raise InvalidInputError(f"the selected output must be a tensor, got {type(out).__name__}")
    return out


def objective(output: torch.Tensor, target: TargetType, batch: int) -> torch.Tensor:
    """The per-sample scalar ``(B,)`` whose pullback explains ``target``."""
    if callable(target) and not isinstance(target, torch.Tensor):
        value = target(output)
        if not isinstance(value, torch.Tensor) or value.shape != (batch,):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise InvalidInputError(
                f"a callable target must return one scalar per sample, shape ({batch},), from the output it is "
                f"given (shape {tuple(output.shape)}); got {shape}"
            )
        return value
    flat = _per_sample(output, batch)
    if isinstance(target, torch.Tensor) and target.is_floating_point():
        if target.shape != output.shape:
            raise InvalidInputError(
                f"a float target is an output-space direction and must have the output's shape "
                f"{tuple(output.shape)}, got {tuple(target.shape)}"
            )
        return (output * target.to(output.dtype)).reshape(batch, -1).sum(1)
    index = class_indices(output, target, batch)
    return flat.gather(1, index[:, None]).squeeze(1)


def class_indices(output: torch.Tensor, target: TargetType, batch: int) -> torch.Tensor:
    """Per-sample indices into ``output.reshape(B, -1)``, shape ``(B,)`` (``None`` means each sample's top-1),
    validated against the output."""
    flat = _per_sample(output, batch)
    n = flat.shape[1]
    if target is None:
        return flat.detach().argmax(1)
    if isinstance(target, bool):
        raise InvalidInputError("target must be a class index, not a bool")
    if isinstance(target, tuple):
        return _element_indices(output, [target] * batch, batch)
    if isinstance(target, numbers.Integral):  # numpy integers too, as in a list of targets
        index = torch.full((batch,), int(target), dtype=torch.long, device=output.device)
    elif isinstance(target, torch.Tensor):
        if target.dtype in (torch.bool,) or target.is_floating_point() or target.is_complex():
            raise InvalidInputError(f"class targets must be integers, got a {target.dtype} tensor")
        index = target.to(output.device, torch.long).reshape(-1)
        if index.numel() == 1:
            index = index.expand(batch)
    elif isinstance(target, Sequence) and not isinstance(target, str):
        if target and all(isinstance(t, tuple) for t in target):
            return _element_indices(output, list(target), batch)
        if any(isinstance(t, (tuple, list)) for t in target):
            raise InvalidInputError(
                "a list target holds one class index per sample, or one tuple index per sample for a "
                "multi-dimensional output; for several targets at once use attribute_targets()"
            )
        try:
            index = torch.tensor([_integer(t) for t in target], dtype=torch.long, device=output.device)
        except (TypeError, ValueError):
            raise InvalidInputError(f"targets must be class indices, got {list(target)[:5]!r}") from None
    else:
        raise InvalidInputError(
            f"unsupported target {target!r}: use None, an int, a tuple index into a multi-dimensional output, "
            "a list/tensor of ints (one per sample), an output-shaped float tensor or a callable(output) -> (B,) "
            "tensor (class names are resolved with LoadedModel.target)"
        )
    if index.shape != (batch,):
        raise InvalidInputError(
            f"got {index.numel()} targets for a batch of {batch}; give one per sample or one for all"
        )
    bad = (index < 0) | (index >= n)
    if bool(bad.any()):
        raise UnknownClassError(
            f"target {index[bad][0].item()} is out of range: the model has {n} outputs (valid: 0..{n - 1})"
        )
    return index


def _per_sample(output: torch.Tensor, batch: int) -> torch.Tensor:
    """The output as ``(B, -1)``, or an error if it does not keep the batch dimension first."""
    if output.dim() == 0 or output.shape[0] != batch:
        raise InvalidInputError(
            f"the model's output has shape {tuple(output.shape)}, but the batch has {batch} samples; "
            "outputs must keep the batch dimension first"
        )
    return output.reshape(batch, -1)


def _integer(value: Any) -> int:
    """An index: ints, numpy integers and integer 0-d tensors; floats and bools are refused, never rounded."""
    if isinstance(value, bool):
        raise TypeError(value)
    return operator.index(value)


def _element_indices(output: torch.Tensor, elements: list[tuple[Any, ...]], batch: int) -> torch.Tensor:
    """Captum's tuple targets: one element ``output[i, *element]`` per sample, as an index into the flat output."""
    dims = tuple(output.shape[1:])
    if len(elements) != batch:
        raise InvalidInputError(f"got {len(elements)} tuple targets for a batch of {batch}; give one per sample")
    flat = []
    for element in elements:
        if len(element) != len(dims):
            raise InvalidInputError(
                f"tuple target {element!r} must index one element of each sample's output of shape {dims} with "
                f"{len(dims)} indices; for one class per sample pass a list or tensor instead of a tuple"
            )
        try:
            ints = [_integer(i) for i in element]
        except (TypeError, ValueError):
            raise InvalidInputError(f"tuple target {element!r} must hold integer indices") from None
        for i, d in zip(ints, dims):
            if not 0 <= i < d:
                raise UnknownClassError(
                    f"tuple target {element!r} is out of range for an output of shape {dims} per sample"
                )
        position = 0
        for i, d in zip(ints, dims):
            position = position * d + i
        flat.append(position)
    return torch.tensor(flat, dtype=torch.long, device=output.device)
