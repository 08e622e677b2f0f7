"""Captum's ``LayerIntegratedGradients`` on the input embedding layer as a peer, ``Captum-LayerIG``.

It starts from token ids, as Captum's users call them: the model runs from ids through its own embedding layer,
and Captum integrates along the layer's output from the baseline tokens' embeddings to the text's. The baseline
is the pad token at every position that is not a special token (special tokens and padding stay as they are), the
usual choice for BERT-style models and the one our ``IntegratedGradients`` on embeddings is closest to. The map is
Captum's attribution per token and hidden unit, ``(e - e_baseline) * mean gradient``: relevance, summed over the
hidden dimension for a token's score.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...methods.targets import objective, select_output
from .base import TextPeer

__all__ = ["CaptumLayerIG", "pad_baseline"]


def pad_baseline(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_id: int, keep: torch.Tensor | None
) -> torch.Tensor:
    """The text's ids with every real, non-special token replaced by ``pad_id``."""
    replace = attention_mask.bool() if keep is None else attention_mask.bool() & ~keep
    return torch.where(replace, torch.full_like(input_ids, pad_id), input_ids)


class _FromIds(nn.Module):
    """``forward(ids, mask) -> target score (B,)`` through the model's own embedding layer."""

    def __init__(self, embeddings_forward: nn.Module, target: Any, selector: Any) -> None:
        super().__init__()
        self.inner, self.target, self.selector = embeddings_forward, target, selector

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        emb = self.inner.model.get_input_embeddings()(input_ids)
        return objective(select_output(self.inner(emb, attention_mask), self.selector), self.target, input_ids.shape[0])


class CaptumLayerIG(TextPeer, name="Captum-LayerIG"):
    """Captum's ``LayerIntegratedGradients`` on the input embedding layer (``n_steps`` Gauss-Legendre steps,
    Captum's default method), pad-token baseline."""

    requires = ("captum",)
    takes_token_ids = True

    def __init__(
        self, model: nn.Module, *, n_steps: int = 50, internal_batch_size: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(model, **kwargs)
        self.n_steps, self.internal_batch_size = int(n_steps), internal_batch_size

    def pad_id(self) -> int:
        config = getattr(self.hf_model, "config", None)
        pad = getattr(config, "pad_token_id", None)
        return int(pad) if pad is not None else 0

    def attribute_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target: Any,
                         special: torch.Tensor | None = None, tokenizer: Any = None) -> torch.Tensor:  # fmt: skip
        from captum.attr import LayerIntegratedGradients

        score = _FromIds(self.model, target, self.output_selector)
        lig = LayerIntegratedGradients(score, self.hf_model.get_input_embeddings())
        baseline = pad_baseline(input_ids, attention_mask, self.pad_id(), special)
        with torch.enable_grad():
            attr = lig.attribute(input_ids, baselines=baseline, additional_forward_args=(attention_mask,),
                                 n_steps=self.n_steps, internal_batch_size=self.internal_batch_size)  # fmt: skip
        return attr.detach()

    def _attribute(self, x: torch.Tensor, target: Any, args: tuple[Any, ...], **kwargs: Any) -> torch.Tensor:
        from ...errors import InvalidInputError

        raise InvalidInputError(
            f"{type(self).__name__} starts from token ids, as Captum's layer methods do: call it through "
            "TextExplainer(model, method=...) or evaluate --texts, which pass the ids"
        )
