"""The app's Text tab: explain the embedded all-MiniLM-L6-v2, offline, in two demos.

- **Why are these two texts similar?** Words coloured by their share of the cosine similarity.
- **Zero-shot classification**: the text against label descriptions ("This review is positive." / "... negative.");
  the best-matching description is explained.
- **Generate and explain**: a causal LM or encoder-decoder from a local model folder (never downloaded) writes a
  greedy continuation; the heatmap shows every generated token (rows) against the tokens before it (columns).

:func:`explain_text` is the request (no web framework, unit-tested directly); :func:`with_text_tab` puts the
image page and this tab side by side, so the image page's own code stays as it is.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError
from ..text import TextExplainer, TextModel, load_text_model, to_html
from ..text.views import matrix_html

__all__ = ["MODES", "TEXT_METHODS", "TextAnswer", "explain_text", "generate_and_explain", "with_text_tab"]

MODES = ("Similarity to another text", "Zero-shot labels", "Generate and explain (local model folder)")
MAX_NEW_TOKENS = 64
TEXT_METHODS = ("SoftPullback", "Gradient", "IntegratedGradients", "IntegratedPullbacks")
DEFAULT_PAIR = ("A man is playing a guitar on stage.", "The guitar sounds beautiful.")
DEFAULT_LABELS = "This review is positive.\nThis review is negative."
MAX_CHARS = 2000


@dataclass(frozen=True)
class TextAnswer:
    html: str
    summary: str


def explain_text(text: str, mode: str, other: str, method: str = "SoftPullback", max_new_tokens: Any = 8) -> TextAnswer:
    """One request of the Text tab: validate, explain with the embedded model (or, generating, the model in the
    folder named in ``other``), render."""
    for name, value in (("text", text), ("mode", mode), ("other", other), ("method", method)):
        if value is not None and not isinstance(value, str):
            raise InvalidInputError(f"{name} must be a string, got {type(value).__name__}")
    if mode == MODES[2]:
        return generate_and_explain(text, other, max_new_tokens, method)
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


def generate_and_explain(prompt: str, folder: str, max_new_tokens: Any, method: str = "SoftPullback") -> TextAnswer:
    """The model in a local folder continues the prompt; every generated token is explained."""
    if not prompt or not prompt.strip():
        raise InvalidInputError("Text is empty: type a prompt for the model to continue")
    if len(prompt) > MAX_CHARS:
        raise InvalidInputError(f"texts are limited to {MAX_CHARS} characters here")
    if method not in TEXT_METHODS:
        raise InvalidInputError(f"unknown method {method!r}; choose one of {', '.join(TEXT_METHODS)}")
    n = int(max_new_tokens) if isinstance(max_new_tokens, (int, float)) and max_new_tokens == int(max_new_tokens) else 0
    if not 1 <= n <= MAX_NEW_TOKENS:
        raise InvalidInputError(f"new tokens must be a whole number from 1 to {MAX_NEW_TOKENS}, got {max_new_tokens!r}")
    tm = _local_model((folder or "").strip())
    m = TextExplainer(tm, method=method).attribute(prompt, max_new_tokens=n)
    by_word = m.words()
    totals = by_word.aggregate("sum").tolist()
    seen = [j for j, v in enumerate(totals) if v == v]  # NaN: a word no generated token sees
    top = sorted(seen, key=lambda j: totals[j], reverse=True)[:3]
    words = ", ".join(f"**{html.escape(by_word.source_tokens[j])}** ({totals[j]:+.3f})" for j in top)
    summary = f"{m.method}: generated **{html.escape(m.continuation.strip())}**. Most relevant overall: {words}"
    return TextAnswer(matrix_html(m, standalone=False), summary)


_LOADED: dict[str, TextModel] = {}


def _local_model(folder: str) -> TextModel:
    """A model folder on this machine, loaded once (the last one kept); never a download."""
    if not folder:
        raise InvalidInputError("give the path of a local model folder (saved with save_pretrained)")
    from pathlib import Path

    if not Path(folder).expanduser().is_dir():
        raise InvalidInputError(f"{folder!r} is not a folder on this machine: give a local model folder")
    if folder not in _LOADED:
        tm = load_text_model(folder, offline=True)
        if tm.kind not in ("causal-lm", "seq2seq"):
            raise InvalidInputError(f"{folder!r} holds a {tm.kind}; generating needs a causal LM or an encoder-decoder")
        _LOADED.clear()
        _LOADED[folder] = tm
    return _LOADED[folder]


def _build_tab(gr: Any, error: Any) -> None:
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=320):
            text = gr.Textbox(value=DEFAULT_PAIR[0], label="Text", lines=3, elem_id="text-input")
            mode = gr.Radio(list(MODES), value=MODES[0], label="Explain", elem_id="text-mode")
            other = gr.Textbox(
                value=DEFAULT_PAIR[1], lines=3,
                label="Other text (similarity), label descriptions one per line, or a local model folder (generate)",
                elem_id="text-other",
            )  # fmt: skip
            new_tokens = gr.Number(value=8, label="New tokens (generate and explain)", precision=0, minimum=1,
                                   maximum=MAX_NEW_TOKENS, elem_id="text-new-tokens")  # fmt: skip
            method = gr.Dropdown(list(TEXT_METHODS), value=TEXT_METHODS[0], label="Method", elem_id="text-method")
            run = gr.Button("Explain text", variant="primary", elem_id="text-explain")
        with gr.Column(scale=7, min_width=480):
            out = gr.HTML(elem_id="text-result")
            summary = gr.Markdown(elem_id="text-summary")

    def on_mode(m: str) -> Any:
        return gr.update(value={MODES[0]: DEFAULT_PAIR[1], MODES[1]: DEFAULT_LABELS}.get(m, ""))

    def on_explain(t: str, m: str, o: str, meth: str, n: Any) -> tuple[str, str]:
        try:
            answer = explain_text(t, m, o, meth, n)
        except Exception as e:  # shown to the user, never a traceback
            raise error(e) from e
        return answer.html, answer.summary

    mode.change(on_mode, [mode], [other], queue=False)
    inputs = [text, mode, other, method, new_tokens]
    run.click(on_explain, inputs, [out, summary], concurrency_id="model", concurrency_limit=1)


def with_text_tab(images: Any, error: Any) -> Any:
    """A page with the image explorer (``images``, an already built Blocks) and the Text tab."""
    import gradio as gr

    with gr.Blocks(title="Semantic Pullbacks", analytics_enabled=False, delete_cache=(1800, 3600)) as page:
        with gr.Tab("Images", elem_id="tab-images"):
            images.render()
        with gr.Tab("Text", elem_id="tab-text"):
            _build_tab(gr, error)
    return page
