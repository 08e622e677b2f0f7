"""Target tokens x source tokens: how much each earlier token contributes to each generated (or given) token.

Row ``k`` explains ``log p(target_k | everything before it)``; its columns are the source tokens: the prompt (for
an encoder-decoder, the encoder's input) followed by the decoder-side tokens before the last target. A source
token at or after the target it would explain cannot influence it (causal attention), so that entry is absent:
``NaN``, drawn blank, written ``null`` in JSON. Sub-words merge into words on both axes: merging sources adds
the columns of a word's tokens, merging targets adds their rows (the log-probability of a word is the sum of its
tokens' log-probabilities, and every method here is linear in the target); entries absent from all merged tokens
stay absent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from ..errors import InvalidInputError

__all__ = ["TokenMatrix"]

Aggregate = Literal["sum", "mean", "max"]
FORMAT = "semantic-pullbacks/token-matrix"


@dataclass(frozen=True)
class TokenMatrix:
    """A ``(targets, sources)`` relevance matrix with its tokens, for one prompt and its continuation.

    ``source_words`` / ``target_words`` give each token's word (an index into ``words_text``; ``None`` for special
    tokens); ``scores`` holds each target token's log-probability.
    """

    prompt: str
    continuation: str
    source_tokens: tuple[str, ...]
    target_tokens: tuple[str, ...]
    matrix: torch.Tensor  # (targets, sources), float32, NaN where a source cannot influence the target
    source_words: tuple[int | None, ...]
    target_words: tuple[int | None, ...]
    words_text: tuple[str, ...]
    scores: tuple[float, ...]
    method: str = ""
    model: str = ""
    level: str = "tokens"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.target_tokens), len(self.source_tokens))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TokenMatrix):
            return NotImplemented
        same = [getattr(self, f) == getattr(other, f) for f in _PLAIN]
        return (
            all(same)
            and torch.equal(self.matrix.isnan(), other.matrix.isnan())
            and torch.equal(self.matrix.nan_to_num(), other.matrix.nan_to_num())
        )

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def from_results(cls, results: Sequence[Any], continuation: str) -> TokenMatrix:
        """The matrix of the per-token results of one text, as ``attribute(prompt, continuation=continuation,
        per_token=True)`` gives them."""
        return matrix_from_results(results, continuation)

    # --- reading ------------------------------------------------------------------------------------------------
    def aggregate(self, how: Aggregate = "sum") -> torch.Tensor:
        """One relevance per source token over all target tokens (absent entries left out; a source no target
        can see stays NaN)."""
        present = ~self.matrix.isnan()
        if how == "sum":
            out = self.matrix.nan_to_num().sum(0)
        elif how == "mean":
            out = self.matrix.nan_to_num().sum(0) / present.sum(0).clamp_min(1)
        elif how == "max":
            out = self.matrix.masked_fill(~present, -math.inf).max(0).values
        else:
            raise InvalidInputError(f"aggregate how={how!r}: use 'sum', 'mean' or 'max'")
        return out.masked_fill(~present.any(0), math.nan)

    def words(self) -> TokenMatrix:
        """The same matrix over words on both axes (special tokens left out)."""
        if self.level == "words":
            return self
        src = _groups(self.source_words)
        tgt = _groups(self.target_words)
        cols = torch.stack([_nansum(self.matrix[:, idx], 1) for idx in src.values()], 1) if src else None
        m = cols if cols is not None else self.matrix[:, :0]
        rows = torch.stack([_nansum(m[idx], 0) for idx in tgt.values()], 0) if tgt else m[:0]
        scores = tuple(sum(self.scores[i] for i in idx) for idx in tgt.values())
        return replace(
            self,
            source_tokens=tuple(self.words_text[w] for w in src),
            target_tokens=tuple(self.words_text[w] for w in tgt),
            matrix=rows,
            source_words=tuple(src),
            target_words=tuple(tgt),
            scores=scores,
            level="words",
        )

    # --- files --------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": FORMAT}
        d.update({f: list(v) if isinstance(v, tuple) else v for f in _PLAIN for v in [getattr(self, f)]})
        d["matrix"] = [[None if math.isnan(x) else x for x in row] for row in self.matrix.tolist()]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenMatrix:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise InvalidInputError(
                "not a token-matrix file (no 'format': 'semantic-pullbacks/token-matrix'): a single explanation "
                "loads with TokenAttribution.load"
            )
        plain = {f: tuple(d[f]) if isinstance(d[f], list) else d[f] for f in _PLAIN}
        rows = [[math.nan if x is None else x for x in row] for row in d["matrix"]]
        matrix = torch.tensor(rows, dtype=torch.float32).reshape(len(d["target_tokens"]), len(d["source_tokens"]))
        return cls(matrix=matrix, **plain)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> TokenMatrix:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InvalidInputError(f"cannot read token matrix {str(path)!r}: {e}") from None
        return cls.from_dict(data)

    # --- views --------------------------------------------------------------------------------------------------
    def _repr_html_(self) -> str:
        from .views import matrix_html

        return matrix_html(self, standalone=False)


_PLAIN = ("prompt", "continuation", "source_tokens", "target_tokens", "source_words", "target_words", "words_text",
          "scores", "method", "model", "level", "extra")  # fmt: skip


def _groups(word_of: Sequence[int | None]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, w in enumerate(word_of):
        if w is not None:
            groups.setdefault(w, []).append(i)
    return groups


def _nansum(values: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum leaving absent entries out; absent where every entry is."""
    return values.nan_to_num().sum(dim).masked_fill(values.isnan().all(dim), math.nan)


def build_matrix(rows: torch.Tensor, at: Sequence[int], n_sources: int) -> torch.Tensor:
    """``(targets, sources)`` from per-target relevance over the whole sequence ``(targets, T)``: target ``k``
    sits at sequence position ``at[k]``; sources are positions ``0 .. n_sources - 1``, absent from ``at[k]`` on."""
    m = rows[:, :n_sources].to(torch.float32).clone()
    for k, pos in enumerate(at):
        m[k, pos:] = math.nan
    return m


def check_level(level: str) -> None:
    if level not in ("tokens", "words"):
        raise InvalidInputError(f"level={level!r}: use 'tokens' or 'words'")


def words_of(word_ids: Sequence[int | None], special: Sequence[bool], texts: Sequence[str]) -> tuple[
    tuple[int | None, ...], tuple[str, ...]
]:  # fmt: skip
    """Renumber per-token word ids (``None`` or special: no word) into ``0..W-1`` in order of first appearance,
    with each word's text (``texts`` gives the token's own text, joined per word)."""
    index: dict[Any, int] = {}
    pieces: list[list[str]] = []
    out: list[int | None] = []
    for w, s, t in zip(word_ids, special, texts):
        if w is None or s:
            out.append(None)
            continue
        if w not in index:
            index[w] = len(pieces)
            pieces.append([])
        pieces[index[w]].append(t)
        out.append(index[w])
    return tuple(out), tuple("".join(p).strip() for p in pieces)


def token_texts(result: Any) -> list[str]:
    """Each token's own text (from the character offsets; the token itself where there are none)."""
    return [result.text[a:b] if b > a else tok for tok, (a, b) in zip(result.tokens, result.offsets)]


def matrix_from_results(results: Sequence[Any], continuation: str) -> TokenMatrix:
    """A :class:`TokenMatrix` from the per-token results of one text (``attribute(prompt, continuation=...,
    per_token=True)``): each knows where its target token sits (``extra["position"]``); sources are the tokens
    before the last target."""
    if not results or any("position" not in r.extra for r in results):
        raise InvalidInputError(
            "give the per-token results of one text: attribute(prompt, continuation=..., per_token=True)"
        )
    first = results[0]
    at = [int(r.extra["position"]) for r in results]
    rows = torch.tensor([r.relevance for r in results], dtype=torch.float32)
    n_sources = at[-1]
    word_of, words_text = words_of(first.word_ids, first.special, token_texts(first))
    prompt = first.text[: len(first.text) - len(continuation)] if continuation else first.text
    return TokenMatrix(
        prompt=prompt,
        continuation=continuation,
        source_tokens=first.tokens[:n_sources],
        target_tokens=tuple(first.tokens[j] for j in at),
        matrix=build_matrix(rows, at, n_sources),
        source_words=word_of[:n_sources],
        target_words=tuple(word_of[j] for j in at),
        words_text=words_text,
        scores=tuple(r.score for r in results),
        method=first.method,
        model=first.model,
    )
