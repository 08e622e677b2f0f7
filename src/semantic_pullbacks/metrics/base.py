"""Shared machinery of the metrics: the metric protocol, input validation, batched model calls.

Every metric is a small class: hyper-parameters in ``__init__``, data in ``__call__``, per-sample scores out
(a float tensor of shape ``(B,)`` on the inputs' device). The helpers here keep the metrics short and make all
of them validate inputs and treat degenerate attribution maps the same way.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from semantic_pullbacks.errors import InvalidInputError

__all__ = [
    "Category",
    "Explainer",
    "Metric",
    "NoiseSampler",
    "ZeroAttributionPolicy",
    "ZeroAttributionWarning",
    "as_explainer",
    "uniform_sampler",
]

Category = Literal["faithfulness", "robustness", "randomisation", "localisation", "complexity"]
ZeroAttributionPolicy = Literal["nan", "raise"]

Explainer = Callable[[nn.Module, Tensor, Tensor], Tensor]
"""``explain_func(model, inputs, targets) -> attributions`` shaped like ``inputs`` (or
channel-broadcastable).
"""

NoiseSampler = Callable[[tuple[int, ...], torch.Generator, torch.device, torch.dtype], Tensor]
"""``sampler(shape, generator, device, dtype)`` returns noise of ``shape``.

Metrics that draw noise call it with a documented shape, so a run can be reproduced exactly from noise drawn
elsewhere (for example the noise another library drew)."""


class ZeroAttributionWarning(RuntimeWarning):
    """Some samples have an all-zero attribution map; their scores are NaN."""


def uniform_sampler(low: float, high: float) -> NoiseSampler:
    """A sampler of i.i.d. uniform noise in ``[low, high)``, drawn from the given generator."""

    def sample(shape: tuple[int, ...], generator: torch.Generator, device: torch.device, dtype: torch.dtype) -> Tensor:
        u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
        return low + (high - low) * u

    return sample


@runtime_checkable
class _AttributeLike(Protocol):
    def attribute(self, inputs: Tensor, *args: Any, **kwargs: Any) -> Any: ...


def as_explainer(method: Any, **attribute_kwargs: Any) -> Explainer:
    """Adapt a Captum-like method (anything with ``.attribute(inputs, target=...)``) or a callable.

    The metrics call explainers as ``explain_func(model, inputs, targets)``. A Captum method is bound to its
    model; when a metric passes another model (the randomised copy of ModelParameterRandomisation), a shallow
    copy of the method is re-bound to it through Captum's ``forward_func``. Layer methods (bound to a layer of
    the original model) cannot be re-bound: pass a plain function building the method for the given model.
    Extra keyword arguments go to ``.attribute``. Gradients are enabled inside, because metrics run their own
    forward passes under ``torch.no_grad``.

    Example: ``explain = as_explainer(captum.attr.Saliency(model), abs=False)``.
    """
    if isinstance(method, _AttributeLike):

        def explain(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
            bound = method
            forward = getattr(method, "forward_func", model)
            if forward is not model:
                if hasattr(method, "layer"):
                    raise InvalidInputError(
                        f"{type(method).__name__} is bound to a layer of another model; pass a function "
                        "explain_func(model, inputs, targets) that builds the method for the given model"
                    )
                bound = copy.copy(method)
                bound.forward_func = model
            with torch.enable_grad():
                out = bound.attribute(inputs.detach().clone().requires_grad_(True), target=targets, **attribute_kwargs)
            if isinstance(out, tuple):
                out = out[0]
            return out.detach()

        return explain
    if callable(method):

        def call(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
            with torch.enable_grad():
                out = method(model, inputs, targets, **attribute_kwargs)
            return torch.as_tensor(out).detach()

        return call
    raise InvalidInputError(
        f"explain_func must be callable or have an .attribute(inputs, target=...) method, got {type(method)!r}"
    )


class Metric:
    """Base class: declared metadata plus the validation and batching helpers every metric uses.

    Subclasses set ``name``, ``higher_is_better`` and ``category`` and implement ``__call__`` returning one
    score
    per sample. Instances keep no state between calls (no scores pile up on the instance).
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool]
    category: ClassVar[Category]

    def __init__(
        self, *, batch_size: int = 64, seed: int = 0, on_zero_attribution: ZeroAttributionPolicy = "nan"
    ) -> None:
        _check_positive_int("batch_size", batch_size)
        if not isinstance(seed, int):
            raise InvalidInputError(f"seed must be an int, got {type(seed).__name__}")
        if on_zero_attribution not in ("nan", "raise"):
            raise InvalidInputError(f"on_zero_attribution must be 'nan' or 'raise', got {on_zero_attribution!r}")
        self.batch_size = batch_size
        self.seed = seed
        self.on_zero_attribution = on_zero_attribution

    def __call__(
        self,
        model: nn.Module,
        inputs: Tensor,
        targets: Tensor | int,
        attributions: Tensor | None = None,
        explain_func: Any = None,
        **kwargs: Any,
    ) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"

    # ----------------------------------------------------------------- helpers for subclasses
    def _generator(self, device: torch.device) -> torch.Generator:
        """A fresh generator on ``device`` seeded with ``self.seed``: no global RNG state is touched."""
        return torch.Generator(device=device).manual_seed(self.seed)

    def _prepare(
        self,
        model: nn.Module,
        inputs: Tensor,
        targets: Tensor | int,
        attributions: Tensor | None,
        explain_func: Any,
        *,
        need_explainer: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor, Explainer]:
        """Validate arguments; compute attributions when only an explainer is given.

        Returns ``(inputs, targets, attributions, explainer)``: inputs detached, targets an int64 tensor of
        shape
        ``(B,)`` on the inputs' device, attributions broadcast to the inputs' shape.
        """
        if not isinstance(model, nn.Module) and not callable(model):
            raise InvalidInputError(f"model must be a torch.nn.Module or callable, got {type(model)!r}")
        inputs = check_inputs(inputs)
        targets = check_targets(targets, inputs)
        explainer = as_explainer(explain_func) if explain_func is not None else None
        if need_explainer and explainer is None:
            raise InvalidInputError(f"{type(self).__name__} re-explains inputs: pass explain_func")
        if attributions is None:
            if explainer is None:
                raise InvalidInputError("pass attributions or explain_func (or both)")
            attributions = self._explain(explainer, model, inputs, targets)
        attributions = check_attributions(attributions, inputs)
        return inputs, targets, attributions, explainer or _no_explainer

    def _explain(self, explainer: Explainer, model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
        """Run ``explainer`` in chunks of ``batch_size`` and check what it returns."""
        parts = []
        for sl in _chunks(inputs.shape[0], self.batch_size):
            out = explainer(model, inputs[sl], targets[sl])
            if not isinstance(out, Tensor):
                out = torch.as_tensor(out)
            parts.append(out.to(device=inputs.device, dtype=inputs.dtype))
        return check_attributions(torch.cat(parts), inputs, name="explain_func output")

    def _zero_mask(self, attributions: Tensor) -> Tensor:
        """Samples whose map is all zeros: raise, or warn and let the caller return NaN for them."""
        zero = attributions.reshape(attributions.shape[0], -1).eq(0).all(dim=1)
        if bool(zero.any()):
            idx = zero.nonzero().flatten().tolist()
            msg = f"{type(self).__name__}: attributions of samples {idx} are all zero, the metric is undefined for them"
            if self.on_zero_attribution == "raise":
                raise InvalidInputError(msg)
            warnings.warn(msg + "; their scores are NaN", ZeroAttributionWarning, stacklevel=3)
        return zero

    def _scores(self, model: nn.Module, x: Tensor, targets: Tensor, *, softmax: bool = False) -> Tensor:
        """``f_c(x)`` for a (possibly large) stack of inputs, in chunks of ``batch_size``, without
        gradients.
        """
        return target_scores(model, x, targets, batch_size=self.batch_size, softmax=softmax)


def _no_explainer(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
    raise InvalidInputError("this metric needs explain_func to re-explain inputs")


# --------------------------------------------------------------------------- validation
def check_inputs(inputs: Any) -> Tensor:
    """Inputs must be a floating tensor ``(B, ...)`` with at least one sample and only finite values."""
    if not isinstance(inputs, Tensor):
        raise InvalidInputError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if inputs.ndim < 2 or inputs.shape[0] == 0:
        raise InvalidInputError(f"inputs must have shape (B, ...) with B >= 1, got {tuple(inputs.shape)}")
    if not inputs.is_floating_point():
        raise InvalidInputError(f"inputs must be floating point, got {inputs.dtype}")
    if not bool(torch.isfinite(inputs).all()):
        raise InvalidInputError("inputs contain NaN or Inf")
    return inputs.detach()


def check_targets(targets: Any, inputs: Tensor, name: str = "targets") -> Tensor:
    """Targets: an int or integer tensor/sequence of shape ``(B,)``; negative values are rejected here.

    The upper bound (number of classes) is checked against the model's output in :func:`target_scores`.
    """
    if isinstance(targets, bool):
        raise InvalidInputError(f"{name} must be integers, got bool")
    if isinstance(targets, int):
        targets = torch.full((inputs.shape[0],), targets, dtype=torch.long)
    t = targets if isinstance(targets, Tensor) else torch.as_tensor(targets)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise InvalidInputError(f"{name} must be an integer tensor, got {t.dtype}")
    t = t.reshape(-1) if t.ndim == 0 else t
    if t.shape != (inputs.shape[0],):
        raise InvalidInputError(f"{name} must have shape ({inputs.shape[0]},), got {tuple(t.shape)}")
    if bool((t < 0).any()):
        raise InvalidInputError(f"{name} must be non-negative class indices, got min {int(t.min())}")
    return t.to(device=inputs.device, dtype=torch.long)


def check_attributions(attributions: Any, inputs: Tensor, name: str = "attributions") -> Tensor:
    """Attributions must be finite and shaped like inputs, or like inputs with a single channel
    (broadcast).
    """
    if not isinstance(attributions, Tensor):
        try:
            attributions = torch.as_tensor(attributions)
        except (TypeError, ValueError, RuntimeError) as err:
            raise InvalidInputError(f"{name} must be a tensor, got {type(attributions).__name__}") from err
    a = attributions.detach().to(device=inputs.device, dtype=inputs.dtype)
    shape, ishape = tuple(a.shape), tuple(inputs.shape)
    ok = shape == ishape or (
        len(shape) == len(ishape)
        and len(ishape) >= 3
        and shape[0] == ishape[0]
        and shape[1] == 1
        and shape[2:] == ishape[2:]
    )
    if not ok:
        raise InvalidInputError(f"{name} must have the inputs' shape {ishape} (or a single channel), got {shape}")
    if not bool(torch.isfinite(a).all()):
        raise InvalidInputError(f"{name} contain NaN or Inf")
    return a.expand(ishape)


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a positive int, got {value!r}")


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


# --------------------------------------------------------------------------- model calls
@torch.no_grad()
def model_outputs(model: nn.Module, x: Tensor, *, batch_size: int) -> Tensor:
    """Model outputs for a stack of inputs, in chunks, without gradients (the model is called as is)."""
    outs = [model(x[sl]) for sl in _chunks(x.shape[0], batch_size)]
    out = torch.cat(outs)
    if out.ndim != 2:
        raise InvalidInputError(f"model must return logits of shape (N, classes), got {tuple(out.shape)}")
    return out


def target_scores(model: nn.Module, x: Tensor, targets: Tensor, *, batch_size: int, softmax: bool = False) -> Tensor:
    """``f_c(x)`` per row of ``x``: the target logit (or probability with ``softmax=True``)."""
    out = model_outputs(model, x, batch_size=batch_size)
    if bool((targets >= out.shape[1]).any()):
        raise InvalidInputError(f"targets out of range: model has {out.shape[1]} classes, got max {int(targets.max())}")
    if softmax:
        out = out.softmax(dim=1)
    return out.gather(1, targets.reshape(-1, 1)).squeeze(1)


class ScoreStream:
    """Collects perturbed inputs as they are made and scores them in full chunks of ``batch_size``.

    Perturbations are produced in small groups (one patch size, one draw); they are copied into one reusable
    chunk buffer, so model calls run on full batches without holding every perturbed input in memory and
    without re-concatenating tensors.
    """

    def __init__(self, model: nn.Module, *, batch_size: int, softmax: bool) -> None:
        self.model, self.batch_size, self.softmax = model, batch_size, softmax
        self._buf: Tensor | None = None
        self._tbuf: Tensor | None = None
        self._fill = 0
        self._done: list[Tensor] = []

    def push(self, x: Tensor, targets: Tensor) -> None:
        """Queue ``x`` ``(N, ...)`` with its targets ``(N,)``; runs the model whenever a chunk is full."""
        if self._buf is None or self._tbuf is None:
            self._buf = x.new_empty((self.batch_size, *x.shape[1:]))
            self._tbuf = targets.new_empty((self.batch_size,))
        start = 0
        while start < x.shape[0]:
            k = min(self.batch_size - self._fill, x.shape[0] - start)
            self._buf[self._fill : self._fill + k].copy_(x[start : start + k])
            self._tbuf[self._fill : self._fill + k].copy_(targets[start : start + k])
            self._fill += k
            start += k
            if self._fill == self.batch_size:
                self._run()

    def result(self) -> Tensor:
        """All scores, in push order."""
        if self._fill:
            self._run()
        return torch.cat(self._done) if self._done else torch.empty(0)

    def _run(self) -> None:
        if self._buf is None or self._tbuf is None:
            return
        n = self._fill
        self._done.append(target_scores(self.model, self._buf[:n], self._tbuf[:n], batch_size=n, softmax=self.softmax))
        self._fill = 0


# --------------------------------------------------------------------------- statistics
def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Pearson correlation of ``(B, N)`` tensors; NaN where a row is constant."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    num = (a * b).sum(dim=1)
    den = a.square().sum(dim=1).sqrt() * b.square().sum(dim=1).sqrt()
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.full_like(num, float("nan")))


def rank(a: Tensor) -> Tensor:
    """Row-wise ranks (1-based) with ties given their average rank, as Spearman's rho requires."""
    s = a.sort(dim=1).values.contiguous()
    lo = torch.searchsorted(s, a.contiguous(), right=False)
    hi = torch.searchsorted(s, a.contiguous(), right=True)
    return (lo + hi + 1).to(a.dtype if a.is_floating_point() else torch.float64) / 2


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Spearman rank correlation of ``(B, N)`` tensors (Pearson of average ranks)."""
    return pearson(rank(a), rank(b))


def normalise_by_max(a: Tensor) -> Tensor:
    """Divide each sample's map by its largest absolute value (all-zero maps stay zero)."""
    m = a.reshape(a.shape[0], -1).abs().amax(dim=1).reshape(-1, *([1] * (a.ndim - 1)))
    return torch.where(m > 0, a / m.clamp_min(torch.finfo(a.dtype).tiny), a)


def with_nan(scores: Tensor, mask: Tensor) -> Tensor:
    """Scores with NaN where ``mask`` is true."""
    return torch.where(mask, torch.full_like(scores, float("nan")), scores)
