"""Generate and explain: the model writes a continuation with its own ``generate``, then every generated token is
explained from one forward pass over the whole sequence.

Greedy decoding by default. Sampling (``do_sample=True``) needs ``seed=``: an explanation is only worth keeping
if the text it explains can be produced again, so unseeded sampling is refused rather than left to chance. The
seed drives a forked random state, so the caller's own random streams are left as they were.

Tokens are explained as generated: the sequence is the prompt's ids followed by the generated ids. When the
decoded text tokenises back to the same ids (almost always), words come from the tokenizer's own word ids;
otherwise each generated token counts as its own word. Trailing end-of-sequence tokens end the text and are
not explained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InvalidInputError
from .model import Encoded, TextModel

__all__ = ["GenerationSettings", "generate_causal", "generation_settings", "sequence_encoding"]


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int
    seed: int | None
    generate_kwargs: dict[str, Any]


def generation_settings(max_new_tokens: Any, generate_kwargs: dict[str, Any]) -> GenerationSettings:
    """Check the arguments before anything runs."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InvalidInputError(f"max_new_tokens must be a whole number of at least 1, got {max_new_tokens!r}")
    kwargs = dict(generate_kwargs)
    seed = kwargs.pop("seed", None)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidInputError(f"seed must be a whole number, got {seed!r}")
    for owned in ("input_ids", "attention_mask", "inputs_embeds", "max_new_tokens", "max_length"):
        if owned in kwargs:
            raise InvalidInputError(f"{owned}= is set by the explainer from the prompt and max_new_tokens; drop it")
    if kwargs.get("do_sample") and seed is None:
        raise InvalidInputError(
            "do_sample=True without seed=: a sampled continuation could not be produced again, so its explanation "
            "could not be checked. Give seed= (any whole number), or drop do_sample for greedy decoding"
        )
    return GenerationSettings(max_new_tokens, seed, kwargs)


def check_room(tm: TextModel, n_prompt: int, settings: GenerationSettings) -> None:
    if n_prompt + settings.max_new_tokens > tm.max_length:
        raise InvalidInputError(
            f"the prompt is {n_prompt} tokens and max_new_tokens is {settings.max_new_tokens}: more than the "
            f"model's context of {tm.max_length} tokens. Shorten the prompt or ask for fewer new tokens"
        )


def run_generate(model: Any, input_ids: torch.Tensor, settings: GenerationSettings, **extra: Any) -> torch.Tensor:
    """The model's own ``generate``, under the seed when there is one; ids ``(1, T)`` as it returns them."""
    kwargs = {"max_new_tokens": settings.max_new_tokens, **extra, **settings.generate_kwargs}
    if not kwargs.get("do_sample"):
        kwargs.setdefault("do_sample", False)
    devices = [input_ids.device] if input_ids.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        try:
            return model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
        except (TypeError, ValueError) as e:  # generate checks its own keywords
            raise InvalidInputError(f"the model's generate refused these settings: {e}") from None


def prompt_ids(tm: TextModel, prompt: str) -> list[int]:
    """The prompt as the model reads it, without the special tokens some tokenizers append ([SEP], </s>)."""
    enc = tm.encode([prompt])
    ids = [int(i) for i, m in zip(enc.input_ids[0], enc.attention_mask[0]) if m != 0]
    special = [bool(s) for s, m in zip(enc.special[0], enc.attention_mask[0]) if m != 0]
    while len(ids) > 1 and special[-1]:
        ids.pop()
        special.pop()
    return ids


def generate_causal(tm: TextModel, prompt: str, settings: GenerationSettings) -> tuple[list[int], list[int]]:
    """``(prompt ids, generated ids)``, trailing end-of-sequence tokens dropped."""
    check_room(tm, len(tm.tokenizer(prompt)["input_ids"]), settings)  # before encoding would truncate it
    ids = prompt_ids(tm, prompt)
    pad = tm.tokenizer.pad_token_id if tm.tokenizer.pad_token_id is not None else tm.tokenizer.eos_token_id
    out = run_generate(tm.model, torch.tensor([ids], device=tm.device), settings, pad_token_id=pad)
    return ids, strip_end(tm.tokenizer, out[0, len(ids) :].tolist(), prompt)


def strip_end(tokenizer: Any, new: list[int], prompt: str) -> list[int]:
    ends = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    while new and new[-1] in ends:
        new.pop()
    if not new:
        raise InvalidInputError(
            f"the model ended the text right after the prompt {prompt!r}: there is no generated token to explain"
        )
    return new


def continuation_text(tokenizer: Any, ids: list[int], new: list[int]) -> str:
    """The generated text as it follows the prompt: decoded together with the prompt, so a leading space that
    decoding the new tokens alone would drop (word-piece and word-level decoders) is kept."""
    say = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}
    before, after = tokenizer.decode(ids, **say), tokenizer.decode(ids + new, **say)
    return after[len(before) :] if after.startswith(before) else tokenizer.decode(new, **say)


def sequence_encoding(tm: TextModel, prompt: str, ids: list[int], new: list[int]) -> Encoded:
    """The prompt and its continuation as one text, encoded by the tokenizer when that gives back exactly these
    ids (so words are the tokenizer's own), else built from the ids (each generated token its own word)."""
    text = prompt + continuation_text(tm.tokenizer, ids, new)
    full = ids + new
    enc = tm.encode([text])
    if enc.input_ids.shape[1] == len(full) and enc.input_ids[0].tolist() == full:
        return enc
    tokens = tm.tokenizer.convert_ids_to_tokens(full)
    special_ids = set(getattr(tm.tokenizer, "all_special_ids", []))
    return Encoded(
        input_ids=torch.tensor([full], device=tm.device),
        attention_mask=torch.ones(1, len(full), dtype=torch.long, device=tm.device),
        tokens=[tokens],
        word_ids=[[None if t in special_ids else j for j, t in enumerate(full)]],
        offsets=[[(0, 0)] * len(full)],
        special=torch.tensor([[t in special_ids for t in full]], device=tm.device),
        texts=[text],
    )
