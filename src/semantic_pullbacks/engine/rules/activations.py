"""Soft rules for elementwise gates: ReLU and friends, GELU, SiLU-like x*g(x) activations.

Every rule here has the same shape: forward = the exact op, backward = ``grad * gate(x / tau)``, where the gate
is the op's own on/off switch with its edge blurred: ``Phi`` (normal CDF) for ReLU-type and GELU gates (the
expected gate under N(0, tau^2) noise on the input), ``g(x/tau)`` for x*g(x) activations.

Cost, kept near the gradient's: ``Phi`` is evaluated as ``(1 + erf(u / sqrt 2)) / 2``; ``erf`` is the cheapest
vectorised CPU kernel for it (``special.ndtr`` is about twice as slow and ``erfc`` 1.5x; the ``erf`` form loses
relative accuracy only where ``Phi < 1e-7``, which no gradient notices). The plain ReLU (the gate of most CNNs) has
a lean path: its forward writes ``erf(x / (sqrt 2 tau))`` straight into a float16 buffer, and its backward is one
fused ``grad + grad * e`` and a halving. The ordinary ReLU backward needs only the output, which the next layer
saves anyway, so saving the float32 input would add a whole activation per ReLU to the pass's memory; the float16
buffer adds half of one, and its rounding (<= 1.3e-4 on the gate) is far below what the temperature itself
changes. A ReLU fed by eval-mode BatchNorm (or a residual sum of such outputs) stores nothing at all: ``rebuild``
rebuilds its input in the backward pass. Other ReLU-type gates store their float16 gate; GELU/SiLU-type rules save
the input, as their ordinary backward does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..coverage import ORDINARY, SOFTENED
from ..mode import PassContext
from ..registry import register_nonlinear, register_rule
from ..temperatures import Relative, resolve_temperature
from ._common import Binder, compute_dtype, plain_ops, soft_backward, wants_grad
from ._phi import encode_phi, encode_window, erf_argument, erf_scale, from_code, phi_adjoint, window_adjoint
from .rebuild import rebuildable_terms, rebuilt_soft_relu, saved_tensor_hooks_active

__all__ = ["ActivationGate", "soft_gate"]


def _phi_scaled(x: torch.Tensor, tau: Any) -> torch.Tensor:
    """``Phi(x / tau)``, the normal CDF, with the division folded into the one scaling pass."""
    return erf_argument(x, erf_scale(tau)).erf_().add_(1.0).mul_(0.5)


@dataclass(frozen=True)
class ActivationGate:
    """The backward multiplier of one activation: ``gate(x, tau, params)``; ``tau == 0`` is the hard gate.

    ``adjoint(grad, x, tau, params)``, where given, computes ``grad * gate`` for a positive ``tau`` in fewer passes
    over memory than the gate and a product (it may return ``None`` where it has no shortcut).
    """

    name: str
    family: str
    gate: Callable[[torch.Tensor, Any, dict[str, Any]], torch.Tensor]
    adjoint: Callable[[torch.Tensor, torch.Tensor, Any, dict[str, Any]], torch.Tensor | None] | None = None


def _scaled(x: torch.Tensor, tau: Any) -> torch.Tensor:
    """``x / tau`` in a new buffer (a multiplication by the reciprocal where ``tau`` is a number)."""
    return torch.mul(x, 1.0 / tau) if not isinstance(tau, torch.Tensor) else torch.div(x, tau)


def _relu_gate(x: torch.Tensor, tau: Any, p: dict[str, Any]) -> torch.Tensor:
    if _is_zero(tau):
        return (x > 0).to(x.dtype)
    return _phi_scaled(x, tau)


def _hardtanh_gate(x: torch.Tensor, tau: Any, p: dict[str, Any]) -> torch.Tensor:
    lo, hi = float(p["min_val"]), float(p["max_val"])
    if _is_zero(tau):
        return ((x > lo) & (x < hi)).to(x.dtype)
    return _phi_scaled(x - lo, tau) - _phi_scaled(x - hi, tau)


def _leaky_gate(x: torch.Tensor, tau: Any, p: dict[str, Any]) -> torch.Tensor:
    slope = p["negative_slope"]
    return slope + (1.0 - slope) * _relu_gate(x, tau, p)


def _prelu_gate(x: torch.Tensor, tau: Any, p: dict[str, Any]) -> torch.Tensor:
    w = p["weight"].detach().to(x.dtype)
    if x.dim() >= 2 and w.numel() > 1:
        w = w.view(1, -1, *([1] * (x.dim() - 2)))
    return w + (1.0 - w) * _relu_gate(x, tau, p)


def _gelu_gate(x: torch.Tensor, tau: Any, p: dict[str, Any]) -> torch.Tensor:
    if _is_zero(tau):
        return (x > 0).to(x.dtype)
    if p.get("approximate", "none") == "tanh":
        u = _scaled(x, tau)
        return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u**3)))
    return _phi_scaled(x, tau)


def _sigmoid_gate(x: torch.Tensor, tau: Any, p: dict[str, Any]) -> torch.Tensor:
    if _is_zero(tau):
        return (x > 0).to(x.dtype)
    return _scaled(x, tau).sigmoid_()


def _hardsigmoid_gate(x: torch.Tensor, tau: Any, p: dict[str, Any]) -> torch.Tensor:
    if _is_zero(tau):
        return (x > 0).to(x.dtype)
    return F.hardsigmoid(_scaled(x, tau), inplace=True)  # clamp(x / (6 tau) + 1/2, 0, 1), fused


def _mish_gate(x: torch.Tensor, tau: Any, p: dict[str, Any]) -> torch.Tensor:
    if _is_zero(tau):
        return (x > 0).to(x.dtype)
    return torch.tanh(F.softplus(_scaled(x, tau)))


def _is_zero(tau: Any) -> bool:
    return isinstance(tau, float) and tau == 0.0


def _phi_adjoint(grad: torch.Tensor, x: torch.Tensor, tau: Any, p: dict[str, Any]) -> torch.Tensor | None:
    """``grad * Phi(x / tau)``: the scaling, the ``erf`` and one fused ``(grad + grad * e) / 2``."""
    if p.get("approximate", "none") != "none":
        return None
    return phi_adjoint(grad, erf_argument(x, erf_scale(tau)))


#: Where ``sigmoid(u)`` is 1 to working precision, softplus's backward passes the gradient through unchanged.
_SIGMOID_SATURATES = {torch.float64: 37.0}


def _sigmoid_adjoint(grad: torch.Tensor, x: torch.Tensor, tau: Any, p: dict[str, Any]) -> torch.Tensor | None:
    """``grad * sigmoid(x / tau)`` in one pass: exactly what softplus's backward with ``beta = 1 / tau`` computes."""
    if isinstance(tau, torch.Tensor) or grad.dtype != x.dtype:
        return None
    saturates = _SIGMOID_SATURATES.get(x.dtype, 20.0)
    return torch.ops.aten.softplus_backward(grad, x, 1.0 / tau, saturates)


def _hardsigmoid_adjoint(grad: torch.Tensor, x: torch.Tensor, tau: Any, p: dict[str, Any]) -> torch.Tensor | None:
    return F.hardsigmoid(_scaled(x, tau), inplace=True).mul_(grad)


RELU = ActivationGate("relu", "relu", _relu_gate, _phi_adjoint)
HARDTANH = ActivationGate("hardtanh", "relu", _hardtanh_gate)
LEAKY_RELU = ActivationGate("leaky_relu", "relu", _leaky_gate)
PRELU = ActivationGate("prelu", "relu", _prelu_gate)
GELU = ActivationGate("gelu", "gelu", _gelu_gate, _phi_adjoint)
SILU = ActivationGate("silu", "silu", _sigmoid_gate, _sigmoid_adjoint)
HARDSWISH = ActivationGate("hardswish", "silu", _hardsigmoid_gate, _hardsigmoid_adjoint)
MISH = ActivationGate("mish", "silu", _mish_gate)
_RELU_TYPES = (RELU, HARDTANH, LEAKY_RELU)


def _stored_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float16 if x.dtype in (torch.float32, torch.float16, torch.bfloat16) else x.dtype


class _SoftGate(torch.autograd.Function):
    """Forward: ``exact(x)`` as given. Backward: ``grad * gate(x / tau)``, the gate held fixed.

    Every tensor the backward needs goes through ``save_for_backward``, so autograd frees it after the backward
    pass (and activation checkpointing can drop and recompute it) as it does the ordinary op's saved tensors.
    """

    @staticmethod
    def forward(ctx, x, exact, spec, tau, params, inplace, store):  # type: ignore[no-untyped-def, override]
        ctx.spec, ctx.tau = spec, tau
        ctx.params = {k: v for k, v in params.items() if not isinstance(v, torch.Tensor)}
        ctx.tensor_params = [k for k, v in params.items() if isinstance(v, torch.Tensor) and k != "input"]
        ctx.stored_gate = inplace or store
        extra = [params[k] for k in ctx.tensor_params]
        if ctx.stored_gate:
            # The input is about to be overwritten, or several backward passes will read the gate: keep the gate.
            gate = _evaluate(spec, x, tau, params)
            out = exact(x)
            if inplace:
                ctx.mark_dirty(x)
            ctx.save_for_backward(gate, *extra)
            return out
        ctx.save_for_backward(x, *extra)
        return exact(x)

    @staticmethod
    @soft_backward
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        saved = ctx.saved_tensors  # read first: under checkpointing this recomputes the forward, with the rules on
        with plain_ops():
            if ctx.stored_gate:
                g = torch.mul(grad, saved[0])
            else:
                params = {**ctx.params, **dict(zip(ctx.tensor_params, saved[1:]))}
                g = _adjoint(ctx.spec, grad, saved[0], ctx.tau, params)
            return g if g.dtype == grad.dtype else g.to(grad.dtype), None, None, None, None, None, None


class _SoftReLU(torch.autograd.Function):
    """ReLU-type gates stored: forward ``exact(x)``; backward ``grad * (1 + e) / 2`` with ``e = 2 gate - 1``
    evaluated in the forward by ``encode``, kept in float16 where ``compact`` (see ``_phi``)."""

    @staticmethod
    def forward(ctx, x, exact, encode, inplace, compact):  # type: ignore[no-untyped-def, override]
        e = encode(x)
        # Under saved-tensor hooks (activation checkpointing) the buffer is dropped and recomputed, not kept:
        # keep it exact then, as the rebuilt gate it stands in for is.
        compact = compact and not saved_tensor_hooks_active()
        ctx.save_for_backward(e.to(_stored_dtype(x) if compact else x.dtype))
        out = exact(x)
        if inplace:
            ctx.mark_dirty(x)
        return out

    @staticmethod
    @soft_backward
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        (e,) = ctx.saved_tensors
        with plain_ops():
            return from_code(grad, e), None, None, None, None


class _SoftWindow(torch.autograd.Function):
    """ReLU6/Hardtanh: forward ``exact(x)``; backward ``grad * (Phi((x - lo) / tau) - Phi((x - hi) / tau))``, from
    the input, which the ordinary hardtanh backward keeps as well (so this costs no memory beyond it)."""

    @staticmethod
    def forward(ctx, x, exact, lo, hi, tau):  # type: ignore[no-untyped-def, override]
        s = erf_scale(resolve_temperature(tau, x))
        ctx.lo, ctx.width = lo, hi - lo
        ctx.scale = None if isinstance(s, torch.Tensor) else s
        ctx.save_for_backward(x, *([s] if ctx.scale is None else []))
        return exact(x)

    @staticmethod
    @soft_backward
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        x, *rest = ctx.saved_tensors
        with plain_ops():
            s = rest[0] if ctx.scale is None else ctx.scale
            g = window_adjoint(grad, erf_argument(x, s, ctx.lo), ctx.width * s)
            return g if g.dtype == grad.dtype else g.to(grad.dtype), None, None, None, None


def _encode(x: torch.Tensor, tau: Any, window: tuple[float, float] | None, slope: float = 0.0) -> torch.Tensor:
    """``2 gate - 1`` of a ReLU (``window`` None; leaky: ``slope + (1 - slope) erf``) or a clipped ReLU on
    ``[lo, hi]``, in the compute dtype."""
    s = erf_scale(resolve_temperature(tau, x))
    if window is None:
        e = encode_phi(erf_argument(x, s))
        return e if slope == 0.0 else e.mul_(1.0 - slope).add_(slope)
    lo, hi = window
    return encode_window(erf_argument(x, s, lo), (hi - lo) * s)


def _soft_relu_type(func, args, kwargs, x, spec, tau, p, inplace, ctx):  # type: ignore[no-untyped-def]
    """ReLU, LeakyReLU and ReLU6/Hardtanh with a positive temperature: the input kept where the ordinary backward
    keeps it (hardtanh and leaky ReLU, not in place), else rebuilt from tensors the graph keeps anyway (ReLU,
    ReLU6), else the gate stored: in float16 for one backward pass, exactly for several (so that each target's map
    from a shared forward pass is the map of its own call)."""
    exact = lambda t: func(*args, **kwargs)
    compact = not ctx.store_gates
    window = (float(p["min_val"]), float(p["max_val"])) if spec is HARDTANH else None
    keeps_input = not inplace and not ctx.store_gates
    if spec is LEAKY_RELU:
        if keeps_input:
            return soft_gate(x, exact, spec, tau, p)
        slope = float(p["negative_slope"])
        return _SoftReLU.apply(x, exact, lambda t: _encode(t, tau, None, slope), inplace, compact)
    if window is not None and keeps_input:
        return _SoftWindow.apply(x, exact, *window, tau)
    terms = None if ctx.store_gates else rebuildable_terms(x)
    if terms is not None:
        return rebuilt_soft_relu(x, exact, tau, inplace, terms, window)
    return _SoftReLU.apply(x, exact, lambda t: _encode(t, tau, window), inplace, compact)


def _evaluate(spec: ActivationGate, x: torch.Tensor, tau: Any, params: dict[str, Any]) -> torch.Tensor:
    xc = x.detach().to(compute_dtype(x))
    gate = spec.gate(xc, resolve_temperature(tau, xc), params)
    return gate if gate.dtype == x.dtype else gate.to(x.dtype)


def _adjoint(spec: ActivationGate, grad: torch.Tensor, x: torch.Tensor, tau: Any, params: dict[str, Any]) -> Any:
    """``grad * gate(x)``: through the gate's own shortcut where it has one, else the gate and a product."""
    xc = x if x.dtype == compute_dtype(x) else x.to(compute_dtype(x))
    t = resolve_temperature(tau, xc)
    if spec.adjoint is not None and not _is_zero(t):
        g = spec.adjoint(grad if grad.dtype == xc.dtype else grad.to(xc.dtype), xc, t, params)
        if g is not None:
            return g
    return torch.mul(grad, spec.gate(xc, t, params).to(x.dtype))


def soft_gate(
    x: torch.Tensor,
    exact: Callable[[torch.Tensor], torch.Tensor],
    spec: ActivationGate,
    tau: float | Relative,
    params: dict[str, Any] | None = None,
    inplace: bool = False,
    store: bool = False,
) -> torch.Tensor:
    """Apply ``exact`` to ``x`` with the soft adjoint of ``spec`` attached (the building block of these rules).

    ``store``: evaluate the gate now and keep it (for graphs that several backward passes run through) rather
    than saving ``x`` and evaluating it in the backward pass.
    """
    return _SoftGate.apply(x, exact, spec, tau, params or {}, inplace, store)


def _activation_rule(spec: ActivationGate, binder: Binder, *, force_inplace: bool = False, fixed: dict | None = None):
    def handler(func, args, kwargs, ctx: PassContext):  # type: ignore[no-untyped-def]
        p = binder(args, kwargs)
        if fixed:
            p.update(fixed)
        x = p["input"]
        extra = [p["weight"]] if "weight" in p else []
        if not wants_grad(x, *extra):
            return func(*args, **kwargs)
        tau = ctx.temperature(spec.family)
        if tau is None:
            ctx.record(spec.name, ORDINARY)
            return func(*args, **kwargs)
        ctx.record(spec.name, SOFTENED)
        inplace = force_inplace or bool(p.get("inplace", False))
        if inplace and x.is_leaf and x.requires_grad:
            return func(*args, **kwargs)  # let torch raise its own, familiar error
        if spec is PRELU:
            return _soft_prelu(func, args, kwargs, x, p["weight"], tau, p)
        if spec in _RELU_TYPES and not _is_zero(tau) and x.is_floating_point():
            return _soft_relu_type(func, args, kwargs, x, spec, tau, p, inplace, ctx)
        return soft_gate(x, lambda t: func(*args, **kwargs), spec, tau, p, inplace, store=ctx.store_gates)

    return handler


def _soft_prelu(func, args, kwargs, x, weight, tau, p):  # type: ignore[no-untyped-def]
    """PReLU: the input's adjoint is soft; the slope keeps a frozen-gate gradient ``x * (1 - Phi(x/tau))``."""
    out = soft_gate(x, lambda t: func(*args, **kwargs), PRELU, tau, p)
    if not weight.requires_grad:
        return out
    # Zero-valued branch carrying the slope's gradient; its forward contribution is exactly zero.
    xd = x.detach()
    off = 1.0 - _relu_gate(xd.to(compute_dtype(xd)), resolve_temperature(tau, xd), p).to(xd.dtype)
    w = weight.view(1, -1, *([1] * (x.dim() - 2))) if x.dim() >= 2 and weight.numel() > 1 else weight
    branch = w * (xd * off)
    return out + (branch - branch.detach())


_x = Binder(["input"])
_x_inplace = Binder(["input", "inplace"], inplace=False)

register_rule([torch.relu, torch.Tensor.relu, F.relu], op="relu", family="relu")(_activation_rule(RELU, _x_inplace))
register_rule([torch.relu_, torch.Tensor.relu_, F.relu_], op="relu", family="relu")(
    _activation_rule(RELU, _x, force_inplace=True)
)
register_rule(F.relu6, op="relu6", family="relu")(
    _activation_rule(HARDTANH, _x_inplace, fixed={"min_val": 0.0, "max_val": 6.0})
)
register_rule(F.hardtanh, op="hardtanh", family="relu")(
    _activation_rule(HARDTANH, Binder(["input", "min_val", "max_val", "inplace"], min_val=-1.0, max_val=1.0))
)
register_rule(F.hardtanh_, op="hardtanh", family="relu")(
    _activation_rule(HARDTANH, Binder(["input", "min_val", "max_val"], min_val=-1.0, max_val=1.0), force_inplace=True)
)
register_rule(F.leaky_relu, op="leaky_relu", family="relu")(
    _activation_rule(LEAKY_RELU, Binder(["input", "negative_slope", "inplace"], negative_slope=0.01))
)
register_rule(F.leaky_relu_, op="leaky_relu", family="relu")(
    _activation_rule(LEAKY_RELU, Binder(["input", "negative_slope"], negative_slope=0.01), force_inplace=True)
)
register_rule(list({torch.prelu, F.prelu}), op="prelu", family="relu")(
    _activation_rule(PRELU, Binder(["input", "weight"]))
)
register_rule(F.gelu, op="gelu", family="gelu")(
    _activation_rule(GELU, Binder(["input", "approximate"], approximate="none"))
)
register_rule(F.silu, op="silu", family="silu")(_activation_rule(SILU, _x_inplace))
register_rule(F.hardswish, op="hardswish", family="silu")(_activation_rule(HARDSWISH, _x_inplace))
register_rule(F.mish, op="mish", family="silu")(_activation_rule(MISH, _x_inplace))

register_nonlinear([F.elu, F.elu_, F.selu, F.celu, torch.selu, torch.celu, F.softplus, F.softsign], "smooth activation")
register_nonlinear([torch.tanh, torch.Tensor.tanh, F.tanh], "tanh")
register_nonlinear([F.logsigmoid, F.log_softmax, torch.log_softmax, torch.Tensor.log_softmax], "log-softmax")
register_nonlinear([torch.clamp, torch.Tensor.clamp, torch.clamp_min, torch.Tensor.clamp_min], "clamp")
register_nonlinear([torch.maximum, torch.minimum, torch.abs, torch.Tensor.abs], "max/min/abs")
