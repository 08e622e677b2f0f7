"""Randomisation checks: an explanation should depend on the class asked for and on the learned weights."""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from torch import Tensor, nn

from semantic_pullbacks.errors import InvalidInputError
from semantic_pullbacks.metrics.base import (
    Metric,
    ZeroAttributionPolicy,
    check_targets,
    model_outputs,
    pearson,
    spearman,
    with_nan,
)

__all__ = ["ModelParameterRandomisation", "RandomLogit", "TopLayerRandomisation"]

Similarity = Literal["pearson", "spearman"]
_SIMILARITIES = {"pearson": pearson, "spearman": spearman}


def _check_similarity(similarity: str) -> None:
    if similarity not in _SIMILARITIES:
        raise InvalidInputError(f"similarity must be one of {sorted(_SIMILARITIES)}, got {similarity!r}")


class RandomLogit(Metric):
    """Random logit (Sixt et al. 2020): similarity of the map for the true class and for a random other class.

    The other class is drawn uniformly among the remaining ones from a seeded generator (or given as
    ``off_targets``). Score: Pearson correlation of the two flattened maps (``similarity="spearman"`` for
    ranks).
    Lower is better: a class-insensitive method explains every class the same way and scores near 1.
    ``num_classes`` defaults to the width of the model's output.
    """

    name = "random_logit"
    higher_is_better = False
    category = "randomisation"

    def __init__(
        self,
        num_classes: int | None = None,
        *,
        similarity: Similarity = "pearson",
        abs: bool = False,
        batch_size: int = 64,
        seed: int = 0,
        on_zero_attribution: ZeroAttributionPolicy = "nan",
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed, on_zero_attribution=on_zero_attribution)
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2
        ):
            raise InvalidInputError(f"num_classes must be an int >= 2, got {num_classes!r}")
        _check_similarity(similarity)
        self.num_classes = num_classes
        self.similarity = similarity
        self.abs = abs

    def off_targets(self, targets: Tensor, num_classes: int) -> Tensor:
        """The seeded random other class for each target: uniform over the ``num_classes - 1`` others."""
        gen = self._generator(targets.device)
        shift = torch.randint(1, num_classes, targets.shape, generator=gen, device=targets.device)
        return (targets + shift) % num_classes

    def __call__(
        self,
        model: nn.Module,
        inputs: Tensor,
        targets: Tensor | int,
        attributions: Tensor | None = None,
        explain_func: Any = None,
        *,
        off_targets: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor:
        x, t, a, explain = self._prepare(model, inputs, targets, attributions, explain_func, need_explainer=True)
        num_classes = self.num_classes or model_outputs(model, x[:1], batch_size=1).shape[1]
        if bool((t >= num_classes).any()):
            raise InvalidInputError(f"targets out of range: {num_classes} classes, got max {int(t.max())}")
        if off_targets is None:
            off = self.off_targets(t, num_classes)
        else:
            off = check_targets(off_targets, x, name="off_targets")
            if bool((off == t).any()) or bool((off >= num_classes).any()):
                raise InvalidInputError("off_targets must be valid classes different from targets")
        zero = self._zero_mask(a)
        a_off = self._explain(explain, model, x, off)
        zero = zero | self._zero_mask(a_off)
        if self.abs:
            a, a_off = a.abs(), a_off.abs()
        sim = _SIMILARITIES[self.similarity](a.reshape(x.shape[0], -1), a_off.reshape(x.shape[0], -1))
        return with_nan(sim, zero)


class ModelParameterRandomisation(Metric):
    """Model parameter randomisation test (Adebayo et al. 2018), cascading from the output layer.

    On a deep copy of the model (the caller's model is never touched), the parameterised layers (modules with
    ``reset_parameters``) are re-initialised one after another from the top (``order="top_down"``, cascading;
    ``"independent"`` re-initialises one layer at a time on the trained weights). After each step the
    inputs are
    explained again and compared with the original map by Spearman rank correlation of ``|attr|``
    (``abs=True``;
    ``similarity="pearson"`` available). Score: mean similarity over the randomised layers. Lower is
    better: an
    explanation that survives weight randomisation does not reflect what the model learned.

    Each re-initialisation runs under ``torch.random.fork_rng`` seeded with ``seed``, so it is
    deterministic and
    the global RNG is left as it was. ``layer_scores`` returns the per-layer similarities.
    """

    name = "model_parameter_randomisation"
    higher_is_better = False
    category = "randomisation"

    def __init__(
        self,
        *,
        order: Literal["top_down", "independent"] = "top_down",
        similarity: Similarity = "spearman",
        abs: bool = True,
        batch_size: int = 64,
        seed: int = 0,
        on_zero_attribution: ZeroAttributionPolicy = "nan",
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed, on_zero_attribution=on_zero_attribution)
        if order not in ("top_down", "independent"):
            raise InvalidInputError(f"order must be 'top_down' or 'independent', got {order!r}")
        _check_similarity(similarity)
        self.order = order
        self.similarity = similarity
        self.abs = abs

    def layer_scores(
        self,
        model: nn.Module,
        inputs: Tensor,
        targets: Tensor | int,
        attributions: Tensor | None = None,
        explain_func: Any = None,
    ) -> dict[str, Tensor]:
        """Similarity to the original explanation after randomising each layer, in randomisation order."""
        if not isinstance(model, nn.Module):
            raise InvalidInputError(f"model must be a torch.nn.Module, got {type(model)!r}")
        x, t, a, explain = self._prepare(model, inputs, targets, attributions, explain_func, need_explainer=True)
        zero = self._zero_mask(a)
        ref = (a.abs() if self.abs else a).reshape(x.shape[0], -1)
        randomised = copy.deepcopy(model)
        original_state = copy.deepcopy(randomised.state_dict())
        layers = [(n, m) for n, m in randomised.named_modules() if callable(getattr(m, "reset_parameters", None))]
        if not layers:
            raise InvalidInputError("model has no layers with reset_parameters to randomise")
        if self.order == "top_down":
            layers = layers[::-1]
        sim = _SIMILARITIES[self.similarity]
        out: dict[str, Tensor] = {}
        for name, module in layers:
            if self.order == "independent":
                randomised.load_state_dict(original_state)
            with torch.random.fork_rng(devices=_cuda_devices(x)):
                torch.manual_seed(self.seed)
                module.reset_parameters()
            a_r = self._explain(explain, randomised, x, t)
            a_r = (a_r.abs() if self.abs else a_r).reshape(x.shape[0], -1)
            out[name or type(module).__name__] = with_nan(sim(ref, a_r), zero)
        return out

    def __call__(
        self,
        model: nn.Module,
        inputs: Tensor,
        targets: Tensor | int,
        attributions: Tensor | None = None,
        explain_func: Any = None,
        **kwargs: Any,
    ) -> Tensor:
        scores = self.layer_scores(model, inputs, targets, attributions, explain_func)
        return torch.stack(list(scores.values())).mean(0)


class TopLayerRandomisation(Metric):
    """The model-randomisation sanity check in one explanation per image (Adebayo et al. 2018, DESIGN §8).

    On a deep copy of the model, the ``layers`` convolution/linear layers nearest the output (the last ones in
    registration order, which is input-to-output order in sequential architectures) are re-initialised together;
    the score is ``|Spearman|`` between ``|attr|`` on the trained model and on the copy. Lower is better: an
    explanation that survives re-initialising what the model learned at the top explains nothing. The cascading
    :class:`ModelParameterRandomisation` costs one explanation per layer; this costs one, so it can run beside
    every other metric. The layers are re-initialised from the output down, with torch's RNG seeded by
    :func:`derived_seed` (``seed``), so they never replay the stream of a model built under
    ``torch.manual_seed(seed)``; the global RNG is left as it was.
    """

    name = "top_layer_randomisation"
    higher_is_better = False
    category = "randomisation"

    def __init__(
        self,
        layers: int = 6,
        *,
        batch_size: int = 64,
        seed: int = 0,
        on_zero_attribution: ZeroAttributionPolicy = "nan",
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed, on_zero_attribution=on_zero_attribution)
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise InvalidInputError(f"layers must be a positive int, got {layers!r}")
        self.layers = layers

    def randomised(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` with its top ``layers`` convolution/linear layers re-initialised."""
        if not isinstance(model, nn.Module):
            raise InvalidInputError(f"model must be a torch.nn.Module, got {type(model)!r}")
        copied = copy.deepcopy(model)
        found = [m for m in copied.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
        if not found:
            raise InvalidInputError("model has no convolution or linear layers to re-initialise")
        device = next(copied.parameters()).device
        with torch.random.fork_rng(devices=_cuda_devices(torch.empty(0, device=device))):
            torch.manual_seed(derived_seed(self.seed))
            for module in reversed(found[-self.layers :]):
                module.reset_parameters()
        return copied

    def __call__(
        self,
        model: nn.Module,
        inputs: Tensor,
        targets: Tensor | int,
        attributions: Tensor | None = None,
        explain_func: Any = None,
        **kwargs: Any,
    ) -> Tensor:
        x, t, a, explain = self._prepare(model, inputs, targets, attributions, explain_func, need_explainer=True)
        zero = self._zero_mask(a)
        a_r = self._explain(explain, self.randomised(model), x, t)
        zero = zero | self._zero_mask(a_r)
        sim = spearman(a.abs().reshape(x.shape[0], -1), a_r.abs().reshape(x.shape[0], -1)).abs()
        return with_nan(sim, zero)


def derived_seed(seed: int) -> int:
    """The RNG seed a randomisation check uses for ``seed``: drawn from it, not equal to it."""
    return int(torch.randint(2**62, (1,), generator=torch.Generator().manual_seed(seed)))


def _cuda_devices(x: Tensor) -> list[int]:
    """Devices whose RNG ``torch.manual_seed`` touches and ``fork_rng`` must restore."""
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
