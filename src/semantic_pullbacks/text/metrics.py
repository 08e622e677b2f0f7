"""Text faithfulness metrics, batched in torch: ERASER comprehensiveness/sufficiency (AOPC), token-deletion curves,
the Sequence Pointing Game; as functions, and as metric objects with their metadata (:data:`TEXT_METRICS`) for
``evaluate``'s text mode.

Each metric takes ``score_fn(input_ids, attention_mask) -> (B,)``, the explained target's value (a class
probability, a log-probability, a cosine similarity), the token ids and mask ``(B, T)``, a relevance ``(B, T)``, a
boolean ``protected`` mask ``(B, T)`` of tokens never removed (special tokens, padding), and the token that stands in
for removed ones (the tokenizer's mask token, else its pad token). Every perturbed copy of a batch goes through
one call of ``score_fn``, so a metric costs one forward pass of ``B x (number of steps)`` texts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import InvalidInputError

__all__ = [
    "AOPC_FRACTIONS",
    "TEXT_METRICS",
    "Comprehensiveness",
    "DeletionABC",
    "DeletionCurves",
    "PointingGame",
    "Sufficiency",
    "TextMetric",
    "comprehensiveness",
    "deletion_curves",
    "get_text_metric",
    "list_text_metrics",
    "removal_token",
    "sequence_pointing_game",
    "sufficiency",
]

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
AOPC_FRACTIONS = (0.01, 0.05, 0.10, 0.20, 0.50)


def removal_token(tokenizer: Any) -> int:
    """The tokenizer's mask token, else its pad token: what removed tokens are replaced by."""
    for name in ("mask_token_id", "pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    raise InvalidInputError("the tokenizer has no mask, pad or end-of-sequence token to stand in for removed tokens")


def _ranks(relevance: torch.Tensor, protected: torch.Tensor, descending: bool) -> torch.Tensor:
    """Each token's position in the removal order (0 = first removed); protected tokens rank last."""
    key = relevance.detach().float().masked_fill(protected, float("inf") if not descending else float("-inf"))
    order = key.argsort(dim=1, descending=descending, stable=True)
    return order.argsort(dim=1, stable=True)


def _counts(protected: torch.Tensor, fractions: Sequence[float]) -> torch.Tensor:
    """``(K, B)``: how many tokens the top ``fraction`` is: ``ceil(fraction * n)``, at least one."""
    n = (~protected).sum(1).float()
    f = torch.tensor(list(fractions), device=protected.device, dtype=torch.float32)[:, None]
    return torch.ceil(f * n[None] - 1e-9).clamp_min(1).minimum(n[None]).long()


def _score_many(score_fn: ScoreFn, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``ids``: ``(S, B, T)`` -> scores ``(S, B)`` from one batched call."""
    s, b, t = ids.shape
    with torch.no_grad():
        out = score_fn(ids.reshape(s * b, t), mask.unsqueeze(0).expand(s, b, t).reshape(s * b, t))
    return out.reshape(s, b).float()


def _check(ids: torch.Tensor, relevance: torch.Tensor, protected: torch.Tensor) -> None:
    if ids.shape != relevance.shape or ids.shape != protected.shape or ids.dim() != 2:
        raise InvalidInputError(
            f"input_ids, relevance and protected must share one (B, T) shape, got {tuple(ids.shape)}, "
            f"{tuple(relevance.shape)}, {tuple(protected.shape)}"
        )


def comprehensiveness(score_fn, input_ids, attention_mask, relevance, protected, replace_id,
                      fractions: Sequence[float] = AOPC_FRACTIONS) -> torch.Tensor:  # fmt: skip
    """AOPC comprehensiveness ``mean_k [s(x) - s(x without its top-k% tokens)]`` per text ``(B,)``; higher is
    better (removing what the explanation ranks first should hurt)."""
    _check(input_ids, relevance, protected)
    ranks = _ranks(relevance, protected, descending=True)
    counts = _counts(protected, fractions)  # (K, B)
    removed = ranks[None] < counts[:, :, None]  # (K, B, T)
    ids = torch.where(removed, torch.full_like(input_ids, replace_id)[None], input_ids[None])
    full = _score_many(score_fn, input_ids[None], attention_mask)[0]
    return (full[None] - _score_many(score_fn, ids, attention_mask)).mean(0)


def sufficiency(score_fn, input_ids, attention_mask, relevance, protected, replace_id,
                fractions: Sequence[float] = AOPC_FRACTIONS) -> torch.Tensor:  # fmt: skip
    """AOPC sufficiency ``mean_k [s(x) - s(only the top-k% tokens kept)]`` per text ``(B,)``; lower is better."""
    _check(input_ids, relevance, protected)
    ranks = _ranks(relevance, protected, descending=True)
    counts = _counts(protected, fractions)
    kept = (ranks[None] < counts[:, :, None]) | protected[None]
    ids = torch.where(kept, input_ids[None], torch.full_like(input_ids, replace_id)[None])
    full = _score_many(score_fn, input_ids[None], attention_mask)[0]
    return (full[None] - _score_many(score_fn, ids, attention_mask)).mean(0)


@dataclass(frozen=True)
class DeletionCurves:
    """Scores after removing 0, 1, ..., n tokens: most-relevant-first (MoRF) and least-relevant-first (LeRF).

    ``morf``/``lerf`` are ``(steps + 1, B)``, each text's curve on a common grid of fractions removed
    (``fractions``); ``abc`` is the area between them, ``mean(LeRF - MoRF)`` (higher is better)."""

    fractions: torch.Tensor
    morf: torch.Tensor
    lerf: torch.Tensor

    @property
    def abc(self) -> torch.Tensor:
        return (self.lerf - self.morf).mean(0)


def deletion_curves(score_fn, input_ids, attention_mask, relevance, protected, replace_id,
                    steps: int = 10) -> DeletionCurves:  # fmt: skip
    """Token deletion at ``steps + 1`` fractions 0, 1/steps, ..., 1 of each text's removable tokens."""
    _check(input_ids, relevance, protected)
    fractions = torch.linspace(0, 1, steps + 1)
    n = (~protected).sum(1).float()
    counts = torch.round(fractions[:, None].to(n.device) * n[None]).long()  # (S, B)
    curves = []
    for descending in (True, False):
        ranks = _ranks(relevance, protected, descending)
        removed = ranks[None] < counts[:, :, None]
        ids = torch.where(removed, torch.full_like(input_ids, replace_id)[None], input_ids[None])
        curves.append(_score_many(score_fn, ids, attention_mask))
    return DeletionCurves(fractions, curves[0], curves[1])


def sequence_pointing_game(relevance: torch.Tensor, segment: torch.Tensor, protected: torch.Tensor) -> torch.Tensor:
    """Share of positive relevance inside the target's segment ``(B,)``: texts of different classes are joined,
    and a class-sensitive explanation puts its positive relevance on the segment of the explained class. ``nan``
    for a text with no positive relevance."""
    if relevance.shape != segment.shape or relevance.shape != protected.shape:
        raise InvalidInputError("relevance, segment and protected must share one (B, T) shape")
    pos = relevance.detach().float().clamp_min(0) * (~protected)
    total = pos.sum(1)
    inside = (pos * segment.bool()).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-30), torch.full_like(total, math.nan))


# --- metric objects: hyper-parameters at construction, data at the call ------------------------------------------
class TextMetric:
    """A text metric with its metadata: ``name``, ``higher_is_better``, and ``needs_segment`` (scored on joined
    texts of different classes, with the target's ``segment`` mask). Called as
    ``metric(score_fn, input_ids, attention_mask, relevance, protected, replace_id, segment=None) -> (B,)``."""

    name: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    needs_segment: ClassVar[bool] = False

    def __call__(self, score_fn: ScoreFn, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 relevance: torch.Tensor, protected: torch.Tensor, replace_id: int,
                 segment: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        raise NotImplementedError


@dataclass(frozen=True)
class Comprehensiveness(TextMetric):
    """ERASER comprehensiveness, AOPC over ``fractions`` of the tokens removed most-relevant-first."""

    fractions: tuple[float, ...] = AOPC_FRACTIONS
    name: ClassVar[str] = "comprehensiveness"

    def __call__(self, score_fn, input_ids, attention_mask, relevance, protected, replace_id, segment=None):  # type: ignore[no-untyped-def]
        return comprehensiveness(score_fn, input_ids, attention_mask, relevance, protected, replace_id, self.fractions)


@dataclass(frozen=True)
class Sufficiency(TextMetric):
    """ERASER sufficiency, AOPC over ``fractions`` of the tokens kept most-relevant-first."""

    fractions: tuple[float, ...] = AOPC_FRACTIONS
    name: ClassVar[str] = "sufficiency"
    higher_is_better: ClassVar[bool] = False

    def __call__(self, score_fn, input_ids, attention_mask, relevance, protected, replace_id, segment=None):  # type: ignore[no-untyped-def]
        return sufficiency(score_fn, input_ids, attention_mask, relevance, protected, replace_id, self.fractions)


@dataclass(frozen=True)
class DeletionABC(TextMetric):
    """Area between the LeRF and MoRF token-deletion curves at ``steps`` + 1 fractions removed."""

    steps: int = 10
    name: ClassVar[str] = "deletion_abc"

    def __call__(self, score_fn, input_ids, attention_mask, relevance, protected, replace_id, segment=None):  # type: ignore[no-untyped-def]
        curves = deletion_curves(score_fn, input_ids, attention_mask, relevance, protected, replace_id, self.steps)
        return curves.abc


@dataclass(frozen=True)
class PointingGame(TextMetric):
    """The Sequence Pointing Game: share of positive relevance inside the target's segment."""

    name: ClassVar[str] = "pointing_game"
    needs_segment: ClassVar[bool] = True

    def __call__(self, score_fn, input_ids, attention_mask, relevance, protected, replace_id, segment=None):  # type: ignore[no-untyped-def]
        if segment is None:
            raise InvalidInputError("the pointing game needs segment= (the tokens of the target's segment)")
        return sequence_pointing_game(relevance, segment, protected)


#: the text metrics by name, in the order reports show them
TEXT_METRICS: dict[str, type[TextMetric]] = {
    cls.name: cls for cls in (Comprehensiveness, Sufficiency, DeletionABC, PointingGame)
}


def list_text_metrics() -> list[str]:
    return list(TEXT_METRICS)


def get_text_metric(name: str, **settings: Any) -> TextMetric:
    """A text metric by name (``deletion-abc`` works too) with its hyper-parameters."""
    key = name.strip().lower().replace("-", "_")
    if key not in TEXT_METRICS:
        raise InvalidInputError(f"unknown text metric {name!r}; available: {', '.join(TEXT_METRICS)}")
    return TEXT_METRICS[key](**settings)
