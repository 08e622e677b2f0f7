"""The common shape of every explainer: Captum's ``attribute`` signature, input checks, caller state kept."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..engine import check_model_supported
from ..errors import InvalidInputError
from .checks import check_inputs, model_state_kept, warn_if_training
from .layer_targets import LayerCut, LayerTarget
from .model_settings import AcceptsLoadedModels
from .targets import OutputSelector, TargetType, objective, select_output

__all__ = ["Explainer", "forward_args"]


def forward_args(additional_forward_args: Any) -> tuple[Any, ...]:
    if additional_forward_args is None:
        return ()
    if isinstance(additional_forward_args, tuple):
        return additional_forward_args
    return (additional_forward_args,)


class Explainer(metaclass=AcceptsLoadedModels):
    """Base class: ``Method(model).attribute(inputs, target=..., additional_forward_args=...)``.

    Subclasses implement :meth:`_attribute` on a validated, detached input. The caller's tensors, their
    ``.grad`` and ``requires_grad``, and the model's parameters and train/eval mode are left as found.
    ``model`` may be a :class:`~semantic_pullbacks.models.LoadedModel` (any
    :class:`~.model_settings.ModelWithSettings`): the settings it recommends for the method apply.
    """

    #: Whether the method's own pass is a soft pullback (``True``) or an ordinary gradient (``False``).
    uses_pullback: bool = False
    #: Whether the attribution depends on random draws (noise, baselines): such methods take a ``seed``.
    stochastic: bool = False
    #: Captum's capability flag: ``True`` for methods whose maps already include a factor of the input.
    multiplies_by_inputs: bool = False

    def __init__(self, model: nn.Module | Callable[..., Any], *, output_selector: OutputSelector = None) -> None:
        check_model_supported(model)
        self.model = model
        self.output_selector = output_selector

    # --- the model explained -----------------------------------------------------------------------------------
    @property
    def forward_func(self) -> nn.Module | Callable[..., Any]:
        """Captum's name for the model; assigning it re-binds the explainer (as metrics that randomise a copy of
        the model do)."""
        return self.model

    @forward_func.setter
    def forward_func(self, model: nn.Module | Callable[..., Any]) -> None:
        self._bind(model)

    def rebind(self, model: nn.Module | Callable[..., Any]) -> Explainer:
        """A copy with the same settings that explains ``model`` (e.g. a copy of the model with other weights)."""
        bound = copy.copy(self)
        bound._bind(model)
        return bound

    def _bind(self, model: Any) -> None:
        """Point this explainer, and the explainers it runs internally, at ``model``."""
        check_model_supported(model)
        old, self.model = self.model, model
        for name, value in list(vars(self).items()):
            if isinstance(value, Explainer) and value.model is old:
                setattr(self, name, value.rebind(model))

    # --- public API --------------------------------------------------------------------------------------------
    def attribute(
        self,
        inputs: torch.Tensor,
        target: TargetType = None,
        additional_forward_args: Any = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Attribution of ``target`` for ``inputs``, shaped like ``inputs``."""
        x = self._check_inputs(inputs)
        explainer, target = self._for_target(target)
        with self._caller_state():
            out = explainer._attribute(x, target, forward_args(additional_forward_args), **kwargs)
        return out.detach()

    def has_convergence_delta(self) -> bool:
        """Captum's capability query (wrappers such as ``NoiseTunnel`` ask it)."""
        return False

    def attribute_targets(
        self,
        inputs: torch.Tensor,
        targets: Sequence[TargetType] | torch.Tensor,
        additional_forward_args: Any = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Several targets for the same inputs: ``(T, *inputs.shape)``.

        ``targets`` is a list of T targets (each any :data:`TargetType`), or an integer tensor ``(B, T)`` of
        per-sample classes, e.g. each sample's top-5. Methods that can share work between targets (one forward
        pass for all) override :meth:`_attribute_targets`.
        """
        x = self._check_inputs(inputs)
        per_target = _split_targets(targets, x.shape[0])
        if any(isinstance(t, LayerTarget) for t in per_target):  # each its own cut model: one call per target
            return torch.stack([self.attribute(x, t, additional_forward_args, **kwargs) for t in per_target])
        with self._caller_state():
            out = self._attribute_targets(x, per_target, forward_args(additional_forward_args), **kwargs)
        return out.detach()

    # --- for subclasses ----------------------------------------------------------------------------------------
    def _attribute(self, x: torch.Tensor, target: TargetType, args: tuple[Any, ...], **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError

    def _attribute_targets(
        self, x: torch.Tensor, targets: list[TargetType], args: tuple[Any, ...], **kwargs: Any
    ) -> torch.Tensor:
        return torch.stack([self._attribute(x, t, args, **kwargs) for t in targets])

    def _output(self, x: torch.Tensor, args: tuple[Any, ...]) -> torch.Tensor:
        return select_output(self.model(x, *args), self.output_selector)

    def _objective(self, x: torch.Tensor, target: TargetType, args: tuple[Any, ...]) -> torch.Tensor:
        return objective(self._output(x, args), target, x.shape[0])

    def _for_target(self, target: TargetType) -> tuple[Explainer, TargetType]:
        """The explainer to run and the target it explains: for a layer target, a copy bound to the model cut at
        that layer (its output selection is the target's own), explaining the target's score of the layer."""
        if not isinstance(target, LayerTarget):
            return self, target
        if not isinstance(self.model, nn.Module):
            raise InvalidInputError("layer targets read a module's output: the model must be an nn.Module")
        bound = self.rebind(LayerCut(self.model, target))
        for explainer in (bound, *(v for v in vars(bound).values() if isinstance(v, Explainer))):
            explainer.output_selector = None
        return bound, target

    # --- checks ------------------------------------------------------------------------------------------------
    def _check_inputs(self, inputs: Any) -> torch.Tensor:
        x = check_inputs(inputs, self.model)
        warn_if_training(self.model, stacklevel=3)
        return x

    @contextmanager
    def _caller_state(self) -> Iterator[None]:
        """Parameters keep their ``.grad`` (explanations differentiate w.r.t. inputs only) and modules in training
        mode their buffers (an explanation never changes the model)."""
        with model_state_kept(self.model):
            yield


# Captum's wrappers (NoiseTunnel) call ``method.attribute.__wrapped__(method, ...)`` to skip their usage logging.
Explainer.attribute.__wrapped__ = Explainer.attribute  # type: ignore[attr-defined]


def _split_targets(targets: Sequence[TargetType] | torch.Tensor, batch: int) -> list[TargetType]:
    if isinstance(targets, torch.Tensor):
        if targets.dim() != 2 or targets.shape[0] != batch or targets.is_floating_point():
            raise InvalidInputError(
                f"a tensor of several targets must be integer with shape (batch={batch}, T), got "
                f"{targets.dtype} {tuple(targets.shape)}"
            )
        return [targets[:, t] for t in range(targets.shape[1])]
    if isinstance(targets, (str, bytes)) or not isinstance(targets, Sequence) or len(targets) == 0:
        raise InvalidInputError("targets must be a non-empty list of targets or a (batch, T) integer tensor")
    return list(targets)
