"""ImageNet-1k class names, top-k predictions, and turning a user's class spec into a logit index.

Users name targets the way they think of them ("tabby", "espresso", "282"); the methods need an index. The
names ship as a data file inside the package so nothing here needs torchvision or a network.
"""

from __future__ import annotations

import difflib
import numbers
import re
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import NamedTuple

import torch

from semantic_pullbacks.errors import InvalidInputError, UnknownClassError

__all__ = [
    "Prediction",
    "imagenet_classes",
    "resolve_target",
    "search_classes",
    "top_k",
]

_FUZZY_CUTOFF = 0.8
_FUZZY_MARGIN = 0.1
_MAX_LISTED = 8


class Prediction(NamedTuple):
    """One ranked class of one sample: logit index, class name, softmax probability."""

    index: int
    name: str
    prob: float


@lru_cache(maxsize=1)
def _imagenet_tuple() -> tuple[str, ...]:
    text = resources.files("semantic_pullbacks").joinpath("data/imagenet_classes.txt").read_text("utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != 1000:
        raise RuntimeError(f"packaged imagenet_classes.txt has {len(names)} names, expected 1000")
    return names


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in logit order (a fresh list each call, safe to modify)."""
    return list(_imagenet_tuple())


def _names(class_names: Sequence[str] | None) -> Sequence[str]:
    return _imagenet_tuple() if class_names is None else class_names


def top_k(logits: torch.Tensor, k: int = 5, class_names: Sequence[str] | None = None) -> list[list[Prediction]]:
    """The ``k`` most probable classes of every sample, best first.

    ``logits`` is ``(N, C)`` or a single ``(C,)`` vector (treated as one sample); the result always has one
    list per sample. ``class_names`` defaults to ImageNet-1k.

    ```pycon
    >>> top_k(model(x), k=3)[0][0].name
    'tiger cat'
    ```
    """
    names = _names(class_names)
    if logits.ndim == 1:
        logits = logits.unsqueeze(0)
    if logits.ndim != 2:
        raise InvalidInputError(f"logits must have shape (N, C) or (C,), got {tuple(logits.shape)}")
    if logits.shape[1] != len(names):
        raise InvalidInputError(
            f"logits have {logits.shape[1]} classes but class_names has {len(names)}; "
            "pass the class_names that belong to this model"
        )
    if not 1 <= k <= logits.shape[1]:
        raise InvalidInputError(f"k must be between 1 and {logits.shape[1]}, got {k}")
    probs = logits.detach().float().softmax(dim=1).cpu()
    values, indices = probs.topk(k, dim=1)
    return [
        [Prediction(int(i), names[int(i)], float(p)) for p, i in zip(row_p, row_i, strict=True)]
        for row_p, row_i in zip(values, indices, strict=True)
    ]


def _normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def _listing(candidates: Sequence[tuple[int, str]]) -> str:
    shown = ", ".join(f"{i} ({n})" for i, n in candidates[:_MAX_LISTED])
    more = len(candidates) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _fail(message: str, candidates: list[tuple[int, str]]) -> UnknownClassError:
    error = UnknownClassError(message)
    error.candidates = candidates  # type: ignore[attr-defined]
    return error


def _resolve_index(index: int, names: Sequence[str]) -> int:
    if not 0 <= index < len(names):
        raise _fail(f"target index {index} is out of range: the model has classes 0..{len(names) - 1}", [])
    return index


def resolve_target(spec: int | str, class_names: Sequence[str] | None = None) -> int:
    """Turn a class index, numeric string or (approximate) class name into a logit index.

    Names are matched case-insensitively (``_``/``-`` count as spaces): an exact name first, then a unique
    substring, then a clearly best close spelling. Anything ambiguous or unknown raises
    :class:`UnknownClassError` listing the best candidates, because silently explaining the wrong class is
    worse than asking.

    >>> resolve_target("tiger cat"), resolve_target("282"), resolve_target("espreso")
    (282, 282, 967)
    """
    names = _names(class_names)
    if isinstance(spec, bool):
        raise InvalidInputError(f"target must be a class index or name, got the bool {spec!r}")
    if isinstance(spec, numbers.Integral):
        return _resolve_index(int(spec), names)
    if isinstance(spec, torch.Tensor) and spec.numel() == 1 and not spec.is_floating_point():
        return _resolve_index(int(spec.item()), names)
    if not isinstance(spec, str):
        raise InvalidInputError(f"target must be an int or a str, got {type(spec).__name__}")
    text = spec.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return _resolve_index(int(text), names)
    query = _normalise(text)
    if not query:
        raise InvalidInputError("target is an empty string; give a class index or a class name")

    exact_case = [i for i, n in enumerate(names) if n.strip() == text]
    if len(exact_case) == 1:
        return exact_case[0]
    normalised = [_normalise(n) for n in names]
    exact = [i for i, n in enumerate(normalised) if n == query]
    if len(exact) == 1:
        return exact[0]
    if exact:
        found = [(i, names[i]) for i in exact]
        message = f"target {spec!r} names several classes: {_listing(found)}; pass the index instead"
        raise _fail(message, found)

    contains = [i for i, n in enumerate(normalised) if query in n]
    if len(contains) == 1:
        return contains[0]
    if contains:
        found = [(i, names[i]) for i in sorted(contains, key=lambda i: (len(normalised[i]), i))]
        message = f"target {spec!r} matches {_listing(found)}; use a longer name or the index"
        raise _fail(message, found)

    scored = sorted(
        ((difflib.SequenceMatcher(None, query, n).ratio(), i) for i, n in enumerate(normalised)),
        key=lambda t: (-t[0], t[1]),
    )
    best_score, best = scored[0]
    runner_up = scored[1][0] if len(scored) > 1 else 0.0
    if best_score >= _FUZZY_CUTOFF and best_score - runner_up >= _FUZZY_MARGIN:
        return best
    found = [(i, names[i]) for score, i in scored[:5] if score >= 0.5]
    hint = f"; closest: {_listing(found)}" if found else ""
    raise _fail(
        f"target {spec!r} does not name a class{hint}. List names with search_classes() "
        "(CLI: `semantic-pullbacks classes QUERY`) or pass an index",
        found,
    )


def search_classes(query: str = "", class_names: Sequence[str] | None = None, limit: int = 20) -> list[tuple[int, str]]:
    """Classes matching ``query`` as ``(index, name)``, best first: exact, prefix, substring, close spelling.

    An empty query lists the first ``limit`` classes. Meant for a ``classes`` CLI command and UI pickers.
    """
    names = _names(class_names)
    if limit < 1:
        raise InvalidInputError(f"limit must be at least 1, got {limit}")
    q = _normalise(query)
    if not q:
        return [(i, names[i]) for i in range(min(limit, len(names)))]
    normalised = [_normalise(n) for n in names]
    ranked: list[tuple[tuple[int, float, int], int]] = []
    for i, n in enumerate(normalised):
        if n == q:
            key = (0, 0.0, i)
        elif n.startswith(q) or any(word.startswith(q) for word in n.split()):
            key = (1, float(len(n)), i)
        elif q in n:
            key = (2, float(len(n)), i)
        else:
            ratio = max(difflib.SequenceMatcher(None, q, part).ratio() for part in [n, *n.split()])
            if ratio < 0.75:
                continue
            key = (3, len(n) * 1e-4 - ratio, i)  # shorter names win ties
        ranked.append((key, i))
    ranked.sort()
    return [(i, names[i]) for _, i in ranked[:limit]]
