"""The metric template: declared metadata, hyper-parameters as fields, and one call path for every metric.

Every metric is a small dataclass: hyper-parameters as fields, data in ``__call__``, per-sample scores out (a
float tensor of shape ``(B,)`` on the inputs' device, or Quantus's list of floats in Quantus's call form). The
template here (validate, prepare, score) keeps the metrics short and makes all of them validate inputs, accept
both call forms and treat degenerate attribution maps the same way.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, fields, replace
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from semantic_pullbacks.errors import InvalidInputError, UnexpectedArgumentError
from semantic_pullbacks.metrics.batched import chunks, target_scores
from semantic_pullbacks.metrics.explainers import Explainer, as_explainer
from semantic_pullbacks.metrics.quantus_call import QUANTUS_KEYWORDS, QuantusCall
from semantic_pullbacks.metrics.validation import (
    check_attributions,
    check_inputs,
    check_positive_int,
    check_targets,
)

__all__ = ["Batch", "Category", "Metric", "ZeroAttributionPolicy", "ZeroAttributionWarning"]

Category = Literal["faithfulness", "robustness", "randomisation", "localisation", "complexity"]
ZeroAttributionPolicy = Literal["nan", "raise"]


class ZeroAttributionWarning(RuntimeWarning):
    """Some samples have an all-zero attribution map; their scores are NaN."""


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
        check_positive_int("batch_size", self.batch_size)
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
        call = QuantusCall.read(type(self).__name__, model, kwargs, self.call_options)
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
        for sl in chunks(inputs.shape[0], self.batch_size):
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
