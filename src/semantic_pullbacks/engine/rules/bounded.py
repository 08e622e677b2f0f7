"""Bounded activations: ``tanh`` (the BERT pooler, LSTM-style cells) through its secant gate.

The paper's reading of ``GELU(x) = x * Phi(x)`` is a gate ``Phi(x)`` multiplied onto ``x``; its soft rule keeps the
gate and drops the derivative of the gate itself. The same reading of ``tanh(x) = x * g(x)`` gives the secant gate
``g(x) = tanh(x) / x`` (1 at 0, falling like ``1/|x|`` where tanh saturates): backward ``grad * g(x / tau)``. At
the default ``tau = 1`` the frozen-gate linear map reproduces the forward value exactly (``g(x) * x = tanh(x)``),
as for every other gate; a larger ``tau`` opens the gate towards the identity, ``tau -> 0`` closes it (the limit of
``tanh(x / tau)``, a step). Unlike ``tanh'(x) = 1 - tanh(x)^2``, which vanishes quadratically in saturation and
so tells nothing about inputs that drive a unit far into it, the secant gate still passes ``1/|x|`` of the signal.

Family ``bounded``; ``None`` keeps the ordinary gradient.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..coverage import ORDINARY, SOFTENED
from ..mode import PassContext
from ..registry import NOT_HANDLED, register_rule
from ._common import first_tensor, wants_grad
from ._expr import Pending, make, pending_of, root_of, set_expr
from .activations import ActivationGate, soft_gate

__all__ = ["TANH", "secant_gate"]


def secant_gate(x: torch.Tensor, tau: Any, p: dict[str, Any]) -> torch.Tensor:
    """``tanh(u) / u`` at ``u = x / tau``, with its limit 1 at ``u = 0`` (and 0 off zero for ``tau = 0``)."""
    if isinstance(tau, float) and tau == 0.0:
        return (x == 0).to(x.dtype)
    u = x / tau
    small = u.abs() < 1e-3
    safe = torch.where(small, torch.ones_like(u), u)
    return torch.where(small, 1.0 - u * u / 3.0, torch.tanh(safe) / safe)


TANH = ActivationGate("tanh", "bounded", secant_gate)


@register_rule([torch.tanh, torch.Tensor.tanh, F.tanh], op="tanh", family="bounded")
def _tanh_rule(func, args, kwargs, ctx: PassContext):  # type: ignore[no-untyped-def]
    x = first_tensor(args, kwargs)
    if not wants_grad(x):
        return NOT_HANDLED
    tau = ctx.temperature("bounded")
    status = ORDINARY if tau is None else SOFTENED
    ctx.record("tanh", status)
    if tau is None:
        out = func(*args, **kwargs)
    else:
        out = soft_gate(x, lambda t: func(*args, **kwargs), TANH, tau, store=ctx.store_gates)
    # tanh is also a piece of written-out GELUs: tag it so a completed composite can take its place
    set_expr(out, make("fx", root_of(x), pending=(*pending_of(x), Pending("tanh", status))))
    return out
