"""Shared machinery of the metrics: the metric template, input validation, batched model calls.

Every metric is a small dataclass: hyper-parameters as fields, data in ``__call__``, per-sample scores out (a
float tensor of shape ``(B,)`` on the inputs' device, or Quantus's list of floats in Quantus's call form). The
template here (validate, prepare, score) keeps the metrics short and makes all of them validate inputs, accept
both call forms and treat degenerate attribution maps the same way.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, fields, replace
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from semantic_pullbacks.errors import InvalidInputError, UnexpectedArgumentError

__all__ = [
    "QUANTUS_KEYWORDS",
    "Batch",
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

    The metrics call explainers as ``explain_func(model, inputs, targets)``. A method is bound to its model; when
    a metric passes another model (the randomised copy of ModelParameterRandomisation), the method is re-bound to
    it: this library's explainers through :meth:`~semantic_pullbacks.methods.Explainer.rebind` (Guided Grad-CAM
    finds its layer again by name), Captum's through a shallow copy with a new ``forward_func``. Captum's layer
    methods cannot be re-bound that way: pass a plain function building the method for the given model. Extra
    keyword arguments go to ``.attribute``. Gradients are enabled inside, because metrics run their own forward
    passes under ``torch.no_grad``.

    Example: ``explain = as_explainer(captum.attr.Saliency(model), abs=False)``.
    """
    if isinstance(method, _AttributeLike):

        def explain(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
            bound = _bound_to(method, model)
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


def _bound_to(method: Any, model: Any) -> Any:
    """``method`` as it would be constructed for ``model``."""
    if getattr(method, "forward_func", model) is model:
        return method
    rebind = getattr(method, "rebind", None)
    if callable(rebind):
        return rebind(model)
    if hasattr(method, "layer"):
        raise InvalidInputError(
            f"{type(method).__name__} is bound to a layer of another model; pass a function "
            "explain_func(model, inputs, targets) that builds the method for the given model"
        )
    bound = copy.copy(method)
    bound.forward_func = model
    return bound


@dataclass(frozen=True)
class Batch:
    """One call's validated data: what :meth:`Metric.score` works on.

    ``inputs`` detached ``(B, ...)``; ``targets`` int64 ``(B,)`` on the inputs' device; ``attributions`` shaped
    like the inputs; ``explain`` re-explains inputs for another model or other inputs; ``options`` holds the
    metric's own per-call data (Focus's ``positions``...).
    """

    model: Any
    inputs: Tensor
    targets: Tensor
    attributions: Tensor
    explain: Explainer
    options: Mapping[str, Any]


#: Quantus's ``__call__`` keywords; ``x_batch`` marks the Quantus call form
QUANTUS_KEYWORDS = (
    "model", "x_batch", "y_batch", "a_batch", "s_batch", "channel_first", "explain_func", "explain_func_kwargs",
    "model_predict_kwargs", "softmax", "device", "batch_size", "custom_batch",
)  # fmt: skip


@dataclass(eq=False)
class Metric:
    """Base class: declared metadata, hyper-parameters as fields, and one template for every call.

    A call runs :meth:`validate` (arguments, shapes, types), :meth:`prepare` (attributions from ``explain_func``
    when none are given) and :meth:`score` (the metric itself, implemented by each subclass: one score per
    sample). Two call forms:

    - ours: ``metric(model, inputs, targets, attributions=None, explain_func=None, **options)`` with tensors,
      returning a float tensor ``(B,)``; ``explain_func(model, inputs, targets)`` returns tensors;
    - Quantus's: ``metric(model=, x_batch=, y_batch=, a_batch=, explain_func=, explain_func_kwargs=, ...)`` with
      numpy arrays (channel-last inputs are recognised as Quantus does), returning a list of floats per sample,
      so the metric drops into Quantus scripts and ``quantus.evaluate``; ``explain_func(model=, inputs=,
      targets=, **explain_func_kwargs)`` works on numpy arrays, as Quantus's do.

    Unknown keywords raise :class:`~semantic_pullbacks.errors.UnexpectedArgumentError`. Instances keep no state
    between calls (no scores pile up on the instance).
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool]
    category: ClassVar[Category]
    #: the metric's own per-call data besides the common arguments (Focus: ``positions``)
    call_options: ClassVar[tuple[str, ...]] = ()
    #: whether the metric re-explains inputs, and so needs ``explain_func``
    needs_explainer: ClassVar[bool] = False

    _: KW_ONLY
    batch_size: int = 64
    seed: int = 0
    on_zero_attribution: ZeroAttributionPolicy = "nan"

    def __post_init__(self) -> None:
        _check_positive_int("batch_size", self.batch_size)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InvalidInputError(f"seed must be an int, got {type(self.seed).__name__}")
        if self.on_zero_attribution not in ("nan", "raise"):
            raise InvalidInputError(f"on_zero_attribution must be 'nan' or 'raise', got {self.on_zero_attribution!r}")

    # ----------------------------------------------------------------- the template
    def __call__(
        self,
        model: Any = None,
        inputs: Tensor | None = None,
        targets: Tensor | int | None = None,
        attributions: Tensor | None = None,
        explain_func: Any = None,
        **kwargs: Any,
    ) -> Any:
        if "x_batch" in kwargs or "y_batch" in kwargs:
            if inputs is not None or targets is not None or attributions is not None:
                raise InvalidInputError(
                    "use one call form: metric(model, inputs, targets, ...) or Quantus's metric(model=, x_batch=, "
                    "y_batch=, a_batch=, ...)"
                )
            return self._quantus_call(model, explain_func=explain_func, **kwargs)
        batch = self.prepare(self.validate(model, inputs, targets, attributions, explain_func, kwargs))
        return self.score(batch)

    def validate(
        self,
        model: Any,
        inputs: Any,
        targets: Any,
        attributions: Any,
        explain_func: Any,
        options: Mapping[str, Any],
    ) -> Batch:
        """Check every argument; attributions stay ``None`` until :meth:`prepare` computes them."""
        unknown = set(options) - set(self.call_options)
        if unknown:
            accepted = ["model", "inputs", "targets", "attributions", "explain_func", *self.call_options]
            raise UnexpectedArgumentError(
                f"{type(self).__name__}() got unexpected keyword argument(s) {', '.join(sorted(unknown))}; it "
                f"takes {', '.join(accepted)} (or Quantus's {', '.join(QUANTUS_KEYWORDS)})"
            )
        if not isinstance(model, nn.Module) and not callable(model):
            raise InvalidInputError(f"model must be a torch.nn.Module or callable, got {type(model)!r}")
        x = check_inputs(inputs)
        t = check_targets(targets, x)
        explain = as_explainer(explain_func) if explain_func is not None else _no_explainer
        if self.needs_explainer and explain_func is None:
            raise InvalidInputError(f"{type(self).__name__} re-explains inputs: pass explain_func")
        if attributions is None and explain_func is None:
            raise InvalidInputError("pass attributions or explain_func (or both)")
        a = None if attributions is None else check_attributions(attributions, x)
        return Batch(model, x, t, a, explain, dict(options))  # type: ignore[arg-type]

    def prepare(self, batch: Batch) -> Batch:
        """Compute the attributions from the explainer when only the explainer was given."""
        if batch.attributions is not None:
            return batch
        a = self._explain(batch.explain, batch.model, batch.inputs, batch.targets)
        return replace(batch, attributions=a)

    def score(self, batch: Batch) -> Tensor:
        """One score per sample, a float tensor ``(B,)`` on the inputs' device (NaN where undefined)."""
        raise NotImplementedError

    # ----------------------------------------------------------------- Quantus's call form
    def _quantus_call(self, model: Any, **kwargs: Any) -> Any:
        call = _QuantusCall.read(type(self).__name__, model, kwargs, self.call_options)
        metric = self._for_call(softmax=call.softmax, batch_size=call.batch_size)
        options = dict(call.options)
        if "positions" in self.call_options and "positions" not in options and call.custom_batch is not None:
            options["positions"] = call.custom_batch  # Quantus's Focus takes the mosaic positions this way
        x, y, a = call.tensors(model)
        batch = metric.prepare(metric.validate(model, x, y, a, call.explainer(), options))
        return metric._quantus_result(batch)

    def _for_call(self, *, softmax: bool | None, batch_size: int | None) -> Metric:
        """This metric with Quantus's per-call ``softmax`` and ``batch_size``, where it has such settings."""
        changes: dict[str, Any] = {}
        if softmax is not None and "softmax" in {f.name for f in fields(self)}:
            changes["softmax"] = bool(softmax)
        if batch_size is not None:
            changes["batch_size"] = batch_size
        return replace(self, **changes) if changes else self

    def _quantus_result(self, batch: Batch) -> Any:
        """What Quantus returns for this metric: a list of floats per sample."""
        return [float(v) for v in self.score(batch).detach().cpu().tolist()]

    # ----------------------------------------------------------------- helpers for subclasses
    def _generator(self, device: torch.device) -> torch.Generator:
        """A fresh generator on ``device`` seeded with ``self.seed``: no global RNG state is touched."""
        return torch.Generator(device=device).manual_seed(self.seed)

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


@dataclass(frozen=True)
class _QuantusCall:
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
    def read(cls, owner: str, model: Any, kwargs: Mapping[str, Any], own: Sequence[str]) -> _QuantusCall:
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
        if isinstance(self.explain_func, _AttributeLike):  # a Captum-like method object: kwargs go to .attribute
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
