"""Tokens coloured by signed relevance: rich text for terminals, self-contained HTML, a PNG figure.

Colours: red for relevance towards the target, blue against it, intensity relative to the largest absolute
relevance in the text (so each text is read on its own scale, and the scale is printed).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "MatrixScores",
    "TokenScores",
    "matrix_html",
    "matrix_rich",
    "save_html",
    "save_matrix_html",
    "save_matrix_png",
    "save_png",
    "to_html",
    "to_rich",
]


class _Word(Protocol):
    @property
    def text(self) -> str: ...

    @property
    def relevance(self) -> float: ...


class TokenScores(Protocol):
    """What a view reads of a result (a :class:`~.result.TokenAttribution`, which shows itself through these
    views): its tokens or words with their relevance, and what its heading names."""

    @property
    def tokens(self) -> Sequence[str]: ...

    @property
    def relevance(self) -> Sequence[float]: ...

    @property
    def special(self) -> Sequence[bool]: ...

    @property
    def target(self) -> str: ...

    @property
    def method(self) -> str: ...

    @property
    def score(self) -> float: ...

    def words(self) -> Sequence[_Word]: ...


def _units(result: TokenScores, level: str) -> list[tuple[str, float]]:
    if level == "words":
        return [(w.text, w.relevance) for w in result.words()]
    return [(t, r) for t, r, s in zip(result.tokens, result.relevance, result.special) if not s]


def _scale(values: Sequence[float]) -> float:
    return max((abs(v) for v in values), default=0.0) or 1.0


def _rgb(value: float, scale: float) -> tuple[int, int, int]:
    a = max(-1.0, min(1.0, value / scale))
    if a >= 0:
        return 255, int(255 * (1 - a)), int(255 * (1 - a))
    return int(255 * (1 + a)), int(255 * (1 + a)), 255


def _ink(value: float, scale: float) -> str:
    """Text colour that stays readable on a strong background."""
    return "white" if abs(value) / scale > 0.6 else "black"


def to_rich(result: TokenScores, level: str = "words") -> Any:
    from rich.text import Text

    units = _units(result, level)
    scale = _scale([v for _, v in units])
    text = Text()
    if result.target:
        text.append(f"{result.method or 'attribution'} for {result.target!r}", style="bold")
        text.append(f" (score {result.score:.4g}; colour scale ±{scale:.3g})\n")
    for token, value in units:
        r, g, b = _rgb(value, scale)
        text.append(token, style=f"{_ink(value, scale)} on rgb({r},{g},{b})")
        text.append(" ")
    return text


def to_html(results: Sequence[TokenScores], level: str = "words", standalone: bool = True, title: str = "") -> str:
    """One block per result; no scripts, fonts or images from elsewhere."""
    blocks = []
    for res in results:
        units = _units(res, level)
        scale = _scale([v for _, v in units])
        spans = []
        for token, value in units:
            r, g, b = _rgb(value, scale)
            style = f"background:rgb({r},{g},{b});color:{_ink(value, scale)}"
            spans.append(f'<span class="tok" style="{style}" title="{value:+.4g}">{html.escape(token)}</span>')
        head = html.escape(f"{res.method} for {res.target!r}" if res.target else res.method)
        blocks.append(
            f'<div class="sp-text"><div class="sp-head">{head} <small>(score {res.score:.4g}; '
            f"scale ±{scale:.3g})</small></div><div>{' '.join(spans)}</div></div>"
        )
    body = "\n".join(blocks)
    style = (
        "<style>.sp-text{font-family:sans-serif;margin:0.6em 0;line-height:2}.tok{padding:2px 3px;"
        "border-radius:3px}.sp-head{font-weight:bold}</style>"
    )
    if not standalone:
        return style + body
    legend = "<p>red: towards the target; blue: against it. Hover a word for its relevance.</p>"
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title or 'token attributions')}"
        f"</title>{style}</head><body>{legend}{body}</body></html>"
    )


def save_html(results: Sequence[TokenScores], path: str | Path, level: str = "words") -> Path:
    path = Path(path)
    path.write_text(to_html(results, level), encoding="utf-8")
    return path


def save_png(results: Sequence[TokenScores], path: str | Path, level: str = "words", dpi: int = 200) -> Path:
    """A figure for papers: each text as a row of coloured words, wrapped at a fixed width."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows: list[list[tuple[str, float, float]]] = []
    for res in results:
        units = _units(res, level)
        scale = _scale([v for _, v in units])
        rows.append([(f"{res.method} for {res.target!r} (score {res.score:.3g}, scale ±{scale:.2g})", 0.0, -1.0)])
        line: list[tuple[str, float, float]] = []
        width = 0
        for token, value in units:
            if width + len(token) > 60 and line:
                rows.append(line)
                line, width = [], 0
            line.append((token, value, scale))
            width += len(token) + 1
        rows.append(line)
        rows.append([])
    fig = plt.figure(figsize=(8, 0.32 * max(len(rows), 1) + 0.2))
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    y = 1.0 - 0.5 / max(len(rows), 1)
    for line in rows:
        x = 0.01
        for token, value, scale in line:
            if scale < 0:  # a heading
                fig.text(x, y, token, fontsize=9, family="DejaVu Sans", va="center", style="italic")
                continue
            r, g, b = _rgb(value, scale)
            t = fig.text(x, y, token, fontsize=10, family="DejaVu Sans", va="center", color=_ink(value, scale),
                         bbox={"facecolor": (r / 255, g / 255, b / 255), "edgecolor": "none", "pad": 1.5})  # fmt: skip
            x += t.get_window_extent(renderer).width / fig.bbox.width + 0.008
        y -= 1.0 / max(len(rows), 1)
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


class MatrixScores(Protocol):
    """What a heatmap reads of a :class:`~.matrix.TokenMatrix`."""

    @property
    def source_tokens(self) -> Sequence[str]: ...

    @property
    def target_tokens(self) -> Sequence[str]: ...

    @property
    def matrix(self) -> Any: ...

    @property
    def method(self) -> str: ...

    @property
    def prompt(self) -> str: ...

    @property
    def continuation(self) -> str: ...

    def words(self) -> MatrixScores: ...


def _cells(result: MatrixScores, level: str) -> tuple[MatrixScores, list[list[float]], float]:
    shown = result.words() if level == "words" else result
    values = shown.matrix.tolist()
    return shown, values, _scale([v for row in values for v in row if v == v])


def matrix_html(result: MatrixScores, level: str = "words", standalone: bool = True) -> str:
    """A table: one row per target (generated) token, one column per source token; absent entries blank."""
    shown, values, scale = _cells(result, level)
    head = "".join(f'<th class="src">{html.escape(t)}</th>' for t in shown.source_tokens)
    rows = []
    for token, row in zip(shown.target_tokens, values):
        cells = []
        for v in row:
            if v != v:  # NaN: this source comes at or after the target
                cells.append('<td class="na"></td>')
                continue
            r, g, b = _rgb(v, scale)
            cells.append(f'<td style="background:rgb({r},{g},{b})" title="{v:+.4g}"></td>')
        rows.append(f'<tr><th class="tgt">{html.escape(token)}</th>{"".join(cells)}</tr>')
    title = html.escape(f"{result.method}: {result.prompt!r} -> {result.continuation!r}")
    table = (
        f'<div class="sp-matrix"><div class="sp-head">{title} <small>(scale ±{scale:.3g}; rows: generated '
        f"tokens, columns: the tokens before them)</small></div><table><tr><th></th>{head}</tr>{''.join(rows)}"
        "</table></div>"
    )
    style = (
        "<style>.sp-matrix{font-family:sans-serif}.sp-matrix table{border-collapse:collapse}.sp-matrix td{width:1.6em;"
        "height:1.4em;border:1px solid #eee}.sp-matrix td.na{background:#f4f4f4}.sp-matrix th.src{writing-mode:"
        "vertical-rl;transform:rotate(180deg);font-weight:normal}.sp-matrix th.tgt{text-align:right;"
        "font-weight:normal;padding-right:0.4em}.sp-head{font-weight:bold;margin:0.4em 0}</style>"
    )
    if not standalone:
        return style + table
    legend = "<p>red: towards the generated token; blue: against it; grey: cannot influence it.</p>"
    head_html = f"<head><meta charset='utf-8'><title>{title}</title>{style}</head>"
    return f"<!DOCTYPE html><html>{head_html}<body>{legend}{table}</body></html>"


def save_matrix_html(result: MatrixScores, path: str | Path, level: str = "words") -> Path:
    path = Path(path)
    path.write_text(matrix_html(result, level), encoding="utf-8")
    return path


def save_matrix_png(result: MatrixScores, path: str | Path, level: str = "words", dpi: int = 150) -> Path:
    """The heatmap as a figure: rows generated tokens, columns source tokens, absent entries grey."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    shown, values, scale = _cells(result, level)
    data = np.ma.masked_invalid(np.array(values, dtype=float).reshape(len(shown.target_tokens), -1))
    cmap = plt.get_cmap("bwr").with_extremes(bad="#eeeeee")
    n_rows, n_cols = data.shape
    fig, ax = plt.subplots(figsize=(max(3.0, 0.3 * n_cols + 1.5), max(2.0, 0.3 * n_rows + 1.2)))
    ax.imshow(data, cmap=cmap, vmin=-scale, vmax=scale, aspect="auto")
    ax.set_xticks(range(n_cols), list(shown.source_tokens), rotation=90, fontsize=8)
    ax.set_yticks(range(n_rows), list(shown.target_tokens), fontsize=8)
    ax.set_title(f"{result.method} (scale ±{scale:.2g})", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def matrix_rich(result: MatrixScores, level: str = "words") -> Any:
    """The prompt coloured by its relevance summed over every generated token, then the generated text."""
    from rich.text import Text

    shown, values, _ = _cells(result, level)
    first = values[0] if values else []
    prompt = [j for j, v in enumerate(first) if v == v]  # what the first generated token sees: the prompt
    totals = [sum(row[j] for row in values if row[j] == row[j]) for j in prompt]
    scale = _scale(totals)
    text = Text()
    text.append(f"{result.method or 'attribution'}, summed over {len(shown.target_tokens)} generated tokens", "bold")
    text.append(f" (colour scale ±{scale:.3g})\n")
    for j, total in zip(prompt, totals):
        r, g, b = _rgb(total, scale)
        text.append(shown.source_tokens[j], style=f"{_ink(total, scale)} on rgb({r},{g},{b})")
        text.append(" ")
    text.append(result.continuation.strip(), style="bold underline")
    return text
