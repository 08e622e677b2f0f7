"""Encoder-decoders (T5, BART, Marian, mT5 ...): relevance over the encoder's input tokens and over the decoder
prefix, for each target token.

The explained input is one tensor: the encoder's input embeddings followed by the decoder's input embeddings
(its start token and the target tokens before the last), split again inside :class:`Seq2SeqForward`. So every
method of the library runs unchanged, and row ``k`` of the result scores both the source text and the target
tokens already written. A decoder needs decoder inputs: a target given as ``continuation=`` (teacher forcing) or
generated with ``max_new_tokens=``; without either there is nothing to explain, which is a typed error.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError, UnsupportedModelError
from .generate import GenerationSettings, generation_settings, run_generate, strip_end
from .matrix import TokenMatrix, build_matrix, words_of
from .model import Encoded, TextModel, tokenize
from .targets import TokenLogProb

__all__ = ["Seq2SeqForward", "explain"]


class Seq2SeqForward(nn.Module):
    """``forward(embeddings, attention_mask, source_length) -> logits (B, T, V)`` over the decoder positions:
    the first ``source_length`` positions go to the encoder, the rest to the decoder.

    Encoders that scale only the embeddings they look up themselves (Marian's ``embed_scale``) get the scaled
    embeddings, so the explained point is what the model computes with."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.training = model.training

    def forward(self, embeddings: torch.Tensor, attention_mask: torch.Tensor, source_length: int) -> torch.Tensor:
        s = source_length
        encoder, decoder = embeddings[:, :s], embeddings[:, s:]
        out = self.model(inputs_embeds=encoder, attention_mask=attention_mask[:, :s],
                         decoder_inputs_embeds=decoder, decoder_attention_mask=attention_mask[:, s:])  # fmt: skip
        return out.logits


def encoder_scale(model: nn.Module) -> float:
    """The factor an encoder applies only to embeddings it looks up itself (1 for T5 and BART)."""
    encoder = model.get_encoder() if hasattr(model, "get_encoder") else None
    return float(getattr(encoder, "embed_scale", 1.0) or 1.0)


def start_token(tm: TextModel) -> int:
    config = getattr(tm.model, "config", None)
    start = getattr(config, "decoder_start_token_id", None)
    if start is None:
        start = getattr(getattr(tm.model, "generation_config", None), "decoder_start_token_id", None)
    if start is None:
        raise UnsupportedModelError(
            f"{type(tm.model).__name__} has no decoder_start_token_id in its config: set config.decoder_start_token_id"
        )
    return int(start)


def explain(method: Any, tm: TextModel, prompt: str, continuation: str | None, max_new_tokens: Any,
            kwargs: dict[str, Any], method_name: str) -> TokenMatrix:  # fmt: skip
    """The :class:`TokenMatrix` of one source text and its target (given, or generated)."""
    source = encode_source(tm, prompt)
    if continuation is not None:
        if kwargs:
            raise InvalidInputError(f"generation keywords {sorted(kwargs)} need max_new_tokens=, not continuation=")
        target, text = given_target(tm, continuation), continuation
    elif max_new_tokens is not None:
        target = generated_target(tm, source, generation_settings(max_new_tokens, kwargs), prompt)
        text = tm.tokenizer.decode(target, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    else:
        raise InvalidInputError(
            f"{type(tm.model).__name__} is an encoder-decoder: it needs decoder inputs. Give continuation= (the "
            "target text to explain) or max_new_tokens= (let the model write it)"
        )
    return explain_target(method, tm, source, target, text, method_name)


def encode_source(tm: TextModel, prompt: str) -> Encoded:
    n = len(tm.tokenizer(prompt)["input_ids"])
    if n > tm.max_length:
        raise InvalidInputError(
            f"the source text is {n} tokens, more than the model's context of {tm.max_length}: shorten it"
        )
    return tm.encode([prompt])


def given_target(tm: TextModel, continuation: str) -> list[int]:
    if not isinstance(continuation, str) or not continuation.strip():
        raise InvalidInputError("continuation is empty: give the target text whose tokens are explained")
    ids = tm.tokenizer(continuation, add_special_tokens=False)["input_ids"]
    if not ids:
        raise InvalidInputError(f"continuation {continuation!r} is no token for this tokenizer: give some text")
    return [int(i) for i in ids]


def generated_target(tm: TextModel, source: Encoded, settings: GenerationSettings, prompt: str) -> list[int]:
    pad = tm.tokenizer.pad_token_id
    out = run_generate(tm.model, source.input_ids, settings, pad_token_id=pad)
    new = out[0].tolist()
    if new and new[0] == start_token(tm):
        new = new[1:]  # generate puts the decoder's start token first
    return strip_end(tm.tokenizer, new, prompt)


def target_encoding(tm: TextModel, target: list[int], text: str) -> tuple[list[str], list[Any], list[str]]:
    """Tokens, word keys and token texts of the target: the tokenizer's own words where the text tokenises back
    to these ids, else one word per token."""
    enc = tokenize(tm.tokenizer, [text], 10**9, add_special_tokens=False)
    if enc.input_ids[0].tolist() == target:
        words = [None if w is None else ("target", w) for w in enc.word_ids[0]]
        return enc.tokens[0], words, [text[a:b] if b > a else t for t, (a, b) in zip(enc.tokens[0], enc.offsets[0])]
    tokens = tm.tokenizer.convert_ids_to_tokens(target)
    return tokens, [("target", j) for j in range(len(target))], [tm.tokenizer.decode([t]) for t in target]


def explain_target(method: Any, tm: TextModel, source: Encoded, target: list[int], text: str,
                   method_name: str) -> TokenMatrix:  # fmt: skip
    s, n = source.input_ids.shape[1], len(target)
    decoder_ids = torch.tensor([[start_token(tm), *target[:-1]]], device=tm.device)
    with torch.no_grad():
        table = tm.model.get_input_embeddings()
        packed = torch.cat([table(source.input_ids) * encoder_scale(tm.model), table(decoder_ids)], 1).detach()
    mask = torch.cat([source.attention_mask, torch.ones_like(decoder_ids)], 1)
    check_parity(tm, source, decoder_ids, packed, mask)
    parts = [TokenLogProb(t, (k,), label=f"token {k}: {tm.tokenizer.decode([t])!r}") for k, t in enumerate(target)]
    args = (mask, s)
    if n == 1:
        maps = method.attribute(packed, target=parts[0], additional_forward_args=args)[None]
    else:
        maps = method.attribute_targets(packed, parts, additional_forward_args=args)
    signed = maps.sum(-1) if getattr(method, "multiplies_by_inputs", False) else (packed * maps).sum(-1)
    with torch.no_grad():
        logits = Seq2SeqForward(tm.model)(packed, mask, s)
        scores = tuple(float(p(logits)[0]) for p in parts)
    return assemble(tm, source, target, text, signed[:, 0], scores, method_name)


def check_parity(tm: TextModel, source: Encoded, decoder_ids: torch.Tensor, packed: torch.Tensor,
                 mask: torch.Tensor) -> None:  # fmt: skip
    """The embeddings path must compute what the model computes from ids; otherwise explaining it would explain
    another function."""
    s = source.input_ids.shape[1]
    with torch.no_grad():
        ours = Seq2SeqForward(tm.model)(packed, mask, s)
        theirs = tm.model(input_ids=source.input_ids, attention_mask=source.attention_mask,
                          decoder_input_ids=decoder_ids).logits  # fmt: skip
    if not torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max().clamp_min(1))):
        raise UnsupportedModelError(
            f"{type(tm.model).__name__} computes something else from input embeddings than from token ids (an "
            "embedding scale or offset applied only to looked-up ids): its tokens cannot be explained through "
            "their embeddings"
        )


def assemble(tm: TextModel, source: Encoded, target: list[int], text: str, signed: torch.Tensor,
             scores: tuple[float, ...], method_name: str) -> TokenMatrix:  # fmt: skip
    s, n = source.input_ids.shape[1], len(target)
    tgt_tokens, tgt_words, tgt_texts = target_encoding(tm, target, text)
    src_words = [None if w is None else ("source", w) for w in source.word_ids[0]]
    src_texts = token_texts_of(source)
    start = tm.tokenizer.convert_ids_to_tokens([start_token(tm)])[0]
    keys = [*src_words, None, *tgt_words]  # the decoder's start token belongs to no word
    special = [*source.special[0].tolist(), True, *([False] * n)]
    word_of, words_text = words_of(keys, special, [*src_texts, start, *tgt_texts])
    at = [s + k + 1 for k in range(n)]  # target k sees the encoder and decoder inputs 0..k
    return TokenMatrix(
        prompt=source.texts[0],
        continuation=text,
        source_tokens=(*source.tokens[0], start, *tgt_tokens[:-1]),
        target_tokens=tuple(tgt_tokens),
        matrix=build_matrix(signed, at, s + n),
        source_words=word_of[: s + n],
        target_words=tuple(word_of[s + 1 + k] for k in range(n)),
        words_text=words_text,
        scores=scores,
        method=method_name,
        model=tm.name,
        extra={"source_length": s},
    )


def token_texts_of(enc: Encoded) -> list[str]:
    text = enc.texts[0]
    return [text[a:b] if b > a else t for t, (a, b) in zip(enc.tokens[0], enc.offsets[0])]
