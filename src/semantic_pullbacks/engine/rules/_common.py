"""Helpers shared by the rules: argument binding and the gate-tag bookkeeping."""

from __future__ import annotations

import functools
import inspect
import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ...errors import NotDifferentiableError

_MISSING = inspect.Parameter.empty
SQRT1_2 = 1.0 / math.sqrt(2.0)


class Binder:
    """Reads a call's arguments by name, for builtins that have no inspectable signature."""

    __slots__ = ("defaults", "names")

    def __init__(self, names: Sequence[str], **defaults: Any) -> None:
        self.names = tuple(names)
        self.defaults = defaults

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = dict(self.defaults)
        for name, value in zip(self.names, args):
            bound[name] = value
        for name, value in kwargs.items():
            bound["input" if name == "self" else name] = value
        return bound


def first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any], name: str = "input") -> Any:
    if args:
        return args[0]
    return kwargs.get(name, kwargs.get("self"))


def wants_grad(*tensors: Any) -> bool:
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


@dataclass(frozen=True)
class GateTag:
    """Marks a tensor that came out of a gate-like op (sigmoid, softmax), so a later product can freeze it.

    ``source`` is a weak reference to the op's input: ``x * sigmoid(x)`` is recognised as a SiLU.
    """

    kind: str  # "sigmoid" | "hardsigmoid" | "softmax"
    op: str
    source: Callable[[], torch.Tensor | None]
    dim: int | None = None


_TAG = "_semantic_pullbacks_gate"


def tag(out: torch.Tensor, kind: str, op: str, source: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    try:
        ref: Callable[[], torch.Tensor | None] = weakref.ref(source)
    except TypeError:
        ref = lambda: None
    out.__dict__[_TAG] = GateTag(kind, op, ref, dim)
    return out


def tag_of(t: Any) -> GateTag | None:
    if isinstance(t, torch.Tensor):
        return t.__dict__.get(_TAG)
    return None


def copy_tag(src: Any, dst: Any) -> None:
    t = tag_of(src)
    if t is not None and isinstance(dst, torch.Tensor) and dst is not src:
        dst.__dict__[_TAG] = t


def grad_needed(ctx: Any, i: int) -> bool:
    """Whether the running backward pass wants the gradient of input ``i`` of a custom Function.

    ``ctx.needs_input_grad`` only says the input requires grad; an explanation asks ``autograd.grad`` for the
    input image alone, and computing every LayerNorm's weight gradient anyway costs time the ordinary
    backward (which checks the graph task) does not spend.
    """
    if not ctx.needs_input_grad[i]:
        return False
    node = ctx.next_functions[i][0]
    if node is None:
        return False
    try:
        return bool(torch._C._will_engine_execute_node(node))
    except (AttributeError, RuntimeError):  # a leaf that autograd.grad asks for, or an older torch: assume yes
        return True


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """Gates are evaluated in at least float32, so bfloat16/float16 passes stay finite and accurate."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def soft_backward(backward: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a rule's ``backward`` as once-differentiable: refuse ``create_graph=True`` with a clear error.

    A soft adjoint freezes the gates, so its own derivative is not the derivative of the soft pullback; autograd's
    ``once_differentiable`` would quietly hand back a result that does not require grad. Autograd enables grad mode
    in a backward pass only for ``create_graph=True``, so once that is refused nothing here can build a graph, and
    the ``no_grad`` block ``once_differentiable`` would add (two intercepted calls per node) is not needed.
    """

    @functools.wraps(backward)
    def wrapper(ctx: Any, *grads: Any) -> Any:
        if torch.is_grad_enabled():
            raise NotDifferentiableError(
                "a soft pullback cannot be differentiated again (create_graph=True): its backward rules hold the "
                "gates fixed, so their own derivative is not the derivative of the pullback. Take first-order "
                "pullbacks only, or set the families concerned to None for ordinary double backward."
            )
        return backward(ctx, *grads)

    return wrapper


def plain_ops() -> Any:
    """A block whose torch calls skip torch-function dispatch (modes and tensor subclasses alike).

    ``pullback_mode`` stays pushed during a backward pass run inside it, so that activation checkpointing
    recomputes the forward with the rules on; every op and every tensor property a rule's backward arithmetic
    touches would otherwise make a Python round trip through the mode. Enter it only after reading
    ``ctx.saved_tensors``, which is where checkpointing recomputes.
    """
    return torch._C.DisableTorchFunction()


_COUNTED = "_semantic_pullbacks_counted"


def reclassify_once(t: torch.Tensor, coverage: Any, op: str, old: str, new: str) -> None:
    """Move ``t``'s coverage count from ``old`` to ``new`` the first time it is used as a gate, not on every use
    (one softmax feeding two matmuls is one softened softmax)."""
    if not t.__dict__.get(_COUNTED, False):
        t.__dict__[_COUNTED] = True
        coverage.reclassify(op, old, new)
