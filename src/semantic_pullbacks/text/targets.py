"""What to explain in a text model: one scalar per text, computed from the model's output.

Targets are small callables ``target(output) -> (B,)``, evaluated outside the pullback rules (their log-softmax
or cosine is the *definition* of the explained quantity, differentiated exactly; only the network's gates are
softened). Each has a ``label`` for displays.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..engine import rules_suspended

__all__ = ["ClassTarget", "ContrastTarget", "SimilarityTarget", "SumOfLogProbs", "TokenLogProb", "tile"]


def tile(per_text: torch.Tensor, batch: int) -> torch.Tensor:
    """Per-text values for a batch that repeats the texts (Integrated Gradients' steps, SmoothGrad's samples)."""
    n = per_text.shape[0]
    if n == batch or per_text.dim() == 0:
        return per_text
    return per_text.repeat(batch // n, *([1] * (per_text.dim() - 1)))


@dataclass(frozen=True)
class ClassTarget:
    """A class logit of a sequence classifier."""

    index: int
    label: str = ""

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, self.index]


@dataclass(frozen=True)
class TokenLogProb:
    """``log p(token | prefix)`` at one position of a causal LM (``positions`` per text, ``-1``: the last)."""

    token_id: int
    positions: tuple[int, ...]
    label: str = ""

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        with rules_suspended():
            rows = torch.arange(logits.shape[0], device=logits.device)
            pos = tile(torch.tensor(self.positions, device=logits.device), logits.shape[0])
            return logits[rows, pos].log_softmax(-1)[:, self.token_id]


@dataclass(frozen=True)
class SumOfLogProbs:
    """``sum_t log p(token_t | prefix)`` over a continuation: the log-probability of the whole continuation."""

    parts: tuple[TokenLogProb, ...]
    label: str = ""

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.stack([p(logits) for p in self.parts]).sum(0)


@dataclass(frozen=True)
class ContrastTarget:
    """``logit(target) - logit(foil)`` at the last real position (the BLiMP / IOI setting)."""

    token_id: int
    foil_id: int
    positions: tuple[int, ...]
    label: str = ""

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(logits.shape[0], device=logits.device)
        last = logits[rows, tile(torch.tensor(self.positions, device=logits.device), logits.shape[0])]
        return last[:, self.token_id] - last[:, self.foil_id]


@dataclass(frozen=True)
class SimilarityTarget:
    """Cosine similarity of the pooled embedding to a fixed reference embedding (another text, a label text)."""

    reference: torch.Tensor  # (B, H) or (H,)
    label: str | Mapping[int, str] = ""  # per text where each text has its own reference

    def __call__(self, pooled: torch.Tensor) -> torch.Tensor:
        with rules_suspended():
            reference = self.reference.to(pooled.dtype)
            reference = tile(reference, pooled.shape[0]) if reference.dim() == 2 else reference.expand_as(pooled)
            return F.cosine_similarity(pooled, reference, dim=-1)
