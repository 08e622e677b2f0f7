"""Zennit's composites as peers: ``Zennit-EpsilonPlusFlat`` (LRP) and ``Zennit-BetaSmooth`` (a smoothed gradient).

Zennit attaches its rules to modules, so it runs on a restructured private copy (:mod:`.structure`): reused
modules split per use, functional skip connections routed through Zennit's ``Sum`` module (its ``Norm`` rule
splits relevance between the branches in proportion to their values), and every batch norm merged into the
convolution or linear layer whose output it normalises, found by following the tensors. Zennit's own
``SequentialMergeBatchNorm`` pairs modules by registration order instead, and finds none of the 49 pairs of
EfficientNet-Lite0, whose padded convolutions are containers. The copy is checked to compute the model's output,
kept while the caller's weights are unchanged, and the caller's model never sees a hook.

Activations. ``EpsilonPlusFlat`` passes relevance through every activation module Zennit knows (ReLU, ReLU6,
GELU, SiLU, ... : its ``Pass`` rule); an activation called as a function (``F.relu``) keeps its gradient. Zennit's
``BetaSmooth`` replaces only ``nn.ReLU``'s gradient by ``sigmoid(beta * x)``, which would leave a ReLU6 network's
gradient unchanged; here ``nn.ReLU6`` and ``nn.Hardtanh`` get the same smoothing on both edges,
``sigmoid(beta * (x - lo)) - sigmoid(beta * (x - hi))``, the derivative of a difference of two softplus ramps (as
the library's own clipped gate is ``Phi((x - lo) / tau) - Phi((x - hi) / tau)``). Every other activation keeps its
gradient, as in Zennit.

EpsilonPlusFlat's map is relevance (it already carries the input, like input x gradient); BetaSmooth's is a
gradient. Both are signed, in the input's shape.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ...errors import UnsupportedModelError
from ..targets import OutputSelector, TargetType, objective, select_output
from .base import PeerExplainer
from .structure import CopyCache, Restructured, check_same_function, norm_pairs, restructure

__all__ = ["ZennitBetaSmooth", "ZennitEpsilonPlusFlat"]


class _ZennitComposite(PeerExplainer):
    """Runs a Zennit composite on the restructured copy; the map is the modified gradient of the target score
    with respect to the input, as Zennit's ``Gradient`` attributor computes it with a one-hot output gradient."""

    requires = ("zennit",)
    #: whether the copy's skip connections become Zennit ``Sum`` modules and its batch norms are merged
    relevance: bool = True

    def __init__(self, model: nn.Module, *, output_selector: OutputSelector = None) -> None:
        super().__init__(model, output_selector=output_selector)
        self._copies = CopyCache()

    def _bind(self, model: Any) -> None:
        super()._bind(model)
        self._copies = CopyCache()

    def composite(self) -> Any:
        """A fresh Zennit composite (one composite registers on one module at a time)."""
        raise NotImplementedError

    def canonical(self, x: torch.Tensor, args: tuple[Any, ...] = ()) -> Restructured:
        """The restructured copy Zennit runs on, as the next call would use it (for inspection and tests)."""
        with self._copies.lock:
            return self._copies.get(self.model, lambda: self._restructure(x, args))

    def _restructure(self, x: torch.Tensor, args: tuple[Any, ...]) -> Restructured:
        from zennit.layer import Sum

        if self.relevance and any(isinstance(m, nn.MultiheadAttention) for m in self.model.modules()):
            raise _no_attention_rule(self)

        def run(module: nn.Module) -> Any:
            with torch.enable_grad():
                return module(x.detach().requires_grad_(True), *args)

        copy = restructure(
            self.model,
            run,
            make_sum=Sum if self.relevance else None,
            call=lambda module, a, b: module(torch.stack([a, b], dim=-1)),
            before_split=_merge_batch_norms if self.relevance else None,
        )
        if self.relevance and copy.attention_ops:
            raise _no_attention_rule(self)
        check_same_function(copy, self.model, x, args, type(self).__name__)
        return copy

    def _attribute(self, x: torch.Tensor, target: TargetType, args: tuple[Any, ...], **kwargs: Any) -> torch.Tensor:
        self._no_options(kwargs)
        with self._copies.lock:
            model = self._copies.get(self.model, lambda: self._restructure(x, args))
            with self.composite().context(model) as hooked, torch.enable_grad():
                probe = x.detach().requires_grad_(True)
                output = select_output(hooked(probe, *args), self.output_selector)
                score = objective(output, target, x.shape[0])
                (grad,) = torch.autograd.grad(score.sum(), probe)
        return grad


def _no_attention_rule(method: PeerExplainer) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"{type(method).__name__}: Zennit has no LRP rule for attention or softmax (its composites would pass "
        "relevance through them as plain gradients, or fail on nn.MultiheadAttention); LXT's AttnLRP is the LRP "
        "method for transformers"
    )


def _merge_batch_norms(model: nn.Module, run: Callable[[], Any]) -> None:
    """Zennit's merge, then the merged batch norms removed: Zennit leaves them computing ``x / sqrt(1 + eps)``,
    which at EfficientNet's eps = 1e-3 shrinks every layer by 0.05 % (2e-3 of the logits over Lite0's 49)."""
    from zennit.canonizers import NamedMergeBatchNorm

    pairs = norm_pairs(model, run)
    NamedMergeBatchNorm([((linear,), norm) for linear, norm in pairs]).apply(model)
    for _, norm in pairs:
        parent, _, name = norm.rpartition(".")
        model.get_submodule(parent)._modules[name] = nn.Identity()


class ZennitEpsilonPlusFlat(_ZennitComposite, name="Zennit-EpsilonPlusFlat"):
    """Zennit's ``EpsilonPlusFlat`` LRP composite: flat rule on the first layer, z+ on convolutions, epsilon on
    dense layers, on the restructured copy (batch norms merged, skip connections as ``Sum``)."""

    multiplies_by_inputs = True

    def __init__(
        self,
        model: nn.Module,
        *,
        epsilon: float = 1e-6,
        stabilizer: float = 1e-6,
        output_selector: OutputSelector = None,
    ) -> None:
        super().__init__(model, output_selector=output_selector)
        self.epsilon = epsilon
        self.stabilizer = stabilizer

    def composite(self) -> Any:
        from zennit.composites import EpsilonPlusFlat

        return EpsilonPlusFlat(epsilon=self.epsilon, stabilizer=self.stabilizer)


class ZennitBetaSmooth(_ZennitComposite, name="Zennit-BetaSmooth"):
    """Zennit's ``BetaSmooth``: each ReLU's gradient becomes ``sigmoid(beta * x)`` (Zennit's default beta = 10);
    here ReLU6/Hardtanh get the two-edged version (see the module docstring).

    Its relation to SP's soft ReLU ``Phi(x / tau)``: the two gates have the same slope at 0 when
    ``beta = 4 / (tau * sqrt(2 * pi))`` (:func:`beta_matching`); they then differ by at most 0.0177 anywhere (at
    ``x = ±1.73 tau``).
    """

    relevance = False

    def __init__(self, model: nn.Module, *, beta: float = 10.0, output_selector: OutputSelector = None) -> None:
        super().__init__(model, output_selector=output_selector)
        self.beta = beta

    def composite(self) -> Any:
        from zennit.composites import BetaSmooth

        return BetaSmooth(beta_smooth=self.beta, layer_map=[(nn.Hardtanh, _clipped_beta_smooth()(self.beta))])


def beta_matching(tau: float) -> float:
    """The ``beta`` whose ``sigmoid(beta * x)`` has the slope of ``Phi(x / tau)`` at 0: ``beta / 4 = 1 / (tau *
    sqrt(2 pi))``."""
    return 4.0 / (tau * (2.0 * torch.pi) ** 0.5)


@functools.cache
def _clipped_beta_smooth() -> type:
    """The two-edged BetaSmooth hook for clipped ReLUs, defined on first use (Zennit is imported only then)."""
    from zennit.core import Hook

    class ClippedBetaSmooth(Hook):
        def __init__(self, beta_smooth: float = 10.0) -> None:
            super().__init__()
            self.beta_smooth = beta_smooth

        def copy(self) -> ClippedBetaSmooth:
            return type(self)(self.beta_smooth)

        def forward(self, module: nn.Module, input: Any, output: Any) -> None:
            self.stored_tensors["input"] = input

        def backward(self, module: nn.Module, grad_input: Any, grad_output: Any) -> Any:
            x = self.stored_tensors["input"][0]
            lo, hi = module.min_val, module.max_val
            gate = torch.sigmoid(self.beta_smooth * (x - lo)) - torch.sigmoid(self.beta_smooth * (x - hi))
            return (gate * grad_output[0],)

    return ClippedBetaSmooth
