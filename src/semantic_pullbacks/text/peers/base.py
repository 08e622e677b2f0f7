"""What the text peers share: they explain a Hugging Face model seen through
:class:`~semantic_pullbacks.text.EmbeddingsForward`, and give relevance per token and hidden unit.

A text peer is built like any method on the embeddings' module (``TextExplainer(model, method="LXT-AttnLRP")``,
``evaluate --texts --methods LXT-AttnLRP``). Peers that start from token ids (Captum's layer methods) say so with
``takes_token_ids``; :func:`~semantic_pullbacks.text.explain.token_maps` then calls :meth:`TextPeer.attribute_tokens`.
Every map here already contains the input (relevance, not a gradient), so ``multiplies_by_inputs`` is set and a
token's signed relevance is the map summed over the hidden dimension.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import torch
from torch import nn

from ...errors import InvalidInputError, MissingDependencyError, UnsupportedModelError
from ...methods.peers.base import EXTRA, PeerExplainer
from ..targets import TokenLogProb, tile

__all__ = ["TEXT_PEERS_ENV", "TextPeer", "require_text_peer"]

#: the documented environment whose transformers the text peers that need transformers < 5 run on
TEXT_PEERS_ENV = "benchmarks/envs/text-peers"
ENV_COMMANDS = f"uv sync --locked --project {TEXT_PEERS_ENV}, then uv run --project {TEXT_PEERS_ENV} ..."


def require_text_peer(modules: tuple[str, ...], method: str) -> None:
    """Import ``modules`` or say how to get them: the ``peers`` extra, or, for a package installed here that fails
    to import with these transformers, the text-peers environment."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as error:
            top = name.split(".")[0]
            if importlib.util.find_spec(top) is None:
                how = f"pip install 'semantic-pullbacks[{EXTRA}]' (in a checkout: uv sync --extra {EXTRA})"
                if top in ("lxt", "inseq"):
                    how = f"in a checkout, run it in its environment: {ENV_COMMANDS}"
                raise MissingDependencyError(
                    f"{method} needs the package {top!r}, which is not installed: {how}"
                ) from error
            import transformers

            raise MissingDependencyError(
                f"{method}: {top!r} is installed but does not import with transformers {transformers.__version__} "
                f"({error}); run it in the environment that pins a working transformers: {ENV_COMMANDS}"
            ) from error


class TextPeer(PeerExplainer):
    """A peer for text models, built on the embeddings' module (``EmbeddingsForward``: ``forward(embeddings,
    attention_mask)``, the Hugging Face model as ``.model``)."""

    multiplies_by_inputs = True
    #: whether the method starts from token ids (then :meth:`attribute_tokens` is what runs)
    takes_token_ids = False
    #: whether the method explains only next-token log-probabilities of causal LMs (not classes or similarities)
    causal_lm_only = False

    def __init__(self, model: nn.Module, **kwargs: Any) -> None:
        require_text_peer(self.requires, type(self).__name__)
        nn_model = getattr(model, "model", None)
        if not isinstance(model, nn.Module) or not hasattr(nn_model, "get_input_embeddings"):
            raise UnsupportedModelError(
                f"{type(self).__name__} explains Hugging Face text models through their embeddings: build it on "
                "TextModel.forward_module, or use TextExplainer(model, method=...), not on "
                f"{type(model).__name__}"
            )
        super(PeerExplainer, self).__init__(model, **kwargs)

    @property
    def hf_model(self) -> nn.Module:
        return self.model.model

    def attribute_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target: Any,
                         special: torch.Tensor | None = None, tokenizer: Any = None) -> torch.Tensor:  # fmt: skip
        """Relevance ``(B, T, H)`` of ``target`` (a callable on the module's output) for these token ids
        (``special``: the special tokens' mask; ``tokenizer``: the model's, for peers that read text)."""
        raise NotImplementedError

    def _each_next_token(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target: Any, tokenizer: Any,
                         how: str) -> torch.Tensor:  # fmt: skip
        """For the peers that explain one next token at a time (``causal_lm_only``): ``self._one(ids, mask,
        position, token, tokenizer)`` for each text, stacked; ``how`` says, in the error for any other target, how
        the peer scores a token."""
        if not isinstance(target, TokenLogProb) or tokenizer is None:
            raise InvalidInputError(
                f"{type(self).__name__} explains the log-probability of one next token (target= or continuation= "
                f"with per_token=True), {how}"
            )
        positions = tile(torch.tensor(target.positions), input_ids.shape[0]).tolist()
        rows = [self._one(input_ids[i], attention_mask[i], int(p), target.token_id, tokenizer)
                for i, p in enumerate(positions)]  # fmt: skip
        return torch.stack(rows)

    def _one(self, ids: torch.Tensor, mask: torch.Tensor, position: int, token: int, tokenizer: Any) -> torch.Tensor:
        """One text's relevance ``(T, H)`` for ``token`` following ``position`` (what :meth:`_each_next_token`
        stacks)."""
        raise NotImplementedError
