"""Token attributions with a Captum-like call: ``TextExplainer(model).attribute(texts, target=...)``.

Any explanation method of the library runs underneath (SoftPullback by default; Gradient, IntegratedGradients,
their pullback versions ...), on :class:`~.model.EmbeddingsForward`: the pullback of the target with respect to
the input embeddings. What the target is depends on the model:

- classifier: ``target=`` a label name or index (default: the predicted class);
- causal LM: ``continuation=`` text whose tokens are explained (``per_token=True``: one result per token, all from
  one forward pass; otherwise the sum of their log-probabilities), or ``target=`` / ``foil=`` next tokens for a
  contrast ``logit(target) - logit(foil)`` (default target: the model's own next token);
- embedding model: ``pair=`` another text (cosine similarity of the pooled embeddings), or ``labels=`` label
  descriptions (zero-shot: the text's similarity to the best-matching description, or to ``target=``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError, UnknownClassError
from ..methods import LayerTarget, target_value
from . import seq2seq
from .big_models import relevance_dtype
from .checks import check_text
from .generate import generate_causal, generation_settings, sequence_encoding
from .matrix import TokenMatrix
from .model import Encoded, TextModel, _check_texts
from .peers import get_text_method
from .result import TokenAttribution
from .targets import ClassTarget, ContrastTarget, SimilarityTarget, SumOfLogProbs, TokenLogProb, tile

__all__ = ["TextExplainer", "label_embeddings", "token_maps", "token_relevance"]

Target = Callable[[torch.Tensor], torch.Tensor]


def token_relevance(embeddings: torch.Tensor, attribution: torch.Tensor, multiplies_by_inputs: bool = False):  # type: ignore[no-untyped-def]
    """``(signed, l2)`` per token: ``sum_h e * a`` (or ``sum_h a`` for maps that already contain the input), and
    ``||a||_2`` over the hidden dimension, in float32 at least."""
    dtype = relevance_dtype(embeddings, attribution)  # half-precision products summed in float32
    a = attribution.to(dtype)
    signed = a.sum(-1) if multiplies_by_inputs else (embeddings.to(dtype) * a).sum(-1)
    return signed, a.norm(dim=-1)


def token_maps(method: Any, text_model: TextModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               targets: Sequence[Target]) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """``(signed, l2)`` relevance ``(K, B, T)`` of K targets, from one explanation with ``method`` (built on
    ``text_model.forward_module``) over the input embeddings; padding scores 0. Several targets share one
    forward pass."""
    emb = text_model.embed(input_ids)
    args = (attention_mask,)
    if getattr(method, "takes_token_ids", False):  # peers that start from ids, as Captum's layer methods do
        special = torch.isin(input_ids, torch.tensor(text_model.tokenizer.all_special_ids, device=input_ids.device))
        tok = text_model.tokenizer
        maps = torch.stack([method.attribute_tokens(input_ids, attention_mask, t, special, tok) for t in targets])
    elif len(targets) == 1:
        maps = method.attribute(emb, target=targets[0], additional_forward_args=args)[None]
    else:
        maps = method.attribute_targets(emb, list(targets), additional_forward_args=args)
    signed, l2 = token_relevance(emb, maps, getattr(method, "multiplies_by_inputs", False))
    valid = attention_mask != 0
    return signed * valid, l2 * valid


def last_positions(attention_mask: torch.Tensor) -> tuple[int, ...]:
    """Each text's last real token (the index of the last 1 in its mask), whichever side it is padded on."""
    t = attention_mask.shape[1]
    return tuple(t - 1 - int(i) for i in (attention_mask != 0).int().flip(1).argmax(1).tolist())


def continuation_positions(enc: Encoded, i: int, continuation_ids: Sequence[int], tokenizer: Any) -> list[int]:
    """Where text ``i`` of ``enc`` (a prompt joined with ``continuation``) holds the continuation's tokens: its last
    tokens before any special tokens the tokenizer appends (an end-of-sequence token), after at least one token
    (the prompt's, or a beginning-of-sequence token) whose logits predict the first of them.

    The ids found there must be the continuation's own: a continuation that merges with the prompt's last word
    tokenises differently when joined, and explaining other tokens than asked would be a silent wrong answer.
    """
    real = [j for j in range(enc.input_ids.shape[1]) if enc.attention_mask[i, j] != 0]
    while real and bool(enc.special[i, real[-1]]):
        real.pop()  # appended special tokens ([SEP], </s>)
    n = len(continuation_ids)
    if len(real) <= n:
        raise InvalidInputError(
            f"text {i} ({enc.texts[i]!r}) leaves no token before the continuation to predict its first token "
            "(was the joined text truncated?): give a prompt that tokenises to at least one token"
        )
    at = real[-n:]
    if [int(enc.input_ids[i, j]) for j in at] != list(continuation_ids):
        alone = tokenizer.convert_ids_to_tokens(list(continuation_ids))
        raise InvalidInputError(
            f"the continuation tokenises differently after the prompt than alone: alone it is the tokens {alone}, "
            f"but the joined text {enc.texts[i]!r} ends in {[enc.tokens[i][j] for j in real[-n - 1 :]]}. Start "
            "the continuation at a word boundary (e.g. prompt 'The capital of France is', continuation ' Paris'), "
            "or explain the joined text's next token with target="
        )
    return at


def label_embeddings(text_model: TextModel, descriptions: Sequence[str]) -> torch.Tensor:
    """Unit-length pooled embeddings ``(C, H)`` of label descriptions: what zero-shot targets compare with."""
    enc = text_model.encode(list(descriptions))
    return torch.nn.functional.normalize(text_model.output(enc.input_ids, enc.attention_mask), dim=-1)


class TextExplainer:
    """Explain texts with any of the library's methods, differentiating with respect to the input embeddings.

    >>> explainer = TextExplainer(load_text_model())                            # doctest: +SKIP
    >>> explainer.attribute("A man is playing a guitar.", pair="Someone plays music.").top_words(2)
    """

    def __init__(
        self,
        model: TextModel | nn.Module,
        tokenizer: Any = None,
        method: str = "SoftPullback",
        temperatures: Any = None,
        **settings: Any,
    ) -> None:
        self.text_model = model if isinstance(model, TextModel) else TextModel.wrap(model, tokenizer)
        cls = get_text_method(method)
        self.method_name = cls.__name__
        kwargs = dict(settings)
        if temperatures is not None:
            kwargs["temperatures"] = temperatures
        seq = self.text_model.kind == "seq2seq"
        module = seq2seq.Seq2SeqForward(self.text_model.model) if seq else self.text_model.forward_module
        self.explainer = cls(module, **kwargs)

    @property
    def coverage(self) -> Any:
        return getattr(self.explainer, "coverage", None)

    # --- public API -------------------------------------------------------------------------------------------
    def attribute(
        self,
        texts: str | Sequence[str],
        target: int | str | LayerTarget | None = None,
        *,
        pair: str | Sequence[str] | None = None,
        labels: Sequence[str] | None = None,
        continuation: str | None = None,
        foil: str | None = None,
        per_token: bool = False,
        max_new_tokens: int | None = None,
        **generate_kwargs: Any,
    ) -> Any:
        """One :class:`TokenAttribution` per text (a single one for a single string; a list per text of
        per-token results with ``per_token=True``). With ``max_new_tokens=`` the model first writes a
        continuation with its own ``generate`` (``generate_kwargs`` go there; sampling needs ``seed=``) and the
        result is a :class:`~.matrix.TokenMatrix` per prompt, every generated token explained.

        ``target`` may also be a hidden unit: ``Neuron("encoder.layer.3", index=(token, dim))``, a
        :class:`~semantic_pullbacks.methods.Direction` or a :class:`~semantic_pullbacks.methods.Feature` of a
        layer's hidden states (names as in the Hugging Face model's ``named_modules()``)."""
        single = isinstance(texts, str)
        tm = self.text_model
        if max_new_tokens is not None or generate_kwargs or tm.kind == "seq2seq":
            if continuation is not None and max_new_tokens is not None:
                raise InvalidInputError("give continuation= (text to explain) or max_new_tokens= (generate), not both")
            if target is not None or pair is not None or labels is not None or foil is not None:
                raise InvalidInputError("generate and explain takes no target=, pair=, labels= or foil=")
            results = [self._matrix(p, continuation, max_new_tokens, generate_kwargs) for p in _check_texts(texts)]
            return results[0] if single else results
        _check_per_token(per_token, continuation)
        if continuation is not None:
            if tm.kind != "causal-lm":
                raise InvalidInputError("continuation= needs a causal language model")
            results = self._continuation(texts, continuation, per_token)
        else:
            enc = tm.encode(texts)
            targets = [_layer_target(target, pair, labels, foil) or self.target_for(enc, target, pair, labels, foil)]
            results = [r[0] for r in self.explain_encoded(enc, targets)]
        return results[0] if single else results

    # --- targets ----------------------------------------------------------------------------------------------
    def target_for(self, enc: Encoded, target: Any, pair: Any, labels: Any, foil: Any) -> Target:
        """The target callable ``attribute`` would explain for these arguments (also used by the metrics)."""
        tm = self.text_model
        b = enc.input_ids.shape[0]
        if tm.kind == "classifier":
            if pair is not None or labels is not None or foil is not None:
                raise InvalidInputError("a sequence classifier explains a class: use target= (a label or index)")
            return self._class_target(enc, target)
        if tm.kind == "embedding":
            if foil is not None:
                raise InvalidInputError("foil= is for causal language models; an embedding model takes pair=/labels=")
            return self._similarity_target(enc, target, pair, labels)
        if pair is not None or labels is not None:
            raise InvalidInputError(
                "pair=/labels= are for embedding models; a causal LM takes continuation= or target="
            )
        last = last_positions(enc.attention_mask)
        if target is None:
            logits = tm.output(enc.input_ids, enc.attention_mask)
            ids = logits[torch.arange(b), torch.tensor(last)].argmax(-1)
            if len(set(ids.tolist())) > 1 and foil is None:
                raise InvalidInputError("texts predict different next tokens: give target= or explain them one by one")
            target_id = int(ids[0])
        else:
            target_id = self._single_token(target, "target")
        label = tm.tokenizer.decode([target_id])
        if foil is None:
            return TokenLogProb(target_id, last, label=f"next token {label!r}")
        foil_id = self._single_token(foil, "foil")
        if foil_id == target_id:
            raise InvalidInputError(f"foil {foil!r} is the same token as the target: a contrast needs two tokens")
        return ContrastTarget(target_id, foil_id, last, label=f"{label!r} vs {tm.tokenizer.decode([foil_id])!r}")

    def _class_target(self, enc: Encoded, target: Any) -> Target:
        labels = self.text_model.labels
        if target is None:
            logits = self.text_model.output(enc.input_ids, enc.attention_mask)
            ids = logits.argmax(-1)
            if len(set(ids.tolist())) > 1:
                return _PerSample(ids, [labels[int(i)] for i in ids])
            target = int(ids[0])
        if isinstance(target, str):
            lowered = [lab.lower() for lab in labels]
            if target.lower() not in lowered:
                raise UnknownClassError(f"unknown label {target!r}; the model's labels are: {', '.join(labels)}")
            target = lowered.index(target.lower())
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < len(labels):
            raise UnknownClassError(f"target {target!r} is not a class index in 0..{len(labels) - 1}")
        return ClassTarget(target, labels[target])

    def _similarity_target(self, enc: Encoded, target: Any, pair: Any, labels: Any) -> Target:
        tm = self.text_model
        if (pair is None) == (labels is None):
            raise InvalidInputError("an embedding model explains a similarity: give pair= (another text) or labels=")
        _check_labels(labels)
        b = enc.input_ids.shape[0]
        if pair is not None:
            others = [pair] * b if isinstance(pair, str) else list(pair)
            if len(others) != b:
                raise InvalidInputError(f"pair= has {len(others)} texts for {b} texts to explain")
            other = tm.encode(others)
            reference = tm.output(other.input_ids, other.attention_mask)
            return SimilarityTarget(reference, label={i: f"similarity to {o!r}" for i, o in enumerate(others)})
        descriptions = list(labels)
        if len(descriptions) < 2:
            raise InvalidInputError("labels= needs at least two label descriptions")
        refs = label_embeddings(tm, descriptions)
        if target is None:
            mine = torch.nn.functional.normalize(tm.output(enc.input_ids, enc.attention_mask), dim=-1)
            choice = (mine @ refs.T).argmax(-1)
            if len(set(choice.tolist())) > 1:
                return _PerSample(choice, [descriptions[int(i)] for i in choice], refs)
            target = int(choice[0])
        if isinstance(target, str):
            if target not in descriptions:
                raise UnknownClassError(f"unknown label {target!r}; the labels are: {descriptions}")
            target = descriptions.index(target)
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < len(descriptions):
            raise UnknownClassError(f"target {target!r} is not a label index in 0..{len(descriptions) - 1}")
        return SimilarityTarget(refs[target], label=descriptions[target])

    def _single_token(self, text: Any, name: str) -> int:
        if isinstance(text, int) and not isinstance(text, bool):
            return _token_in_vocabulary(text, name, self.text_model)
        if isinstance(text, str):
            check_text(text, name, printable=False)
        ids = self.text_model.tokenizer(str(text), add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise InvalidInputError(
                f"{name} {text!r} is {len(ids)} tokens for this tokenizer; a next-token target must be exactly one "
                "(mind the leading space: ' Paris')"
            )
        return int(ids[0])

    # --- continuation ------------------------------------------------------------------------------------------
    def _continuation(self, texts: Any, continuation: str, per_token: bool) -> list[Any]:
        tm = self.text_model
        prompts = _check_texts(texts)
        if not isinstance(continuation, str) or not continuation:
            raise InvalidInputError("continuation is empty: give the text whose tokens are explained")
        check_text(continuation, "continuation", printable=False)
        cont = tm.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        if not cont:
            raise InvalidInputError(f"continuation {continuation!r} is no token for this tokenizer: give some text")
        enc = tm.encode([p + continuation for p in prompts])
        at = [continuation_positions(enc, i, cont, tm.tokenizer) for i in range(len(prompts))]
        parts = []
        for j, token in enumerate(cont):
            positions = tuple(p[j] - 1 for p in at)  # logits at position t predict token t + 1
            parts.append(TokenLogProb(token, positions, label=f"token {j}: {tm.tokenizer.decode([token])!r}"))
        if per_token:
            results = self.explain_encoded(enc, parts)  # one forward pass, one backward per token
            return [list(r) for r in results]
        target = SumOfLogProbs(tuple(parts), label=f"log p({continuation!r})")
        return [r[0] for r in self.explain_encoded(enc, [target])]

    def _matrix(self, prompt: str, continuation: str | None, max_new_tokens: Any, kwargs: dict[str, Any]) -> Any:
        tm = self.text_model
        if tm.kind == "seq2seq":
            return seq2seq.explain(self.explainer, tm, prompt, continuation, max_new_tokens, kwargs, self.method_name)
        if tm.kind != "causal-lm" and max_new_tokens is None:
            raise InvalidInputError(f"unexpected keyword arguments: {', '.join(sorted(kwargs))}")
        if tm.kind != "causal-lm":
            raise InvalidInputError(
                f"max_new_tokens= generates text: it needs a causal LM or an encoder-decoder, and this is a {tm.kind}"
            )
        if max_new_tokens is None:
            raise InvalidInputError(
                f"{', '.join(sorted(kwargs))}: generation keywords need max_new_tokens= (how many tokens to write)"
            )
        settings = generation_settings(max_new_tokens, kwargs)
        ids, new = generate_causal(tm, prompt, settings)
        enc = sequence_encoding(tm, prompt, ids, new)
        parts = [TokenLogProb(t, (len(ids) + j - 1,), label=f"token {j}: {tm.tokenizer.decode([t])!r}")
                 for j, t in enumerate(new)]  # fmt: skip
        results = self.explain_encoded(enc, parts)[0]  # one forward pass over the whole sequence
        return TokenMatrix.from_results(results, enc.texts[0][len(prompt) :])

    # --- running ----------------------------------------------------------------------------------------------
    def explain_encoded(self, enc: Encoded, targets: list[Target]) -> list[list[TokenAttribution]]:
        """Results per text and target; several targets share one forward pass."""
        tm = self.text_model
        mask = enc.attention_mask
        signed, l2 = token_maps(self.explainer, tm, enc.input_ids, mask, targets)
        with torch.no_grad():
            out = tm.forward_module(tm.embed(enc.input_ids), mask)
            scores = torch.stack([_score(t, tm, enc, out) for t in targets])  # (T, B)
        results = []
        for i in range(enc.input_ids.shape[0]):
            keep = mask[i].nonzero().flatten().tolist()  # the text's own tokens, padded on either side
            special = enc.special[i, keep].tolist()
            row = []
            for k, t in enumerate(targets):
                row.append(
                    TokenAttribution(
                        text=enc.texts[i],
                        tokens=tuple(enc.tokens[i][j] for j in keep),
                        relevance=tuple(signed[k, i, keep].tolist()),
                        l2=tuple(l2[k, i, keep].tolist()),
                        special=tuple(special),
                        offsets=tuple(enc.offsets[i][j] for j in keep),
                        word_ids=tuple(enc.word_ids[i][j] for j in keep),
                        target=_label(t, i),
                        score=float(scores[k, i]),
                        method=self.method_name,
                        model=tm.name,
                        extra=_position(t, i, keep),
                    )
                )
            results.append(row)
        return results


class _PerSample:
    """Different targets per text in one batch (each text's own prediction)."""

    def __init__(self, index: torch.Tensor, labels: list[str], references: torch.Tensor | None = None) -> None:
        self.index, self.labels, self.references = index, labels, references

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(output.shape[0], device=output.device)
        index = tile(self.index.to(output.device), output.shape[0])
        if self.references is None:
            return output[rows, index]
        return SimilarityTarget(self.references[index])(output)

    @property
    def label(self) -> Mapping[int, str]:
        return dict(enumerate(self.labels))


def _position(target: Any, i: int, keep: list[int]) -> dict[str, int]:
    """Where a continuation token sits among the text's own tokens (logits at ``p`` predict token ``p + 1``)."""
    if isinstance(target, TokenLogProb) and target.positions[i] + 1 in keep:
        return {"position": keep.index(target.positions[i] + 1)}
    return {}


def _layer_target(target: Any, pair: Any, labels: Any, foil: Any) -> LayerTarget | None:
    """An internal target (a neuron, direction or latent of a hidden state) as given; it takes no pair/labels/foil."""
    if not isinstance(target, LayerTarget):
        return None
    if pair is not None or labels is not None or foil is not None:
        raise InvalidInputError("a Neuron/Direction/Feature target explains a hidden unit: drop pair=, labels=, foil=")
    return target


def _score(target: Any, tm: TextModel, enc: Encoded, out: torch.Tensor) -> torch.Tensor:
    if isinstance(target, LayerTarget):
        return target_value(tm.forward_module, target, tm.embed(enc.input_ids), enc.attention_mask)
    return target(out)


def _label(target: Any, i: int) -> str:
    label = getattr(target, "label", "")
    return label[i] if isinstance(label, Mapping) else str(label)


def _check_per_token(per_token: Any, continuation: Any) -> None:
    """``per_token`` splits a continuation into its tokens; without one there is nothing to split, and ignoring
    the flag would return another shape than asked for."""
    if not isinstance(per_token, bool):
        raise InvalidInputError(f"per_token must be True or False, got {per_token!r}")
    if per_token and continuation is None:
        raise InvalidInputError(
            "per_token=True explains each token of a continuation=: it needs a causal language model and "
            "continuation= (the CLI: --continuation); leave it out otherwise"
        )


def _check_labels(labels: Any) -> None:
    """``labels`` is a list of descriptions; one string would be read letter by letter."""
    if isinstance(labels, str):
        parts = [p.strip() for p in labels.split(",") if p.strip()]
        raise InvalidInputError(
            f"labels= is one string ({labels!r}); pass a list of label descriptions, e.g. labels={parts!r}"
        )
    if labels is not None and not all(isinstance(d, str) for d in labels):
        raise InvalidInputError("labels= must be a list of strings (label descriptions)")


def _token_in_vocabulary(token: int, name: str, text_model: TextModel) -> int:
    """A token id given as a number must be a row of the model's embedding."""
    rows = text_model.model.get_input_embeddings().num_embeddings
    if not 0 <= token < rows:
        raise InvalidInputError(f"{name} token id {token} is outside the vocabulary (0..{rows - 1})")
    return token
