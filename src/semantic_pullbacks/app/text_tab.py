"""The app's Text tab: explain the embedded all-MiniLM-L6-v2, offline, in two demos.

- **Why are these two texts similar?** Words coloured by their share of the cosine similarity.
- **Zero-shot classification**: the text against label descriptions ("This review is positive." / "... negative.");
  the best-matching description is explained.

:func:`explain_text` is the request (no web framework, unit-tested directly); :func:`with_text_tab` puts the
image page and this tab side by side, so the image page's own code stays as it is.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError
from ..text import TextExplainer, load_text_model, to_html

__all__ = ["MODES", "TEXT_METHODS", "TextAnswer", "explain_text", "with_text_tab"]

MODES = ("Similarity to another text", "Zero-shot labels")
TEXT_METHODS = ("SoftPullback", "Gradient", "IntegratedGradients", "IntegratedPullbacks")
DEFAULT_PAIR = ("A man is playing a guitar on stage.", "The guitar sounds beautiful.")
DEFAULT_LABELS = "This review is positive.\nThis review is negative."
MAX_CHARS = 2000


@dataclass(frozen=True)
class TextAnswer:
    html: str
    summary: str


def explain_text(text: str, mode: str, other: str, method: str = "SoftPullback") -> TextAnswer:
    """One request of the Text tab: validate, explain with the embedded model, render."""
    for name, value in (("text", text), ("mode", mode), ("other", other), ("method", method)):
        if value is not None and not isinstance(value, str):
            raise InvalidInputError(f"{name} must be a string, got {type(value).__name__}")
    if not text or not text.strip():
        raise InvalidInputError("Text is empty: type a sentence to explain")
    if len(text) > MAX_CHARS or len(other or "") > MAX_CHARS:
        raise InvalidInputError(f"texts are limited to {MAX_CHARS} characters here")
    if method not in TEXT_METHODS:
        raise InvalidInputError(f"unknown method {method!r}; choose one of {', '.join(TEXT_METHODS)}")
    explainer = TextExplainer(load_text_model(), method=method)
    if mode == MODES[0]:
        if not other or not other.strip():
            raise InvalidInputError("Other text is empty: give the text to compare with")
        result = explainer.attribute(text, pair=other.strip())
    elif mode == MODES[1]:
        labels = [line.strip() for line in (other or "").splitlines() if line.strip()]
        if len(labels) < 2:
            raise InvalidInputError("give at least two label descriptions, one per line")
        result = explainer.attribute(text, labels=labels)
    else:
        raise InvalidInputError(f"unknown mode {mode!r}")
    top = ", ".join(f"**{html.escape(w.text)}** ({w.relevance:+.3f})" for w in result.top_words(3))
    summary = f"{result.method}: {html.escape(result.target)} — cosine {result.score:.3f}. Top words: {top}"
    return TextAnswer(to_html([result], standalone=False), summary)


def _build_tab(gr: Any, error: Any) -> None:
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=320):
            text = gr.Textbox(value=DEFAULT_PAIR[0], label="Text", lines=3, elem_id="text-input")
            mode = gr.Radio(list(MODES), value=MODES[0], label="Explain", elem_id="text-mode")
            other = gr.Textbox(
                value=DEFAULT_PAIR[1], label="Other text (similarity) or label descriptions, one per line", lines=3,
                elem_id="text-other",
            )  # fmt: skip
            method = gr.Dropdown(list(TEXT_METHODS), value=TEXT_METHODS[0], label="Method", elem_id="text-method")
            run = gr.Button("Explain text", variant="primary", elem_id="text-explain")
        with gr.Column(scale=7, min_width=480):
            out = gr.HTML(elem_id="text-result")
            summary = gr.Markdown(elem_id="text-summary")

    def on_mode(m: str) -> Any:
        return gr.update(value=DEFAULT_PAIR[1] if m == MODES[0] else DEFAULT_LABELS)

    def on_explain(t: str, m: str, o: str, meth: str) -> tuple[str, str]:
        try:
            answer = explain_text(t, m, o, meth)
        except Exception as e:  # shown to the user, never a traceback
            raise error(e) from e
        return answer.html, answer.summary

    mode.change(on_mode, [mode], [other], queue=False)
    run.click(on_explain, [text, mode, other, method], [out, summary], concurrency_id="model", concurrency_limit=1)


def with_text_tab(images: Any, error: Any) -> Any:
    """A page with the image explorer (``images``, an already built Blocks) and the Text tab."""
    import gradio as gr

    with gr.Blocks(title="Semantic Pullbacks", analytics_enabled=False, delete_cache=(1800, 3600)) as page:
        with gr.Tab("Images", elem_id="tab-images"):
            images.render()
        with gr.Tab("Text", elem_id="tab-text"):
            _build_tab(gr, error)
    return page
