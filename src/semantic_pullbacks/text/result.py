"""The result of explaining one text: tokens, their relevance, words, and how to show and save them.

``relevance`` is ``embedding . pullback`` summed over the hidden dimension (the text analogue of input x
attribution: signed); ``l2`` is the pullback's L2 norm per token (sign-free). :meth:`words` merges sub-word
tokens into the words of the text (signed scores add; L2 norms combine as the norm of the joined pullback).
It shows itself in a notebook (HTML), in a terminal (rich) and saves to / loads from JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from .views import to_html, to_rich

__all__ = ["TokenAttribution", "WordScore", "load_all", "save_all"]


@dataclass(frozen=True)
class WordScore:
    text: str
    relevance: float
    l2: float
    tokens: tuple[int, ...]  # indices into TokenAttribution.tokens


@dataclass(frozen=True)
class TokenAttribution:
    """Token attributions of one text for one target.

    >>> result = TextExplainer(load_text_model()).attribute("A man plays guitar.", pair="Someone makes music.")
    >>> result.top_words(2)                                     # doctest: +SKIP
    """

    text: str
    tokens: tuple[str, ...]
    relevance: tuple[float, ...]
    l2: tuple[float, ...]
    special: tuple[bool, ...]
    offsets: tuple[tuple[int, int], ...]
    word_ids: tuple[int | None, ...]
    target: str = ""
    score: float = float("nan")
    method: str = ""
    model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tokens)

    # --- words ------------------------------------------------------------------------------------------------
    def words(self) -> list[WordScore]:
        """Sub-word tokens merged into words (special and padding tokens left out)."""
        groups: dict[int, list[int]] = {}
        for i, w in enumerate(self.word_ids):
            if w is not None and not self.special[i]:
                groups.setdefault(w, []).append(i)
        out = []
        for idx in groups.values():
            start, end = self.offsets[idx[0]][0], self.offsets[idx[-1]][1]
            text = self.text[start:end] if end > start else "".join(self.tokens[i] for i in idx)
            out.append(
                WordScore(
                    text.strip(),
                    sum(self.relevance[i] for i in idx),
                    math.sqrt(sum(self.l2[i] ** 2 for i in idx)),
                    tuple(idx),
                )
            )
        return out

    def top_words(self, k: int = 3, signed: bool = True) -> list[WordScore]:
        key = (lambda w: w.relevance) if signed else (lambda w: w.l2)
        return sorted(self.words(), key=key, reverse=True)[:k]

    # --- files ------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["score"] = None if math.isnan(self.score) else self.score
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenAttribution:
        d = dict(d)
        d["score"] = float("nan") if d.get("score") is None else d["score"]
        for key in ("tokens", "relevance", "l2", "special", "word_ids"):
            d[key] = tuple(d[key])
        d["offsets"] = tuple(tuple(o) for o in d["offsets"])
        return cls(**d)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> TokenAttribution:
        """One result saved with :meth:`save`; a file of several (:func:`save_all`) loads with :func:`load_all`."""
        data = _read(path)
        if isinstance(data, list):
            raise InvalidInputError(
                f"{str(path)!r} holds {len(data)} results, not one: read it with "
                "semantic_pullbacks.text.load_all (a list of TokenAttribution)"
            )
        if isinstance(data, dict) and "matrix" in data:
            raise InvalidInputError(f"{str(path)!r} holds a token matrix: read it with TokenMatrix.load")
        return cls.from_dict(data)

    # --- views ------------------------------------------------------------------------------------------------
    def _repr_html_(self) -> str:
        return to_html([self], standalone=False)

    def __rich__(self) -> Any:
        return to_rich(self)


def save_all(results: Sequence[TokenAttribution], path: str | Path) -> Path:
    """Several results in one file: a JSON list of what :meth:`TokenAttribution.save` writes; :func:`load_all`
    reads it back."""
    path = Path(path)
    path.write_text(json.dumps([r.to_dict() for r in results], indent=1))
    return path


def load_all(path: str | Path) -> list[TokenAttribution]:
    """The results :func:`save_all` wrote (a file of one result gives a list of one)."""
    data = _read(path)
    items = data if isinstance(data, list) else [data]
    if not all(isinstance(d, dict) and "tokens" in d for d in items):
        raise InvalidInputError(f"{str(path)!r} is not a file of token attributions (a JSON list of results)")
    return [TokenAttribution.from_dict(d) for d in items]


def _read(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InvalidInputError(f"cannot read {str(path)!r} as a saved explanation: {e}") from None
