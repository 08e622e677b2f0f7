"""The arithmetic of the ``Phi`` gates (ReLU, ReLU6/Hardtanh, LeakyReLU, GELU), in as few passes over memory as it
allows.

On a CPU a gate's backward is bound by how often it walks over a whole activation, not by arithmetic: one ``erf``
costs about two plain passes, and an ordinary ReLU6 backward is one pass. So each helper works in place on a buffer
it owns, never mixes dtypes inside one op (a float16 operand sends the op down a slow path that converts element by
element and copies first), and folds constants into the per-sample scale instead of spending a pass on them:

- ``Phi(u) = (1 + erf(u / sqrt 2)) / 2``, so ``grad * Phi = (grad + grad * e) / 2`` with ``e = erf(...)``;
- the window gate of a clipped ReLU, ``Phi(a) - Phi(a - w)`` with ``a = (x - lo) / tau`` and ``w = (hi - lo) / tau``,
  is ``(erf(a') + erf(w' - a')) / 2`` (``'``: divided by ``sqrt 2``), since ``1 - Phi(t) = Phi(-t)``: two ``erf``,
  no constant offset to carry, and the sum and the halving in one ``lerp``. Written as ``Phi(m) + Phi(M) - 1`` with
  ``m, M`` the smaller and larger of ``a`` and ``w - a``, the second term is ``1 - Phi(M) <= 1 - Phi(w / 2)``: when
  the window is wide against the temperature (ReLU6 at ``tau <= 0.6``) that is below what the dtype resolves (float64)
  or below 5e-7 (float32, 250 times under the float16 bound of a stored gate), and one ``erf`` of ``min(a, w - a)``
  does.

Every helper takes ``u``, the gate's input already scaled by ``s = 1 / (sqrt 2 tau)``, in a buffer it may
overwrite; ``s`` is computed once per gate, a number or a per-sample tensor.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ._common import SQRT1_2, compute_dtype

__all__ = [
    "encode_phi",
    "encode_window",
    "erf_argument",
    "erf_scale",
    "from_code",
    "one_side_suffices",
    "phi_adjoint",
    "window_adjoint",
]


def erf_scale(tau: Any) -> Any:
    """``s = 1 / (sqrt 2 tau)`` for a temperature that is a number or a per-sample tensor."""
    return SQRT1_2 / tau if not isinstance(tau, torch.Tensor) else tau.reciprocal().mul_(SQRT1_2)


def erf_argument(x: torch.Tensor, s: Any, lo: float = 0.0) -> torch.Tensor:
    """``(x - lo) * s`` in a new buffer of the compute dtype."""
    xc = x.detach()
    if xc.dtype != compute_dtype(xc):
        xc = xc.to(compute_dtype(xc))
    u = torch.mul(xc, s)
    if lo != 0.0:
        u.sub_(lo * s)
    return u


def phi_adjoint(grad: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``grad * Phi``, written into ``u``."""
    return _half_plus_half(grad, u.erf_())


def window_adjoint(grad: torch.Tensor, u: torch.Tensor, width: Any) -> torch.Tensor:
    """``grad * (Phi(a) - Phi(a - w))``, written into ``u``; ``width`` is ``w`` scaled like ``u``."""
    v = torch.rsub(u, width)
    if one_side_suffices(width, u.dtype):
        return phi_adjoint(grad, torch.minimum(u, v, out=u))
    return u.erf_().lerp_(v.erf_(), 0.5).mul_(_as(grad, u))


def encode_phi(u: torch.Tensor) -> torch.Tensor:
    """``2 Phi - 1``, in [-1, 1]: the form in which a gate is stored (float16 rounds it by at most 2.5e-4, so the
    gate by 1.3e-4)."""
    return u.erf_()


def encode_window(u: torch.Tensor, width: Any) -> torch.Tensor:
    """``2 (Phi(a) - Phi(a - w)) - 1``, in [-1, 1], written into ``u``."""
    v = torch.rsub(u, width)
    if one_side_suffices(width, u.dtype):
        return torch.minimum(u, v, out=u).erf_()
    return u.erf_().add_(v.erf_()).sub_(1.0)


def _half_width_needed(tolerance: float) -> float:
    """The half-width ``y`` (in ``erf`` units) from which ``erfc(y) / 2``, the dropped term, is below ``tolerance``."""
    lo, hi = 0.0, 40.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if math.erfc(mid) / 2 > tolerance else (lo, mid)
    return hi


#: Per dtype, how wide (in ``erf`` units) a window must be for its far side to be dropped: float64 to its own
#: resolution, float32 (and the half types, whose gates are evaluated in float32) to 2^-21, under 5e-7.
_ONE_SIDE = {torch.float64: _half_width_needed(2.0**-54) * 2, torch.float32: _half_width_needed(2.0**-21) * 2}


def one_side_suffices(width: Any, dtype: torch.dtype) -> bool:
    """Whether the window's far side, ``1 - Phi(M)``, is negligible for every sample (see the module docstring).

    A per-sample width is read back only on the CPU (free there); on an accelerator the read would wait on the
    device, so there both sides are always evaluated."""
    needed = _ONE_SIDE.get(dtype, _ONE_SIDE[torch.float32])
    if isinstance(width, torch.Tensor):
        if width.device.type != "cpu":
            return False
        width = float(width.min())
    return width >= needed


def from_code(grad: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``grad * (1 + e) / 2`` for a gate stored as ``e = 2 gate - 1``, in ``grad``'s dtype."""
    return _half_plus_half(grad, e.to(grad.dtype) if e.dtype != grad.dtype else e.clone())


def _half_plus_half(grad: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``(grad + grad * e) / 2`` into ``e``."""
    g = _as(grad, e)
    return torch.addcmul(g, g, e, out=e).mul_(0.5)


def _as(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return grad if grad.dtype == like.dtype else grad.to(like.dtype)
