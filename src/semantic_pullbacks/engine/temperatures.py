"""Temperatures: how far each family of gates is softened in the backward pass.

The forward pass never depends on these numbers; they only shape the soft adjoint. A family set to ``None``
keeps its ordinary gradient, which is how users ablate one family at a time.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from ..errors import InvalidInputError
from .families import FAMILIES, known_families

__all__ = [
    "FAMILIES",
    "BySize",
    "Relative",
    "TemperatureLike",
    "Temperatures",
    "known_families",
    "resolve_temperature",
]


@dataclass(frozen=True)
class Relative:
    """A temperature given relative to the spread of the gate's input: ``tau = scale * std``.

    The standard deviation is taken per sample (over every dimension but the first) of the tensor that enters
    the gate, so one setting fits layers whose pre-activations live on different scales. A floor of ``min_tau``
    keeps dead or constant layers from collapsing to a hard gate (so it must be positive).

    The first dimension is always taken as the batch: give the engine batched tensors (``x[None]`` for one
    sample), as the explainers require, so one sample's map is the same alone and in a batch.
    """

    scale: float
    min_tau: float = 1e-6

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", _positive_number("Relative(scale=...)", self.scale))
        object.__setattr__(self, "min_tau", _positive_number("Relative(min_tau=...)", self.min_tau))


def _positive_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise InvalidInputError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class BySize:
    """A temperature per network stage, the stages told apart by the spatial size of the gate's input.

    The stages of a CNN work on feature maps of different sides (112, 56, 28, 14 and 7 px for a 224-px input), and
    their gates do different jobs: gates at high resolution shape the fine structure of the map (too soft, and the
    adjoints of the stride-2 convolutions leave a checkerboard), gates at low resolution decide where the evidence
    lies (too soft, and the map stops depending on what the top layers learned). ``sizes`` maps a minimum side to
    a temperature; a gate whose input's smaller spatial side is at least that minimum gets the temperature of the
    largest such minimum, any other gate (smaller maps, or inputs without two spatial dimensions, such as tokens)
    gets ``default``. Minimums rather than exact sides keep one setting valid for the same network at nearby input
    sizes (EfficientNet-Lite1 at 240 px has sides 120, 60, 30, 15, 8). Every temperature must be positive
    (a number or :class:`Relative`).

    Text form (settings files, ``--temperatures``): the default, then ``SIDE:VALUE`` entries, separated by ``;``.

    ```pycon
    >>> staged = BySize(Relative(1.0), {56: Relative(1.5), 14: Relative(2.0)})  # [56, ∞): 1.5, [14, 56): 2, else 1
    >>> [staged.for_side(side).scale for side in (112, 56, 28, 14, 7)]
    [1.5, 1.5, 2.0, 2.0, 1.0]
    >>> str(BySize.parse("1*std; 56:1.5*std; 14:2*std"))
    '1*std;56:1.5*std;14:2*std'
    ```
    """

    default: float | Relative
    sizes: Mapping[int, float | Relative] | tuple[tuple[int, float | Relative], ...] = ()

    def __post_init__(self) -> None:
        items = list(self.sizes.items()) if isinstance(self.sizes, Mapping) else list(self.sizes)
        _check_stage_temperature("default", self.default)
        entries: dict[int, float | Relative] = {}
        for item in items:
            if not (isinstance(item, tuple) and len(item) == 2):
                raise InvalidInputError(f"BySize sizes must map a side to a temperature, got {item!r}")
            side, tau = item
            if isinstance(side, bool) or not isinstance(side, int) or side < 1:
                raise InvalidInputError(f"BySize sides must be positive integers (pixels), got {side!r}")
            if side in entries:
                raise InvalidInputError(f"BySize gives side {side} twice")
            _check_stage_temperature(f"side {side}", tau)
            entries[side] = float(tau) if isinstance(tau, int) else tau
        default = float(self.default) if isinstance(self.default, int) else self.default
        object.__setattr__(self, "default", default)
        object.__setattr__(self, "sizes", tuple(sorted(entries.items(), reverse=True)))

    def for_side(self, side: int | None) -> float | Relative:
        """The temperature of a gate whose input's smaller spatial side is ``side`` (``None``: no spatial dims)."""
        if side is not None:
            for minimum, tau in self.sizes:
                if side >= minimum:
                    return tau
        return self.default

    def for_input(self, x: torch.Tensor) -> float | Relative:
        """The temperature of a gate with input ``x``: its stage is read from ``x``'s smaller spatial side.

        ``x`` is read as channels-first (``N, C, *spatial``), as torch's convolutions lay it out. Sides are minimums,
        so a network run at a *smaller* input than the one the settings were made for moves each feature map into
        the next stage down (Lite0's stem at 192 px is 96 px: the 56-px entry applies, not the 112-px one).
        """
        return self.for_side(min(x.shape[2:]) if x.dim() >= 4 else None)

    def __str__(self) -> str:
        return ";".join([_text(self.default), *(f"{side}:{_text(tau)}" for side, tau in self.sizes)])

    @classmethod
    def parse(cls, text: str) -> BySize:
        """Read ``"1*std;56:1.5*std;14:2*std"``: the default first, then ``SIDE:VALUE`` entries."""
        parts = [p.strip() for p in text.split(";") if p.strip()]
        defaults = [p for p in parts if ":" not in p]  # counted, not read: "none" is a default like any other
        if len(defaults) > 1:
            raise InvalidInputError(
                f"cannot read staged temperature {text!r}: more than one default value ({', '.join(defaults)})"
            )
        default, sizes = None, {}
        for part in parts:
            side, sep, value = part.partition(":")
            if not sep:
                default = _parse(part)
                continue
            side = side.strip()
            if not (side.isascii() and side.isdigit()):
                raise InvalidInputError(f"cannot read staged temperature {text!r}: {side!r} is not a side in pixels")
            if int(side) in sizes:
                raise InvalidInputError(f"cannot read staged temperature {text!r}: side {int(side)} is given twice")
            sizes[int(side)] = _parse(value)
        if not defaults:
            raise InvalidInputError(
                f"staged temperature {text!r} needs a default value first, e.g. '1*std;56:1.5*std;14:2*std'"
            )
        return cls(default, sizes)  # type: ignore[arg-type]


def _text(tau: float | Relative) -> str:
    return f"{_number(tau.scale)}*std" if isinstance(tau, Relative) else _number(tau)


def _number(x: float) -> str:
    """``x`` as short as it reads back exactly: ``3`` rather than ``3.0``, and never rounded (``:g`` alone keeps
    six digits, so a settings file written and read again would change the temperature)."""
    short = f"{x:g}"
    return short if float(short) == x else repr(float(x))


def _check_stage_temperature(where: str, tau: Any) -> None:
    if isinstance(tau, Relative):
        return
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau <= 0:
        raise InvalidInputError(
            f"BySize {where}: each stage needs a positive number or Relative(...), got {tau!r} "
            "(a hard gate per stage is not supported; use a small temperature)"
        )


TemperatureLike = float | Relative | BySize | None


@dataclass(frozen=True)
class Temperatures:
    """Per-family temperatures; ``None`` keeps a family's ordinary gradient.

    >>> Temperatures(relu=0.4).relu
    0.4
    >>> Temperatures.hard().relu  # every gate hard: the ordinary gradient on ReLU/max-pool nets
    0.0

    ``norm`` and ``gate`` have no temperature to speak of: any number (or ``True``) freezes them, ``None`` or
    ``False`` leaves their ordinary gradient. ``extra`` holds temperatures of families added by users through
    :func:`semantic_pullbacks.register_rule` (register the rule first: an unknown family is refused, so a typo
    never silently leaves the default in place). Numbers are stored as floats, so ``0`` and ``0.0`` are the same
    hard gate. ``attention`` takes an absolute temperature only: its scores have no per-sample scale to follow.
    """

    relu: TemperatureLike = 0.6
    gelu: TemperatureLike = 1.0
    silu: TemperatureLike = 1.6
    maxpool: TemperatureLike = 0.3
    attention: TemperatureLike = 1.0
    gate: TemperatureLike = 1.0
    norm: TemperatureLike = 1.0
    bounded: TemperatureLike = 1.0
    extra: Mapping[str, TemperatureLike] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [name for name in self.extra if name not in known_families()]
        if unknown:
            raise InvalidInputError(_unknown_family_message(unknown[0]))
        for name, value in self.items():
            if value is True:
                value = 1.0
            elif value is False:
                value = None
            value = _validate(name, value)
            if name in self.extra:
                object.__setattr__(self, "extra", {**self.extra, name: value})
            else:
                object.__setattr__(self, name, value)

    def items(self) -> list[tuple[str, TemperatureLike]]:
        builtin = [(f.name, getattr(self, f.name)) for f in fields(self) if f.name != "extra"]
        return builtin + list(self.extra.items())

    def get(self, family: str) -> TemperatureLike:
        if family in self.extra:
            return self.extra[family]
        if family in FAMILIES:
            return getattr(self, family)
        raise InvalidInputError(_unknown_family_message(family))

    def replace(self, **changes: TemperatureLike) -> Temperatures:
        """A copy with some families changed (unknown names go to ``extra``)."""
        builtin = {k: v for k, v in changes.items() if k in FAMILIES}
        extra = {k: v for k, v in changes.items() if k not in FAMILIES}
        return replace(self, **builtin, extra={**self.extra, **extra})

    @classmethod
    def hard(cls) -> Temperatures:
        """All activation and pooling gates hard (tau = 0): the ordinary gradient for ReLU/max-pool nets."""
        return cls(relu=0.0, gelu=0.0, silu=0.0, maxpool=0.0)

    @classmethod
    def ordinary(cls) -> Temperatures:
        """Every family off: the mode becomes a plain backward pass (useful to compare within one code path)."""
        return cls(relu=None, gelu=None, silu=None, maxpool=None, attention=None, gate=None, norm=None, bounded=None)

    @classmethod
    def coerce(cls, value: Temperatures | Mapping[str, Any] | None) -> Temperatures:
        """Accept ``None`` (paper defaults), a :class:`Temperatures`, or a mapping of family -> value."""
        if value is None:
            return cls()
        if isinstance(value, Temperatures):
            return value
        if isinstance(value, Mapping):
            return cls().replace(**{str(k): _parse(v) for k, v in value.items()})
        raise InvalidInputError(
            f"temperatures must be None, a Temperatures or a mapping of family to value, got {type(value).__name__}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (``Relative(2)`` becomes ``"2*std"``), for settings files and reports."""
        return {
            k: (_text(v) if isinstance(v, Relative) else str(v) if isinstance(v, BySize) else v)
            for k, v in self.items()
        }


def _parse(value: Any) -> TemperatureLike:
    """Read ``"2*std"`` / ``"2std"`` strings (settings files, CLI) as :class:`Relative`."""
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if text in ("none", "off", "null", ""):
            return None
        if ";" in text or ":" in text:
            return BySize.parse(text)
        for suffix in ("*std", "std", "xstd"):
            if text.endswith(suffix):
                try:
                    return Relative(float(text[: -len(suffix)] or 1.0))
                except ValueError:
                    break
        try:
            return float(text)
        except ValueError:
            raise InvalidInputError(
                f"cannot read temperature {value!r}: use a number, 'none', or a relative value like '2*std'"
            ) from None
    return value


def _validate(name: str, value: Any) -> TemperatureLike:
    """The value as stored: ``None``, a :class:`Relative`, or a float (ints become floats, so ``0`` is hard)."""
    if value is None:
        return None
    if isinstance(value, Relative):
        if name == "attention":
            raise InvalidInputError(
                f"temperature for 'attention' must be an absolute number or None, got {value!r}: attention scores "
                "are softened as softmax(scores / tau), and a multiple of their spread has no meaning there"
            )
        return value
    if isinstance(value, BySize):
        if name in ("attention", "gate", "norm"):
            raise InvalidInputError(f"temperature for {name!r} cannot be staged (BySize); give a number or None")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise InvalidInputError(
            f"temperature for {name!r} must be a non-negative finite number, Relative(...) or None; got {value!r}"
        )
    return float(value)


def _unknown_family_message(name: str) -> str:
    known = known_families()
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"unknown temperature family {name!r}{hint}; known: {', '.join(known)}. A family of your own needs its "
        "rule registered first (register_rule(..., family=...))"
    )


def resolve_temperature(tau: float | Relative | BySize, x: torch.Tensor) -> float | torch.Tensor:
    """The effective temperature for gate input ``x``: a float, or a per-sample tensor broadcastable to ``x``."""
    if isinstance(tau, BySize):
        tau = tau.for_input(x)
    if not isinstance(tau, Relative):
        return float(tau)
    xf = x.detach()
    if xf.dtype not in (torch.float32, torch.float64):
        xf = xf.float()
    if xf.dim() <= 1:
        std = xf.std(unbiased=False) if xf.numel() > 1 else xf.new_tensor(0.0)
        return (tau.scale * std).clamp_min(tau.min_tau)
    shape = (-1, *([1] * (xf.dim() - 1)))
    stds = _one_pass_stds(xf)
    if stds is None:
        return (tau.scale * per_sample_std(xf)).clamp_min_(tau.min_tau).view(shape)
    taus = [max(tau.scale * std, tau.min_tau) for std in stds]
    if len(taus) == 1:
        return taus[0]  # one sample: a number broadcasts alike, and costs no tensor op downstream
    return torch.tensor(taus, dtype=xf.dtype, device=xf.device).view(shape)


#: The one-pass variance is used while the squared mean is at most this many variances; its relative error is then
#: below 1e-5 (1e-7 for centred layers), far below what changes a gate visibly.
_CANCELLATION_LIMIT = 100.0


def per_sample_std(x: torch.Tensor) -> torch.Tensor:
    """The population standard deviation of each sample (over every dimension but the first), shape ``(N,)``."""
    stds = _one_pass_stds(x)
    if stds is None:
        return x.std(dim=tuple(range(1, x.dim())), unbiased=False)
    return torch.tensor(stds, dtype=x.dtype, device=x.device)


def _one_pass_stds(x: torch.Tensor) -> list[float] | None:
    """Each sample's spread from one sum and one sum of squares, or ``None`` where ``torch.std`` must do it.

    ``torch.std`` runs Welford's update element by element, which on CPU costs about as much as the convolution
    before the gate. Here the spread comes from two vectorised reductions that read ``x`` once each, in its own
    layout (no copy): a sum, and sums of squares per row of the second dimension, added up in float64 (one float32
    accumulator over a whole sample drifts by 3e-5); the few numbers per sample that remain are Python floats. The
    exact ``torch.std`` is left to do it where the one-pass formula would lose digits to cancellation (a mean far
    above the spread, a constant sample, overflow), for two-dimensional inputs, and off the CPU, where it is one fast
    kernel already and reading a number back would wait on the device.
    """
    count = x.numel() // x.shape[0] if x.shape[0] else 0
    if x.device.type != "cpu" or x.dim() < 3 or count < 2:
        return None
    dims = tuple(range(1, x.dim()))
    sums = x.sum(dims).tolist()
    rows = torch.linalg.vector_norm(x, dim=dims[1:])
    norms = torch.linalg.vector_norm(rows, dim=1, dtype=torch.float64).tolist()
    stds = []
    for total, norm in zip(sums, norms):
        mean = total / count
        var = norm * norm / count - mean * mean
        if not (math.isfinite(var) and var * _CANCELLATION_LIMIT >= mean * mean):
            return None
        stds.append(math.sqrt(max(var, 0.0)))
    return stds
