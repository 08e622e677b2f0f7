"""Captum's ``LRP`` as a peer, ``Captum-LRP``, on the models its rules cover.

Captum attaches a rule to every leaf module (epsilon for convolutions, linear layers, batch norms and pooling;
relevance passed through ReLU, Tanh and dropout) and refuses any other leaf. It runs here on the restructured
private copy of :mod:`.structure`: reused modules split per use, skip connections written ``a + b`` routed
through Captum's ``Addition_Module`` (epsilon rule), in-place ReLUs made out of place (Captum's backward hooks
cannot see through them). A model with a leaf Captum has no rule for (EfficientNet-Lite's ``ZeroPad2d`` and
``ReLU6``, LayerNorm and attention in ViTs) is refused with :class:`~semantic_pullbacks.errors.UnsupportedModelError`
naming those modules, unless the caller set a Captum rule on them (``module.rule = EpsilonRule()``), which the copy
keeps. The map is relevance (it carries the input), signed, in the input's shape.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import InvalidInputError, UnsupportedModelError
from ..targets import OutputSelector, TargetType, class_indices, objective, select_output
from .base import PeerExplainer, plain_classes
from .structure import CopyCache, PerUse, Restructured, check_same_function, restructure

__all__ = ["CaptumLRP"]


class _Score(nn.Module):
    """The restructured copy with the output selection and a direction or callable target folded in: ``(B, 1)``."""

    def __init__(self, model: nn.Module, selector: OutputSelector, target: Any) -> None:
        super().__init__()
        self.inner = model
        self.selector = selector
        self.target = target

    def forward(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        return objective(select_output(self.inner(x, *args), self.selector), self.target, x.shape[0])[:, None]


class CaptumLRP(PeerExplainer, name="Captum-LRP"):
    """Captum's ``LRP`` with its default rules, on a restructured private copy; refused where the rules do not
    cover the model."""

    requires = ("captum",)
    multiplies_by_inputs = True

    def __init__(self, model: nn.Module, *, output_selector: OutputSelector = None) -> None:
        super().__init__(model, output_selector=output_selector)
        self._copies = CopyCache()

    def _bind(self, model: Any) -> None:
        super()._bind(model)
        self._copies = CopyCache()

    def canonical(self, x: torch.Tensor, args: tuple[Any, ...] = ()) -> Restructured:
        """The restructured copy Captum runs on (checked against Captum's rules)."""
        with self._copies.lock:
            return self._copies.get(self.model, lambda: self._restructure(x, args))

    def _restructure(self, x: torch.Tensor, args: tuple[Any, ...]) -> Restructured:
        from captum.attr._utils.custom_modules import Addition_Module

        def run(module: nn.Module) -> Any:
            with torch.enable_grad():
                return module(x.detach().requires_grad_(True), *args)

        copy = restructure(self.model, run, make_sum=Addition_Module, before_split=_out_of_place)
        _check_rules(copy, type(self.model).__name__)
        copy.outputs = check_same_function(copy, self.model, x, args, type(self).__name__)
        return copy

    def _attribute(self, x: torch.Tensor, target: TargetType, args: tuple[Any, ...], **kwargs: Any) -> torch.Tensor:
        self._no_options(kwargs)
        from captum.attr import LRP

        with self._copies.lock:
            model = self._copies.get(self.model, lambda: self._restructure(x, args))
            classes = None if self.output_selector is not None else plain_classes(target, x.shape[0])
            if classes is not None and None in classes:  # each sample's top-1
                with torch.no_grad():
                    classes = class_indices(model(x, *args), None, x.shape[0]).tolist()
            if classes is None:  # directions, callables, element tuples, tuple or dict outputs
                head, captum_target = _Score(model, self.output_selector, target), 0
            elif max(classes) >= model.outputs:
                raise InvalidInputError(f"target {target!r} is out of range for an output of {model.outputs} classes")
            else:
                head, captum_target = model, classes
            with torch.enable_grad():
                probe = x.detach().requires_grad_(True)
                return LRP(head).attribute(probe, target=captum_target, additional_forward_args=args or None)


def _out_of_place(model: nn.Module, run: Any) -> None:
    for module in model.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False


def _check_rules(model: nn.Module, model_name: str) -> None:
    """Captum's own check, made first and with names: every leaf needs a rule."""
    from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES, SUPPORTED_NON_LINEAR_LAYERS

    covered = (*SUPPORTED_LAYERS_WITH_RULES, *SUPPORTED_NON_LINEAR_LAYERS)
    missing: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        if list(module.children()) or hasattr(module, "rule") or type(module) in covered:
            continue
        missing.setdefault(type(module).__name__, []).append(_caller_name(name))
    if missing:
        listed = "; ".join(f"{kind} ({_some(names)})" for kind, names in missing.items())
        raise UnsupportedModelError(
            f"Captum's LRP has no rule for these modules of {model_name}: {listed}. Set a Captum rule on them "
            "(module.rule = captum.attr._utils.lrp_rules.EpsilonRule(), where that rule is right for the layer), "
            "or use Zennit-EpsilonPlusFlat, which this library restructures for such models"
        )


def _some(names: list[str]) -> str:
    unique = list(dict.fromkeys(names))
    return ", ".join(unique[:3]) + (", ..." if len(unique) > 3 else "")


def _caller_name(name: str) -> str:
    """A module's name in the caller's model, from its name in the restructured copy."""
    parts = [p for p in name.split(".") if p != "inner"]
    out: list[str] = []
    skip = False
    for part in parts:
        if skip:
            skip = False
            continue
        if part == "uses":
            skip = True
            continue
        out.append(part)
    return ".".join(out) or PerUse.__name__
