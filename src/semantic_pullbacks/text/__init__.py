"""Text and transformer models: token attributions for Hugging Face classifiers, embedding models and LMs.

>>> from semantic_pullbacks.text import TextExplainer, load_text_model
>>> explainer = TextExplainer(load_text_model())        # the embedded all-MiniLM-L6-v2, offline
>>> result = explainer.attribute("A man is playing a guitar.", pair="Someone plays music.")   # doctest: +SKIP
>>> result.top_words(2)                                                                      # doctest: +SKIP

The input space is the token embeddings; relevance per token is ``embedding . pullback``.
"""

from .explain import TextExplainer, token_relevance
from .matrix import TokenMatrix
from .model import DEFAULT_TEXT_MODEL, EmbeddingsForward, Encoded, TextModel, load_text_model
from .result import TokenAttribution, WordScore, load_all, save_all
from .targets import ClassTarget, ContrastTarget, SimilarityTarget, SumOfLogProbs, TokenLogProb
from .views import save_html, save_png, to_html, to_rich

__all__ = [
    "DEFAULT_TEXT_MODEL",
    "ClassTarget",
    "ContrastTarget",
    "EmbeddingsForward",
    "Encoded",
    "SimilarityTarget",
    "SumOfLogProbs",
    "TextExplainer",
    "TextModel",
    "TokenAttribution",
    "TokenLogProb",
    "TokenMatrix",
    "WordScore",
    "load_all",
    "load_text_model",
    "save_all",
    "save_html",
    "save_png",
    "to_html",
    "to_rich",
    "token_relevance",
]
