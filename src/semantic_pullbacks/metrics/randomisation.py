"""Randomisation checks: an explanation should depend on the class asked for and on the learned weights."""

from __future__ import annotations

import copy
from dataclasses import KW_ONLY, dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from semantic_pullbacks.errors import InvalidInputError
from semantic_pullbacks.metrics.batched import model_outputs
from semantic_pullbacks.metrics.statistics import pearson, spearman, with_nan
from semantic_pullbacks.metrics.template import Batch, Metric
from semantic_pullbacks.metrics.validation import check_targets

__all__ = ["ModelParameterRandomisation", "RandomLogit", "TopLayerRandomisation"]

Similarity = Literal["pearson", "spearman"]
_SIMILARITIES = {"pearson": pearson, "spearman": spearman}


def _check_similarity(similarity: str) -> None:
    if similarity not in _SIMILARITIES:
        raise InvalidInputError(f"similarity must be one of {sorted(_SIMILARITIES)}, got {similarity!r}")


@dataclass(eq=False)
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
    needs_explainer = True
    call_options = ("off_targets",)

    num_classes: int | None = None
    _: KW_ONLY
    similarity: Similarity = "pearson"
    abs: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        n = self.num_classes
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 2):
            raise InvalidInputError(f"num_classes must be an int >= 2, got {n!r}")
        _check_similarity(self.similarity)

    def off_targets(self, targets: Tensor, num_classes: int) -> Tensor:
        """The seeded random other class for each target: uniform over the ``num_classes - 1`` others."""
        gen = self._generator(targets.device)
        shift = torch.randint(1, num_classes, targets.shape, generator=gen, device=targets.device)
        return (targets + shift) % num_classes

    def score(self, data: Batch) -> Tensor:
        model, x, t, a, explain = data.model, data.inputs, data.targets, data.attributions, data.explain
        off_targets = data.options.get("off_targets")
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


@dataclass(eq=False)
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
    needs_explainer = True

    _: KW_ONLY
    order: Literal["top_down", "independent"] = "top_down"
    similarity: Similarity = "spearman"
    abs: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.order not in ("top_down", "independent"):
            raise InvalidInputError(f"order must be 'top_down' or 'independent', got {self.order!r}")
        _check_similarity(self.similarity)

    def layer_scores(
        self,
        model: nn.Module,
        inputs: Tensor,
        targets: Tensor | int,
        attributions: Tensor | None = None,
        explain_func: Any = None,
    ) -> dict[str, Tensor]:
        """Similarity to the original explanation after randomising each layer, in randomisation order."""
        return self._layers(self.prepare(self.validate(model, inputs, targets, attributions, explain_func, {})))

    def score(self, data: Batch) -> Tensor:
        return torch.stack(list(self._layers(data).values())).mean(0)

    def validate(self, model: Any, *args: Any, **kwargs: Any) -> Batch:
        if not isinstance(model, nn.Module):  # its layers are what gets randomised
            raise InvalidInputError(f"model must be a torch.nn.Module, got {type(model)!r}")
        return super().validate(model, *args, **kwargs)

    def _layers(self, data: Batch) -> dict[str, Tensor]:
        model, x, t, a, explain = data.model, data.inputs, data.targets, data.attributions, data.explain
        zero = self._zero_mask(a)
        ref = self._compared(a, x)
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
            with torch.random.fork_rng(devices=_cuda_devices()):
                torch.manual_seed(self.seed)
                module.reset_parameters()
            a_r = self._compared(self._explain(explain, randomised, x, t), x)
            out[name or type(module).__name__] = with_nan(sim(ref, a_r), zero)
        return out

    def _compared(self, a: Tensor, x: Tensor) -> Tensor:
        return (a.abs() if self.abs else a).reshape(x.shape[0], -1)

    def _quantus_result(self, data: Batch) -> dict[str, list[float]]:
        """As Quantus's MPRT returns: ``{"original": ..., layer: ...}`` lists of per-sample similarities, where
        "original" compares the given map with a fresh explanation by the unchanged model."""
        ref = self._compared(data.attributions, data.inputs)
        again = self._compared(self._explain(data.explain, data.model, data.inputs, data.targets), data.inputs)
        original = _SIMILARITIES[self.similarity](ref, again)
        scores = {"original": original, **self._layers(data)}
        return {k: [float(v) for v in s.detach().cpu().tolist()] for k, s in scores.items()}


@dataclass(eq=False)
class TopLayerRandomisation(Metric):
    """The model-randomisation sanity check in one explanation per image (Adebayo et al. 2018).

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

    needs_explainer = True

    layers: int = 6

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.layers, bool) or not isinstance(self.layers, int) or self.layers < 1:
            raise InvalidInputError(f"layers must be a positive int, got {self.layers!r}")

    def validate(self, model: Any, *args: Any, **kwargs: Any) -> Batch:
        if not isinstance(model, nn.Module):  # its layers are what gets re-initialised
            raise InvalidInputError(f"model must be a torch.nn.Module, got {type(model)!r}")
        return super().validate(model, *args, **kwargs)

    def randomised(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` with its top ``layers`` convolution/linear layers re-initialised."""
        if not isinstance(model, nn.Module):
            raise InvalidInputError(f"model must be a torch.nn.Module, got {type(model)!r}")
        copied = copy.deepcopy(model)
        found = [m for m in copied.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
        if not found:
            raise InvalidInputError("model has no convolution or linear layers to re-initialise")
        with torch.random.fork_rng(devices=_cuda_devices()):
            torch.manual_seed(derived_seed(self.seed))
            for module in reversed(found[-self.layers :]):
                module.reset_parameters()
        return copied

    def score(self, data: Batch) -> Tensor:
        x, a = data.inputs, data.attributions
        a_r = self._explain(data.explain, self.randomised(data.model), x, data.targets)
        zero = self._zero_mask(a) | self._zero_mask(a_r)
        sim = spearman(a.abs().reshape(x.shape[0], -1), a_r.abs().reshape(x.shape[0], -1)).abs()
        return with_nan(sim, zero)


def derived_seed(seed: int) -> int:
    """The RNG seed a randomisation check uses for ``seed``: drawn from it, not equal to it."""
    return int(torch.randint(2**62, (1,), generator=torch.Generator().manual_seed(seed)))


def _cuda_devices() -> list[int]:
    """Devices whose RNG ``torch.manual_seed`` touches and ``fork_rng`` must restore."""
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
