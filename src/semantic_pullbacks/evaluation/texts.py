"""The text modality of a benchmark: labelled texts, explained for their class and scored with the text metrics.

A text is explained for its label's class (else the model's prediction), the way an image is. What "class" means
depends on the model: a sequence classifier's logit, or, for an embedding model such as the embedded
all-MiniLM-L6-v2, the cosine similarity of the text to its class's description ("This review is positive."):
zero-shot classification, the one task such a model has. The removal metrics (comprehensiveness, sufficiency,
deletion) judge the explanation by that same quantity. The Sequence Pointing Game runs on pairs of texts of
different classes joined into one, drawn from the targets alone with the run's seed, like Focus mosaics.

Tokenising is cheaper than a hop to a worker process, so text items are decoded in the rank itself.
"""

from __future__ import annotations

import copy
import os
import string
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from semantic_pullbacks.errors import InvalidInputError, UnknownClassError, UnsupportedModelError
from semantic_pullbacks.evaluation.items import Decoder, Inputs, Item, combined_digest, text_digest
from semantic_pullbacks.evaluation.modality import MethodFactory
from semantic_pullbacks.evaluation.seeds import derive_seed
from semantic_pullbacks.evaluation.world import World
from semantic_pullbacks.metrics.presets import Preset
from semantic_pullbacks.text.dataset import TextSet, read_texts
from semantic_pullbacks.text.explain import label_embeddings, token_maps
from semantic_pullbacks.text.metrics import get_text_metric, list_text_metrics, removal_token
from semantic_pullbacks.text.model import DEFAULT_TEXT_MODEL, TextModel, load_text_model, tokenize
from semantic_pullbacks.text.targets import ClassTarget, SimilarityTarget

__all__ = [
    "DEFAULT_TEMPLATE",
    "DEFAULT_TEXT_METHODS",
    "POINTING",
    "TEXT",
    "TextDecoder",
    "TextModality",
    "pointing_pairs",
]

TEXT, POINTING = "text", "pointing"
#: how a class name becomes a label description for a zero-shot embedding model, unless the data says otherwise
DEFAULT_TEMPLATE = "This example is {}."
#: SP and IntegratedPullbacks against their gradient counterparts: the methods with a meaning over token
#: embeddings (SmoothGrad's noise scale and Grad-CAM's layers are image settings)
DEFAULT_TEXT_METHODS = ("SoftPullback", "IntegratedPullbacks", "Gradient", "IntegratedGradients")
_PREDICT_CHUNK = 16  # texts per forward pass when predicting; fixed chunks, so ranks agree on every prediction


@dataclass(frozen=True)
class _Text:
    text: str


@dataclass(frozen=True)
class _Pair:
    ids: tuple[str, str]  # the two texts, in the order they are joined
    texts: tuple[str, str]
    target_first: bool  # whether the first text is of the target's class

    def joined(self, texts: tuple[str, str] | None = None) -> tuple[str, tuple[int, int]]:
        """The joined text and the character span of the target's segment (of ``texts``, the pair's texts
        shortened, when given)."""
        first, second = texts or self.texts
        span = (0, len(first)) if self.target_first else (len(first) + 1, len(first) + 1 + len(second))
        return f"{first} {second}", span

    def record(self) -> list[object]:
        return [list(self.ids), self.target_first]


@dataclass(frozen=True)
class TextDecoder:
    """Tokenises a text item (a pair: the joined text, and the mask of the target's segment), truncated to the
    model's maximum. Inputs: ``x`` the token ids ``(1, T)``; extras ``attention_mask``, ``protected`` (special
    tokens, never removed) and, for pairs, ``segment``."""

    tokenizer: Any
    max_length: int
    in_process: ClassVar[bool] = True

    def __call__(self, item: Item) -> Inputs:
        if item.kind == POINTING:
            text, span = item.source.joined(_shares(self.tokenizer, item.source.texts, self.max_length))
        else:
            text, span = item.source.text, None
        enc = tokenize(self.tokenizer, [text], self.max_length)
        extra = {"attention_mask": enc.attention_mask, "protected": enc.special}
        if span is not None:
            offsets = torch.tensor(enc.offsets[0]).reshape(-1, 2)
            start, end = offsets[:, 0], offsets[:, 1]
            inside = (start >= span[0]) & (end <= span[1]) & (end > start)
            extra["segment"] = (inside[None] & ~enc.special).to(torch.bool)
        return Inputs(enc.input_ids, extra)


def _shares(tokenizer: Any, texts: tuple[str, str], max_length: int) -> tuple[str, str]:
    """The two texts of a pair cut to fit the model's length together, each to its share (half the tokens, more
    when the other needs less): the joined text truncated as one would lose the second segment, in part or whole."""
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    lengths = [len(ids) for ids in enc["input_ids"]]
    if sum(lengths) <= budget:
        return texts
    keep = [min(n, max(budget // 2, budget - other)) for n, other in zip(lengths, lengths[::-1])]
    cut = [t[: offsets[k - 1][1]] if k > 0 else "" for t, offsets, k in zip(texts, enc["offset_mapping"], keep)]
    return cut[0], cut[1]


def _same_device(a: torch.device | str, b: torch.device | str) -> bool:
    """Whether two devices are one: ``cuda`` without an index is the current GPU (a model on ``cuda:0`` is not
    copied for ``cuda``)."""

    def resolved(d: torch.device | str) -> tuple[str, int]:
        d = torch.device(d)
        if d.index is not None:
            return d.type, d.index
        current = torch.cuda.current_device() if d.type == "cuda" and torch.cuda.is_available() else 0
        return d.type, current

    return resolved(a) == resolved(b)


class TextModelBenchmark:
    """What every benchmark over a :class:`~semantic_pullbacks.text.TextModel` shares, whatever it scores: the model
    on the run's device, the seeded subset of texts, the text metrics, and scoring a target on the model's output.
    Subclasses hold ``text_model``, ``texts`` (a :class:`~semantic_pullbacks.text.dataset.TextSet`), ``n_texts`` and
    set ``_module`` (the model's forward over embeddings)."""

    text_model: Any
    texts: Any
    n_texts: int | None
    _module: nn.Module

    @staticmethod
    def on_device(tm: TextModel, device: torch.device | str) -> TextModel:
        """``tm`` on ``device``: a copy is moved there, the caller's model stays where it is."""
        if _same_device(tm.device, device):
            return tm
        return TextModel(copy.deepcopy(tm.model).to(device), tm.tokenizer, tm.kind, tm.name, tm.max_length)

    @property
    def device(self) -> torch.device:
        return self.text_model.device

    @property
    def model_name(self) -> str:
        return self.text_model.name

    @property
    def module(self) -> nn.Module:
        return self._module

    @property
    def method_settings(self) -> dict[str, Any]:
        return {}

    def _subset(self, seed: int) -> list[int]:
        """Indices of ``n_texts`` texts ranked first by a hash of (seed, id), in the data's order (all when None);
        a larger ``n_texts`` adds texts without dropping any."""
        texts = self.texts.texts
        if self.n_texts is None or self.n_texts >= len(texts):
            return list(range(len(texts)))
        ranked = sorted(range(len(texts)), key=lambda i: derive_seed(seed, "text subset", texts[i].id))
        return sorted(ranked[: self.n_texts])

    def metric_settings(self, metric: str, preset: Preset) -> dict[str, Any]:
        return {}

    def build_metric(self, metric: str, settings: Mapping[str, Any], *, batch_size: int, seed: int) -> Any:
        return get_text_metric(metric, **settings)

    def _score_fn(self, target: Any) -> Any:
        """The explained quantity as a function of token ids and mask, so removed tokens are judged by it."""
        tm, module = self.text_model, self._module

        def score_fn(ids: Tensor, mask: Tensor) -> Tensor:
            return target(module(tm.embed(ids), mask))

        return score_fn


def _check_classes(classes: Any) -> None:
    if classes is None or isinstance(classes, str):
        return
    if isinstance(classes, Mapping):
        good = all(isinstance(k, str) and isinstance(v, str) for k, v in classes.items())
    else:
        good = isinstance(classes, Sequence) and all(isinstance(c, str) for c in classes)
    if not good:
        raise InvalidInputError(
            "classes must be class names (a list of strings, or one string 'NEG,POS') or a mapping name -> "
            f"description, got {classes!r}"
        )


def _check_template(template: Any) -> None:
    """Exactly one ``{}`` (a second field, a named one or an escaped ``{{}}`` would fail later, or give every
    class the same description)."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except (TypeError, AttributeError, ValueError):
        fields = None
    if fields is None or fields not in ([""], ["0"]):
        raise InvalidInputError(
            f"template must be a string with exactly one '{{}}' where the class name goes (as in "
            f"{DEFAULT_TEMPLATE!r}), got {template!r}"
        )


def pointing_pairs(targets: Sequence[int], n: int, seed: int) -> list[tuple[int, int, bool]]:
    """``n`` draws of (a text, a text of another class, whether the first is joined first), seeded and depending
    on the targets alone. Every process plans the same pairs."""
    gen = torch.Generator().manual_seed(derive_seed(seed, "pointing pairs"))
    out = []
    for _ in range(n):
        a = int(torch.randint(len(targets), (1,), generator=gen))
        others = [i for i, t in enumerate(targets) if t != targets[a]]
        b = others[int(torch.randint(len(others), (1,), generator=gen))]
        out.append((a, b, bool(torch.randint(2, (1,), generator=gen))))
    return out


@dataclass
class TextModality(TextModelBenchmark):
    """A text benchmark: ``texts`` (``"examples"``, a file, a dataset folder, or a :class:`~semantic_pullbacks.
    text.dataset.TextSet`), ``n_texts`` of them drawn with the seed (default: all), ``n_pairs`` joined pairs for
    the pointing game (default: one per text). Embedding models compare each text with its class's description:
    ``classes`` (names, or a mapping name -> description) and ``template`` (``"This example is {}."``, or the
    data's own) say what those are."""

    text_model: Any
    texts: Any = "examples"
    classes: Sequence[str] | Mapping[str, str] | None = None
    template: str | None = None
    n_texts: int | None = None
    n_pairs: int | None = None
    split: str | None = None
    class_names: list[str] = field(default_factory=list, init=False)
    descriptions: list[str] = field(default_factory=list, init=False)

    name = TEXT
    noun = "texts"

    # ------------------------------------------------------------------------------------------ catalogue
    @classmethod
    def metric_names(cls) -> list[str]:
        return list_text_metrics()

    @classmethod
    def default_metrics(cls) -> list[str]:
        return cls.metric_names()

    @classmethod
    def default_methods(cls) -> list[str]:
        return list(DEFAULT_TEXT_METHODS)

    @classmethod
    def default_preset(cls, options: Mapping[str, Any]) -> str:
        """The methods' full settings (IG's 50 steps): a text costs a few forward passes, not thousands."""
        return "paper"

    @classmethod
    def prepare(cls, **options: Any) -> dict[str, Any]:
        """Read and check the texts before any model loads (a bad file fails in a second)."""
        for name in ("n_texts", "n_pairs"):
            value = options.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidInputError(f"{name} must be a positive int or None, got {value!r}")
        _check_classes(options.get("classes"))
        if options.get("template") is not None:
            _check_template(options["template"])
        texts = options.get("texts", "examples")
        if not isinstance(texts, TextSet):
            texts = read_texts(texts, split=options.get("split"))
        return {**options, "texts": texts}

    @classmethod
    def load(cls, model: Any, device: torch.device, **options: Any) -> TextModality:
        """``model`` (a :class:`~semantic_pullbacks.text.TextModel`, a Hugging Face folder or name; None: the
        embedded MiniLM) on ``device`` (a copy is moved there, the caller's model stays where it is)."""
        if not (model is None or isinstance(model, (TextModel, str, os.PathLike))):
            raise InvalidInputError(
                f"a text benchmark's model is a TextModel, a Hugging Face model folder or hub name, or None (the "
                f"embedded {DEFAULT_TEXT_MODEL}); got {type(model).__name__}"
            )
        tm = model if isinstance(model, TextModel) else load_text_model(model)
        return cls(cls.on_device(tm, device), **options)

    def __post_init__(self) -> None:
        tm = self.text_model
        self._module = tm.forward_module
        self.replace_id = removal_token(tm.tokenizer)
        self.class_names, self.descriptions = self._classes()
        self._references = label_embeddings(tm, self.descriptions) if tm.kind == "embedding" else None

    def _classes(self) -> tuple[list[str], list[str]]:
        """The classes texts are explained for, and (embedding models) the descriptions they are compared with."""
        tm, data = self.text_model, self.texts
        if tm.kind == "seq2seq":
            raise UnsupportedModelError(
                f"evaluate does not score encoder-decoders yet ({tm.name}); explain them with TextExplainer"
            )
        if tm.kind == "causal-lm":
            raise UnsupportedModelError(
                f"evaluate's class-based text mode got {tm.name}, a causal language model: give it as a local "
                "model folder (or a TextModel) to score its continuation tokens, or give a sequence classifier "
                "or an embedding model (zero-shot against label descriptions)"
            )
        if tm.kind == "classifier":
            if self.classes is not None or self.template is not None:
                raise InvalidInputError(
                    f"classes=/template= describe classes to an embedding model; {tm.name} is a classifier with "
                    f"its own labels: {', '.join(tm.labels)}"
                )
            return list(tm.labels), []
        if isinstance(self.classes, Mapping):
            names = [str(k) for k in self.classes]
            return names, [str(self.classes[k]) for k in self.classes]
        if isinstance(self.classes, str):
            names = [c.strip() for c in self.classes.split(",") if c.strip()]
        else:
            names = (
                [str(c) for c in self.classes] if self.classes is not None else list(data.classes or data.label_names())
            )
        if len(names) < 2:
            has_labels = any(t.label is not None for t in data.texts)
            raise InvalidInputError(
                f"the texts of {data.source} name {len(names)} class(es)"
                + (" (their labels are class indices)" if has_labels and not names else "")
                + ": an embedding model compares each text with its class's description, so give the class names "
                "with classes= (--classes NEG,POS)"
            )
        template = self.template or data.template or DEFAULT_TEMPLATE
        return names, [template.format(n) for n in names]

    # ------------------------------------------------------------------------------------------ the model
    def record(self) -> dict[str, Any]:
        """The model and what its classes are, for the run's settings."""
        tm = self.text_model
        return {"name": tm.name, "kind": tm.kind, "max_length": tm.max_length, "classes": self.class_names,
                "descriptions": self.descriptions}  # fmt: skip

    # ------------------------------------------------------------------------------------------ items
    def items(self, world: World, *, metrics: Sequence[str], seed: int, workers: int) -> tuple[list[Item], list[str]]:
        every, label_notes = self._labels()  # an unknown label anywhere fails, not only in the subset
        kept = self._subset(seed)
        texts = [self.texts.texts[i] for i in kept]
        labels = [every[i] for i in kept]
        predicted = self._predictions([t.text for t in texts], world)
        targets = [lab if lab is not None else p for lab, p in zip(labels, predicted)]
        digests = [text_digest(t.text) for t in texts]
        items = [
            Item(t.id, lab, tgt, TEXT, _Text(t.text), d) for t, lab, tgt, d in zip(texts, labels, targets, digests)
        ]
        notes = label_notes + self._notes(texts, labels, predicted)
        if "pointing_game" not in metrics:
            return items, notes
        if len(set(targets)) < 2:
            return items, [
                *notes,
                f"pointing_game skipped: its pairs need texts of 2 classes, these have {len(set(targets))}",
            ]
        for i, (a, b, first) in enumerate(pointing_pairs(targets, self.n_pairs or len(texts), seed)):
            order = (a, b) if first else (b, a)
            pair = _Pair((texts[order[0]].id, texts[order[1]].id), (texts[order[0]].text, texts[order[1]].text), first)
            digest = combined_digest(digests[order[0]], digests[order[1]])
            items.append(Item(f"pair-{i:04d}", labels[a], targets[a], POINTING, pair, digest))  # the label: the data's
        return items, notes

    def _labels(self) -> tuple[list[int | None], list[str]]:
        """Every text's label as an index into :attr:`class_names`, and what the run should say about them. A
        classifier's labels have the model's order, not necessarily the data's: an index label goes through the
        data's name for it, matched by name with the model's labels."""
        data, tm = self.texts, self.text_model
        if tm.kind != "classifier" or not data.has_index_labels():
            return data.class_indices(self.class_names), []
        if not data.classes:
            return data.class_indices(self.class_names), [
                f"the texts' index labels were taken as indices into the labels of {tm.name} ({data.source} names "
                "no classes: give them in its dataset_info.json or dataset card, or label the texts by name)"
            ]
        named = data.named()
        known = {c.lower() for c in self.class_names}
        missing = [
            c for c in dict.fromkeys(t.label for t in named.texts if t.label is not None) if c.lower() not in known
        ]
        if missing:
            raise UnknownClassError(
                f"the class {missing[0]!r} of {data.source} is not among the labels of {tm.name}: "
                f"{', '.join(self.class_names)}; explain these texts with a classifier trained on their classes"
            )
        return named.class_indices(self.class_names), []

    def _predictions(self, texts: Sequence[str], world: World) -> list[int]:
        """The model's class for every text (zero-shot for embedding models): fixed chunks shared out over the
        ranks, so every rank gets the same answers whatever the number of ranks."""
        chunks = range(0, len(texts), _PREDICT_CHUNK)
        mine: dict[int, list[int]] = {}
        for k, start in enumerate(chunks):
            if k % world.size == world.rank:
                mine[start] = self._predict(texts[start : start + _PREDICT_CHUNK])
        for part in world.all_gather(mine, "the texts' predictions"):
            mine.update(part)
        return [c for start in chunks for c in mine[start]]

    def _predict(self, texts: Sequence[str]) -> list[int]:
        tm = self.text_model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # truncation: noted once for the run
            enc = tm.encode(list(texts))
        out = tm.output(enc.input_ids, enc.attention_mask)
        if self._references is not None:
            out = torch.nn.functional.normalize(out, dim=-1) @ self._references.T
        return [int(i) for i in out.argmax(-1).tolist()]

    def _notes(self, texts: Sequence[Any], labels: Sequence[int | None], predicted: Sequence[int]) -> list[str]:
        notes = []
        known = [(lab, p) for lab, p in zip(labels, predicted) if lab is not None]
        if known:
            right = sum(lab == p for lab, p in known)
            how = "zero-shot accuracy" if self._references is not None else "accuracy"
            notes.append(
                f"{how} of {self.text_model.name} on the {len(known)} labelled texts: {right}/{len(known)} "
                f"({100 * right / len(known):.0f}%); each text is explained for its label"
            )
        if len(known) < len(texts):
            notes.append(f"{len(texts) - len(known)} unlabelled texts are explained for the model's prediction")
        lengths = self.text_model.tokenizer([t.text for t in texts])["input_ids"]
        long = sum(len(ids) > self.text_model.max_length for ids in lengths)
        if long:
            notes.append(f"{long} texts are longer than {self.text_model.max_length} tokens: truncated")
        return notes

    def decoder(self) -> Decoder:
        return TextDecoder(self.text_model.tokenizer, self.text_model.max_length)

    # ------------------------------------------------------------------------------------------ scoring
    def metric_kind(self, metric: str) -> str:
        return POINTING if metric == "pointing_game" else TEXT

    def explain(self, method: Any, item: Item, inputs: Inputs) -> Tensor:
        """Signed token relevance ``(1, T)`` (``embedding . map`` summed over the hidden dimension)."""
        signed, _ = token_maps(method, self.text_model, inputs.x, inputs.extra["attention_mask"], [self._target(item)])
        return signed[0]

    def score(
        self, metric: str, scorer: Any, item: Item, inputs: Inputs, explanation: Tensor, method: MethodFactory
    ) -> Tensor:
        """The metric on the explained quantity itself: removed tokens are judged by the same class score."""
        score_fn, mask = self._score_fn(self._target(item)), inputs.extra["attention_mask"]
        return scorer(score_fn, inputs.x, mask, explanation, inputs.extra["protected"], self.replace_id,
                      segment=inputs.extra.get("segment"))  # fmt: skip

    def _target(self, item: Item) -> Any:
        k = item.target
        if self._references is None:
            return ClassTarget(k, self.class_names[k])
        return SimilarityTarget(self._references[k], label=self.descriptions[k])
