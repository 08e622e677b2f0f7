"""inseq's attribution methods for causal language models as peers: ``inseq-Saliency``, ``inseq-InputXGradient``,
``inseq-IntegratedGradients`` and ``inseq-Attention``.

inseq explains generation: the caller's loaded model and tokenizer go to ``inseq.load_model`` (no hub name, nothing
downloaded), and each text is given to inseq as the prompt up to the explained position with the explained token
as the generated continuation, scored by inseq's ``probability`` step function with ``logprob=True``: the same
``log p(token | prefix)`` as :class:`~semantic_pullbacks.text.TokenLogProb`. inseq tokenises the text itself; the
ids it used are checked against ours, and a tokenizer that does not reproduce them is refused.

Conventions, made to match ours: inseq's saliency takes the absolute gradient by default; here ``abs=False``, so
the map is the signed gradient and a token's signed score is ``embedding . gradient`` like our ``Gradient``
(input x gradient and integrated gradients already contain the input: their map is summed over the hidden units).
Integrated gradients use inseq's baseline and steps. Attention is the mean, over every layer and head, of the
attention weight from the explained position to each token: unsigned, with no hidden dimension.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ...errors import InvalidInputError, UnsupportedModelError
from .base import TextPeer

__all__ = ["InseqAttention", "InseqInputXGradient", "InseqIntegratedGradients", "InseqSaliency"]


@contextlib.contextmanager
def _attention_implementation(model: nn.Module, name: str | None) -> Iterator[None]:
    """Eager attention while inseq reads the attention weights (sdpa does not return them), then as it was."""
    config = getattr(model, "config", None)
    old = getattr(config, "_attn_implementation", None)
    if name is None or config is None or old == name:
        yield
        return
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = old


class _Inseq(TextPeer):
    requires = ("inseq",)
    takes_token_ids = True
    causal_lm_only = True
    inseq_method = ""
    options: dict[str, Any] = {}
    attention: str | None = None

    def __init__(self, model: nn.Module, *, output_selector: Any = None, **options: Any) -> None:
        """``options`` go to inseq's ``attribute`` (e.g. ``n_steps`` for integrated gradients)."""
        super().__init__(model, output_selector=output_selector)
        if getattr(self.model, "kind", None) != "causal-lm":
            raise UnsupportedModelError(f"{type(self).__name__}: inseq explains generation, so it needs a causal LM")
        self.options = {**type(self).options, **options}
        self._loaded: tuple[Any, Any] | None = None

    def _inseq_model(self, tokenizer: Any) -> Any:
        import inseq

        if self._loaded is None or self._loaded[0] is not tokenizer:
            self._loaded = (tokenizer, inseq.load_model(self.hf_model, self.inseq_method, tokenizer=tokenizer))
        return self._loaded[1]

    def attribute_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target: Any,
                         special: torch.Tensor | None = None, tokenizer: Any = None) -> torch.Tensor:  # fmt: skip
        how = "as inseq's generation steps do"
        return self._each_next_token(input_ids, attention_mask, target, tokenizer, how)

    def _one(self, ids: torch.Tensor, mask: torch.Tensor, position: int, token: int, tokenizer: Any) -> torch.Tensor:
        real = [j for j in range(position + 1) if mask[j] != 0]
        prompt = tokenizer.decode(ids[real].tolist(), skip_special_tokens=True)
        generated = tokenizer.decode([*ids[real].tolist(), token], skip_special_tokens=True)
        with _attention_implementation(self.hf_model, self.attention), torch.enable_grad():
            out = self._inseq_model(tokenizer).attribute(
                prompt, generated, attributed_fn="probability", logprob=True, show_progress=False, **self.options
            )
        seq = out.sequence_attributions[0]
        used = [t.id for t in seq.target]
        if used != [*ids[real].tolist(), token]:
            raise InvalidInputError(
                f"inseq tokenised the text to {used}, not to the ids explained ({[*ids[real].tolist(), token]}): "
                "this tokenizer does not give back the same ids from its decoded text"
            )
        scores = self._per_token(seq.target_attributions[: len(real), 0])
        row = torch.zeros(ids.shape[0], scores.shape[-1], dtype=scores.dtype)
        row[real] = scores
        return row.to(ids.device)

    def _per_token(self, attributions: torch.Tensor) -> torch.Tensor:
        return attributions.float()


class InseqSaliency(_Inseq, name="inseq-Saliency"):
    """inseq's ``saliency``, signed (``abs=False``): a gradient, scored ``embedding . gradient`` per token."""

    inseq_method = "saliency"
    options = {"abs": False}
    multiplies_by_inputs = False


class InseqInputXGradient(_Inseq, name="inseq-InputXGradient"):
    """inseq's ``input_x_gradient``."""

    inseq_method = "input_x_gradient"


class InseqIntegratedGradients(_Inseq, name="inseq-IntegratedGradients"):
    """inseq's ``integrated_gradients`` (its baseline and step count)."""

    inseq_method = "integrated_gradients"


class InseqAttention(_Inseq, name="inseq-Attention"):
    """inseq's ``attention``: each token's attention weight, averaged over layers and heads."""

    inseq_method = "attention"
    attention = "eager"

    def _per_token(self, attributions: torch.Tensor) -> torch.Tensor:
        return attributions.reshape(attributions.shape[0], -1).float().mean(-1, keepdim=True)
