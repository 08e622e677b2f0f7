"""``pullback_mode``: inside it, autograd computes soft pullbacks instead of gradients.

The mode sits at the torch-function layer, so it sees functional calls (``F.relu``, ``x.softmax(-1)``,
``F.scaled_dot_product_attention``) as well as modules, and never touches the model. Each intercepted call runs
the exact op for its forward value and attaches a soft adjoint for the backward pass.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import NotDifferentiableError
from .context import PassContext
from .coverage import NO_RULE, CoverageReport
from .registry import NOT_HANDLED, has_business_with, nonlinear_name, rule_for
from .support import check_model_supported
from .temperatures import Temperatures

__all__ = ["PassContext", "PullbackSession", "check_model_supported", "pullback_mode", "rules_suspended"]

_local = threading.local()


def _suspended_depth() -> int:
    return getattr(_local, "suspended", 0)


def _session_stack() -> list[PullbackSession]:
    stack = getattr(_local, "sessions", None)
    if stack is None:
        stack = _local.sessions = []
    return stack


def _applies(session: PullbackSession) -> bool:
    """Whether ``session``'s rules apply to a call on this thread: outer nested sessions pass calls through.

    Autograd runs the backward pass of GPU tensors in its own device threads and hands them the torch-function
    mode (so a forward recomputed there, by activation checkpointing, is intercepted) but not this module's
    thread-local stack: a thread without a stack of its own runs the mode that reached it.
    """
    stack = getattr(_local, "sessions", None)
    return stack[-1] is session if stack else True


@contextlib.contextmanager
def rules_suspended() -> Iterator[None]:
    """Let the code inside (a rule's own forward or backward helpers) run plain torch ops, unintercepted."""
    _local.suspended = _suspended_depth() + 1
    try:
        yield
    finally:
        _local.suspended -= 1


class _InterceptMode(TorchFunctionMode):
    def __init__(self, session: PullbackSession) -> None:
        super().__init__()
        self.session = session

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func not in _BACKWARD_ENTRIES and not has_business_with(func):
            return func(*args, **kwargs)  # most calls: tensor properties, shapes, linear ops
        session = self.session
        if _suspended_depth() or not _applies(session):
            return func(*args, **kwargs)
        if func in _BACKWARD_ENTRIES:
            return self._backward_inside(func, types, args, kwargs)
        if not torch.is_grad_enabled():
            return func(*args, **kwargs)
        rule = rule_for(func)
        if rule is None:
            name = nonlinear_name(func)
            if name is not None and _any_requires_grad(args, kwargs):
                session.context.record(name, NO_RULE)
            return func(*args, **kwargs)
        if _functorch_active():
            raise NotDifferentiableError(
                "torch.func transforms (grad, vjp, vmap, jacrev, ...) cannot run inside pullback_mode: the soft "
                "backward rules are autograd Functions without functorch support. Take the pullback with "
                "torch.autograd.grad or .backward() inside the mode instead."
            )
        _local.suspended = _suspended_depth() + 1
        try:
            out = rule.handler(func, args, kwargs, session.context)
        finally:
            _local.suspended -= 1
        if out is NOT_HANDLED:
            return func(*args, **kwargs)
        return out

    def _backward_inside(self, func, types, args, kwargs):  # type: ignore[no-untyped-def]
        """Run a backward pass with the mode still on: activation checkpointing recomputes the forward inside it.

        Torch switches a mode off while its handler runs, so a plain ``func(...)`` would run the whole backward
        pass, and any forward it recomputes (``torch.utils.checkpoint``), without the rules: the reentrant form
        would silently give the ordinary gradient, the non-reentrant one would find different saved tensors.
        """
        with self:
            return _redispatch(func, types, args, kwargs)


#: The calls that start a backward pass.
_BACKWARD_ENTRIES = frozenset({torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad})


def _redispatch(func, types, args, kwargs):  # type: ignore[no-untyped-def]
    """Call ``func`` skipping one level of torch-function dispatch, so a mode pushed again is not re-entered."""
    redispatch = getattr(torch.overrides, "redispatch_function", None)
    if redispatch is not None:
        return redispatch(func, types, args, kwargs)
    return torch._C._skip_one_hop_torch_function(func, types, args, kwargs)


_functorch_active = getattr(torch._C, "_are_functorch_transforms_active", lambda: False)


def _any_requires_grad(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor) and a.requires_grad:
            return True
        if isinstance(a, (list, tuple)) and any(isinstance(t, torch.Tensor) and t.requires_grad for t in a):
            return True
    return False


class PullbackSession:
    """Handle returned by :func:`pullback_mode`; holds the temperatures and the coverage report."""

    def __init__(self, temperatures: Temperatures, warn_unhandled: bool, backward_passes: int = 1) -> None:
        self.temperatures = temperatures
        self.coverage = CoverageReport()
        self.context = PassContext(temperatures, self.coverage, store_gates=backward_passes > 1)
        self.warn_unhandled = warn_unhandled
        self._mode = _InterceptMode(self)
        self._thread: int | None = None

    def __repr__(self) -> str:
        return f"PullbackSession(temperatures={self.temperatures}, coverage={self.coverage!r})"


@contextlib.contextmanager
def pullback_mode(
    temperatures: Temperatures | Mapping[str, Any] | None = None,
    *,
    model: nn.Module | None = None,
    warn_unhandled: bool = False,
    backward_passes: int = 1,
) -> Iterator[PullbackSession]:
    """Compute soft pullbacks instead of gradients for every backward pass whose graph is built inside.

    Forward values are bit-identical to the model's own; only the adjoint changes. Nothing on the model is
    mutated, leaving the block (also by an exception) restores ordinary autograd, and the mode only affects the
    thread that entered it. Pass ``model`` to have it checked for what hides its ops from the mode (TorchScript,
    ``torch.compile``, ``nn.DataParallel`` over several devices). ``backward_passes`` > 1 says several backward
    passes will run through the graph (one per target, with ``retain_graph``): gates are then evaluated once, in
    the forward pass, and stored. A backward pass run inside the block keeps the mode on, so a forward that
    activation checkpointing recomputes there is softened too.

    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18().eval()
    >>> x = torch.randn(1, 3, 64, 64, requires_grad=True)
    >>> with pullback_mode() as pb:
    ...     model(x)[0, 7].backward()
    >>> x.grad.shape, pb.coverage.softened["relu"] > 0
    (torch.Size([1, 3, 64, 64]), True)
    """
    if model is not None:
        check_model_supported(model)
    session = PullbackSession(Temperatures.coerce(temperatures), warn_unhandled, backward_passes)
    stack = _session_stack()
    stack.append(session)
    try:
        with session._mode:
            yield session
    finally:
        stack.remove(session)
        if warn_unhandled:
            session.coverage.warn_unhandled()
