"""Other projects' attribution methods for text models, run through this library: LXT's AttnLRP, Captum's
``LayerIntegratedGradients`` on the embedding layer (alone, and inside Captum's ``LLMGradientAttribution`` for causal
LMs), and inseq's saliency, input x gradient, integrated gradients and attention for causal LMs.

>>> TextExplainer(load_text_model(), method="LXT-AttnLRP")                  # doctest: +SKIP

They are found by :func:`get_text_method` (our methods and the image peers too), which ``TextExplainer`` and
``evaluate --texts --methods`` use; importing this package imports none of their packages. Captum comes with the
``text``/``vision`` extras; LXT 2.1 needs transformers < 5, and it and inseq run in the environment of
``benchmarks/envs/text-peers`` (without it, building the method raises
:class:`~semantic_pullbacks.errors.MissingDependencyError` saying so).
"""

from __future__ import annotations

from ...errors import InvalidInputError
from ...methods import get_method
from ...methods.base import Explainer
from ...methods.peers import normalised
from .base import TEXT_PEERS_ENV, TextPeer, require_text_peer
from .captum_layers import CaptumLayerIG
from .captum_llm import CaptumLLMLayerIG
from .inseq_methods import InseqAttention, InseqInputXGradient, InseqIntegratedGradients, InseqSaliency
from .lxt_attnlrp import AttnLRP

#: table name -> text peer
TEXT_PEERS: dict[str, type[TextPeer]] = {
    cls.__name__: cls
    for cls in (
        AttnLRP,
        CaptumLayerIG,
        CaptumLLMLayerIG,
        InseqSaliency,
        InseqInputXGradient,
        InseqIntegratedGradients,
        InseqAttention,
    )
}


def installed_text_peers() -> list[str]:
    """The text peers whose packages import here."""
    out = []
    for name, cls in TEXT_PEERS.items():
        try:
            require_text_peer(cls.requires, name)
        except Exception:
            continue
        out.append(name)
    return out


def get_text_method(name: str) -> type[Explainer]:
    """A text peer by its table name (case and separators ignored), else :func:`~semantic_pullbacks.methods.
    get_method`'s answer."""
    key = normalised(name)
    for known, cls in TEXT_PEERS.items():
        if normalised(known) == key:
            return cls
    try:
        return get_method(name)
    except InvalidInputError as error:
        raise InvalidInputError(f"{error}; text peers: {', '.join(TEXT_PEERS)}") from None


__all__ = [
    "TEXT_PEERS",
    "TEXT_PEERS_ENV",
    "AttnLRP",
    "CaptumLLMLayerIG",
    "CaptumLayerIG",
    "InseqAttention",
    "InseqInputXGradient",
    "InseqIntegratedGradients",
    "InseqSaliency",
    "TextPeer",
    "get_text_method",
    "installed_text_peers",
]
