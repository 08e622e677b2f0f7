"""Captum's text-template API for language models as a peer, ``Captum-LLM-LayerIG``: ``LLMGradientAttribution``
around ``LayerIntegratedGradients`` on the input embedding layer, with the prompt as a ``TextTokenInput``.

Captum's LLM attribution explains the log-probability of target tokens given a prompt: it runs the model on the
prompt's ids alone (no attention mask: one unpadded text) and takes ``log_softmax`` of the last position's logits at
the target token. Here the target is one next token, :class:`~semantic_pullbacks.text.TokenLogProb` (``target=``,
or a continuation with ``per_token=True``): the prompt is the text up to the explained position, the target that
token's id. ``TextTokenInput`` reads text, so each prompt is decoded and Captum's tokenizer call must give back the
ids explained; a tokenizer that does not is refused.

Conventions: the baseline is the pad token (the model config's ``pad_token_id``, else 0, Captum's own default) at
every token that is not special; special tokens are Captum's ``skip_tokens``, kept in the baseline, and score 0, as
in ``Captum-LayerIG``. Captum sums the attribution over the hidden dimension itself, so the map has one unit per
token: the signed relevance ``sum_h (e - e_pad) * mean gradient`` of ``n_steps`` Gauss-Legendre steps.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import InvalidInputError, UnsupportedModelError
from .captum_layers import CaptumLayerIG

__all__ = ["CaptumLLMLayerIG"]


class CaptumLLMLayerIG(CaptumLayerIG, name="Captum-LLM-LayerIG"):
    """Captum's ``LLMGradientAttribution(LayerIntegratedGradients(model, embedding layer), tokenizer)`` on a
    ``TextTokenInput`` prompt, explaining ``log p(next token | prompt)`` (``n_steps`` steps, pad-token baseline)."""

    causal_lm_only = True

    def __init__(
        self, model: nn.Module, *, n_steps: int = 50, internal_batch_size: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(model, n_steps=n_steps, internal_batch_size=internal_batch_size, **kwargs)
        if getattr(self.model, "kind", None) != "causal-lm":
            raise UnsupportedModelError(
                f"{type(self).__name__}: Captum's LLMGradientAttribution explains the log-probability of next "
                f"tokens, so it needs a causal LM, not a {getattr(self.model, 'kind', type(model).__name__)} model; "
                "use Captum-LayerIG for other text models"
            )
        if self.output_selector is not None:
            raise InvalidInputError(
                f"{type(self).__name__} takes no output_selector: Captum's LLM attribution reads the model's logits"
            )

    def attribute_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target: Any,
                         special: torch.Tensor | None = None, tokenizer: Any = None) -> torch.Tensor:  # fmt: skip
        how = "one target token as Captum's LLM attribution scores it"
        return self._each_next_token(input_ids, attention_mask, target, tokenizer, how)

    def _one(self, ids: torch.Tensor, mask: torch.Tensor, position: int, token: int, tokenizer: Any) -> torch.Tensor:
        from captum.attr import LayerIntegratedGradients, LLMGradientAttribution, TextTokenInput

        real = [j for j in range(position + 1) if mask[j] != 0]
        prompt_ids = ids[real].tolist()
        skip = [int(i) for i in tokenizer.all_special_ids]
        prompt = TextTokenInput(tokenizer.decode(prompt_ids, skip_special_tokens=True), tokenizer,
                                baselines=self.pad_id(), skip_tokens=skip or None)  # fmt: skip
        if prompt.inp_tensor[0].tolist() != prompt_ids:
            raise InvalidInputError(
                f"{type(self).__name__}: Captum's TextTokenInput reads text, and this tokenizer encodes the decoded "
                f"prompt to {prompt.inp_tensor[0].tolist()}, not to the ids explained ({prompt_ids}); use "
                "Captum-LayerIG, which starts from ids"
            )
        row = torch.zeros(ids.shape[0], 1, device=ids.device)
        keep = torch.ones(len(real), dtype=torch.bool) if prompt.itp_mask is None else prompt.itp_mask[0].cpu()
        if not bool(keep.any()):  # only special tokens: all of them stay in the baseline, nothing moves
            return row
        hf = self.hf_model
        llm = LLMGradientAttribution(LayerIntegratedGradients(hf, hf.get_input_embeddings()), tokenizer)
        with torch.enable_grad():
            out = llm.attribute(prompt, target=torch.tensor([token]), n_steps=self.n_steps,
                                internal_batch_size=self.internal_batch_size)  # fmt: skip
        scores = out.token_attr[0].detach().to(row)
        row[torch.tensor(real, device=ids.device)[keep.to(ids.device)], 0] = scores
        return row
