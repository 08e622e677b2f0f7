"""The language-model modality of a benchmark: every token of a continuation is one item, explained and scored.

A prompt's continuation is given in the file (a ``continuation`` column) or is the model's own greedy one
(``max_new_tokens`` tokens). Each continuation token ``k`` becomes an item: its input is everything before it
(the prompt and the continuation's first ``k`` tokens), its target ``log p(token_k | input)`` at the last
position. The removal metrics (comprehensiveness, sufficiency, deletion) judge the explanation by that same
log-probability, so a row of the table is one generated token, and the summaries, bootstrap intervals and
paired differences are over tokens. There is no pointing game (it needs classes).

``texts="examples"`` is the 40 bundled prompts (``data/texts/prompts.jsonl``). A language model must be given:
there is no embedded one, and a random-weight model only shows that the pipeline runs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from semantic_pullbacks.errors import InvalidInputError, UnsupportedModelError
from semantic_pullbacks.evaluation.items import Decoder, Inputs, Item
from semantic_pullbacks.evaluation.modality import MethodFactory
from semantic_pullbacks.evaluation.texts import TextModelBenchmark
from semantic_pullbacks.evaluation.world import World
from semantic_pullbacks.text.dataset import BUNDLED, TextSet, _records, read_texts
from semantic_pullbacks.text.explain import continuation_positions, token_maps
from semantic_pullbacks.text.generate import GenerationSettings, generate_causal
from semantic_pullbacks.text.metrics import removal_token
from semantic_pullbacks.text.model import TextModel, _kind_from_architectures, load_text_model
from semantic_pullbacks.text.targets import TokenLogProb

__all__ = ["LANGUAGE", "LanguageModality", "is_causal_lm"]

LANGUAGE = "token"  # the kind of item, and the modality's name: reports count "320 tokens"
LM_METRICS = ("comprehensiveness", "sufficiency", "deletion_abc")
#: SP against the gradient (x input) and Integrated Gradients
LM_METHODS = ("SoftPullback", "Gradient", "IntegratedGradients")
DEFAULT_NEW_TOKENS = 8


def is_causal_lm(model: Any) -> bool:
    """Whether ``model`` (a TextModel, a folder or a hub name already on disk) is a causal LM; reads only the
    config, so the choice of modality costs no weights."""
    if isinstance(model, TextModel):
        return model.kind == "causal-lm"
    if not isinstance(model, (str, os.PathLike)):
        return False
    try:
        import transformers

        config = transformers.AutoConfig.from_pretrained(model, local_files_only=True)
    except Exception:
        return False
    return _kind_from_architectures(getattr(config, "architectures", None) or []) == "causal-lm"


@dataclass(frozen=True)
class _Prefix:
    """What one continuation token is predicted from: token ids, ending where the token follows."""

    ids: tuple[int, ...]

    def record(self) -> str:
        return hashlib.sha256(repr(self.ids).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PrefixDecoder:
    """Inputs: ``x`` the prefix ids ``(1, T)``; extras ``attention_mask`` and ``protected`` (special tokens)."""

    special_ids: frozenset[int]
    in_process = True

    def __call__(self, item: Item) -> Inputs:
        ids = torch.tensor([item.source.ids])
        protected = torch.tensor([[i in self.special_ids for i in item.source.ids]])
        return Inputs(ids, {"attention_mask": torch.ones_like(ids), "protected": protected})


def bundled_prompts() -> Path:
    return Path(str(resources.files("semantic_pullbacks").joinpath("data", "texts", "prompts.jsonl")))


def read_prompts(texts: Any) -> tuple[TextSet, tuple[str | None, ...]]:
    """The prompts and their given continuations (None: the model's own)."""
    if isinstance(texts, TextSet):
        return texts, (None,) * len(texts.texts)
    path = bundled_prompts() if isinstance(texts, str) and texts.strip().lower() == BUNDLED else texts
    found = read_texts(path)
    given: list[str | None] = [None] * len(found.texts)
    file = Path(path).expanduser()
    if file.is_file():
        rows = _records(file)
        for n, row in enumerate(rows):
            value = row.get("continuation")
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InvalidInputError(f"texts file {str(file)!r}: row {n + 1} has an empty continuation")
            given[n] = value
    return found, tuple(given)


@dataclass
class LanguageModality(TextModelBenchmark):
    """A language-model benchmark: ``texts`` (``"examples"``: the bundled prompts, or a file with a ``text``
    column and an optional ``continuation`` one), ``n_texts`` of them (default: all), continued greedily by
    ``max_new_tokens`` tokens where no continuation is given."""

    text_model: Any
    texts: Any = BUNDLED
    n_texts: int | None = None
    max_new_tokens: int = DEFAULT_NEW_TOKENS
    given: tuple[str | None, ...] = field(default=())

    name = LANGUAGE
    noun = "tokens"

    @classmethod
    def metric_names(cls) -> list[str]:
        return list(LM_METRICS)

    @classmethod
    def default_metrics(cls) -> list[str]:
        return list(LM_METRICS)

    @classmethod
    def default_methods(cls) -> list[str]:
        return list(LM_METHODS)

    @classmethod
    def default_preset(cls, options: Mapping[str, Any]) -> str:
        return "paper"

    @classmethod
    def prepare(cls, **options: Any) -> dict[str, Any]:
        stray = [k for k in ("classes", "template", "n_pairs", "split") if options.get(k) is not None]
        if stray:
            raise InvalidInputError(f"{', '.join(f'{k}=' for k in stray)} are for classes; a language model has none")
        n = options.get("n_texts")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise InvalidInputError(f"n_texts must be a positive int or None, got {n!r}")
        texts, given = read_prompts(options.get("texts", BUNDLED))
        return {"texts": texts, "given": given, "n_texts": n}

    @classmethod
    def load(cls, model: Any, device: torch.device, **options: Any) -> LanguageModality:
        tm = model if isinstance(model, TextModel) else load_text_model(model)
        if tm.kind != "causal-lm":
            raise UnsupportedModelError(f"{tm.name} is a {tm.kind}, not a causal language model")
        return cls(cls.on_device(tm, device), **options)

    def __post_init__(self) -> None:
        self._module = self.text_model.forward_module
        self.replace_id = removal_token(self.text_model.tokenizer)

    def record(self) -> dict[str, Any]:
        tm = self.text_model
        return {"name": tm.name, "kind": tm.kind, "max_length": tm.max_length, "max_new_tokens": self.max_new_tokens}

    # ------------------------------------------------------------------------------------------ items
    def items(self, world: World, *, metrics: Sequence[str], seed: int, workers: int) -> tuple[list[Item], list[str]]:
        """One item per continuation token (greedy decoding is deterministic, so every rank finds the same)."""
        kept = self._subset(seed)
        every = list(self.given or (None,) * len(self.texts.texts))
        texts, given = [self.texts.texts[i] for i in kept], [every[i] for i in kept]
        items: list[Item] = []
        for text, cont in zip(texts, given):
            ids, new = self._continuation(text.text, cont)
            for k, token in enumerate(new):
                items.append(Item(f"{text.id}/t{k:02d}", None, token, LANGUAGE, _Prefix(tuple(ids + new[:k]))))
        made = sum(c is None for c in given)
        notes = [f"{len(items)} continuation tokens of {len(texts)} prompts; {made} continuations are the model's "
                 f"own greedy {self.max_new_tokens} tokens"]  # fmt: skip
        return items, notes

    def _continuation(self, prompt: str, given: str | None) -> tuple[list[int], list[int]]:
        tm = self.text_model
        if given is None:
            return generate_causal(tm, prompt, GenerationSettings(self.max_new_tokens, None, {}))
        cont = tm.tokenizer(given, add_special_tokens=False)["input_ids"]
        enc = tm.encode([prompt + given])
        at = continuation_positions(enc, 0, cont, tm.tokenizer)
        ids = enc.input_ids[0].tolist()
        return ids[: at[0]], [ids[j] for j in at]

    def decoder(self) -> Decoder:
        return PrefixDecoder(frozenset(getattr(self.text_model.tokenizer, "all_special_ids", [])))

    # ------------------------------------------------------------------------------------------ scoring
    def metric_kind(self, metric: str) -> str:
        return LANGUAGE

    def _target(self, item: Item, inputs: Inputs) -> TokenLogProb:
        return TokenLogProb(int(item.target), (inputs.x.shape[1] - 1,))

    def explain(self, method: Any, item: Item, inputs: Inputs) -> Tensor:
        """Signed token relevance ``(1, T)`` of the prefix for ``log p(token)``."""
        target = self._target(item, inputs)
        signed, _ = token_maps(method, self.text_model, inputs.x, inputs.extra["attention_mask"], [target])
        return signed[0]

    def score(
        self, metric: str, scorer: Any, item: Item, inputs: Inputs, explanation: Tensor, method: MethodFactory
    ) -> Tensor:
        score_fn = self._score_fn(self._target(item, inputs))
        return scorer(score_fn, inputs.x, inputs.extra["attention_mask"], explanation, inputs.extra["protected"],
                      self.replace_id)  # fmt: skip
