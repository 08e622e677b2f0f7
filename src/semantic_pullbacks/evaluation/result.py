"""What a benchmark produced: every row, their statistics, and the summary they make in Markdown.

The result prints itself (:meth:`EvaluationResult.markdown`); :mod:`.report` writes it to files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semantic_pullbacks.evaluation.statistics import PairedDifference, Summary
from semantic_pullbacks.evaluation.store import Row

__all__ = ["EvaluationResult", "arrow", "counted_items", "format_number", "markdown_report"]


@dataclass
class EvaluationResult:
    """What a benchmark produced: every row, and their statistics.

    ``summaries[(method, metric)]`` holds mean ± std and the bootstrap CI; ``differences`` compares each
    pullback method with its gradient counterpart item by item; ``notes`` lists what was skipped and why;
    ``files`` the paths written (empty without ``out``, and on ranks other than 0); ``uses_pullback`` says, per
    method, whether its pass is a soft pullback (the chart colours those).
    """

    rows: list[Row]
    methods: list[str]
    metrics: list[str]
    summaries: dict[tuple[str, str], Summary]
    differences: list[PairedDifference]
    higher_is_better: dict[str, bool]
    notes: list[str]
    config: dict[str, Any]
    #: what each item was, by kind: ``[id, target, labelled, source record]`` (a pair's texts, a mosaic's photos)
    items: dict[str, list[Any]] = field(default_factory=dict)
    out: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    computed_rows: int = 0
    #: per rank: host, scores computed and seconds spent on them (how evenly the work was shared)
    ranks: list[dict[str, Any]] = field(default_factory=list)
    uses_pullback: dict[str, bool] = field(default_factory=dict)

    def scores(self) -> dict[tuple[str, str], dict[str, float]]:
        """``{(method, metric): {item: score}}``."""
        out: dict[tuple[str, str], dict[str, float]] = {}
        for r in self.rows:
            out.setdefault((r.method, r.metric), {})[r.item] = r.score
        return out

    def markdown(self) -> str:
        """The summary report as Markdown (what ``summary.md`` holds)."""
        return markdown_report(self)


def format_number(value: float) -> str:
    """Three significant digits, as the paper's tables print them; ``–`` for NaN."""
    if not math.isfinite(value):
        return "–"
    text = f"{value:.3g}"
    return "0" if text in ("-0", "0") else text


def arrow(higher: bool) -> str:
    return "↑" if higher else "↓"


def _best(result: EvaluationResult, metric: str) -> str | None:
    means = {
        m: s.mean
        for m in result.methods
        if (s := result.summaries.get((m, metric))) is not None and math.isfinite(s.mean)
    }
    if len(means) < 2:
        return None
    pick = max if result.higher_is_better[metric] else min
    return pick(means, key=lambda k: means[k])


def _table(result: EvaluationResult, cell: Any) -> list[str]:
    header = "| method | " + " | ".join(f"{m} {arrow(result.higher_is_better[m])}" for m in result.metrics) + " |"
    lines = [header, "|---|" + "---:|" * len(result.metrics)]
    best = {m: _best(result, m) for m in result.metrics}
    for method in result.methods:
        cells = []
        for metric in result.metrics:
            s = result.summaries.get((method, metric))
            text = "–" if s is None else cell(s)
            if s is not None and best[metric] == method:
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def _mean_std(s: Any) -> str:
    if s.n == 0:
        return "–"
    text = f"{format_number(s.mean)} ± {format_number(s.std)}"
    return text + (f" (n={s.n})" if s.n_nan else "")


def _ci(s: Any) -> str:
    return "–" if s.n == 0 else f"[{format_number(s.ci_low)}, {format_number(s.ci_high)}]"


def counted_items(config: dict[str, Any]) -> tuple[int, str]:
    """How many items of the run's modality (images, texts; not mosaics or joined pairs), and their noun."""
    kind = str(config.get("modality", "image"))
    n = len(config.get("items", {}).get(kind, []))
    return n, f"{kind}{'' if n == 1 else 's'}"


def markdown_report(result: EvaluationResult) -> str:
    """Summary (mean ± std), 95% bootstrap CIs, paired differences against gradient counterparts, notes."""
    cfg = result.config
    n, noun = counted_items(cfg)
    items = f"{noun.rstrip('s')}s"
    model = cfg.get("model", {}).get("name", "?")
    lines = [
        f"# Evaluation: {model}, {n} {noun}, preset `{cfg.get('preset')}`, seed {cfg.get('seed')}",
        "",
        f"Mean ± std over {items} (↑ higher is better, ↓ lower is better; best per column in bold; "
        "n shown where some scores were undefined).",
        "",
        *_table(result, _mean_std),
        "",
        "## 95% bootstrap confidence intervals of the mean",
        "",
        *_table(result, _ci),
    ]
    if result.differences:
        lines += [
            "",
            f"## Pullback methods against their gradient counterparts (paired, same {items})",
            "",
            "Δ = mean(method − baseline) with its 95% bootstrap CI; ratio = mean(method) / mean(baseline); "
            f"median ratio = median over {items} of method / baseline; verdict from the CI and the metric's "
            "direction (n.s.: the CI contains 0).",
            "",
            "| method | baseline | metric | n | method mean | baseline mean | Δ [95% CI] | ratio | median ratio "
            "| verdict |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for d in result.differences:
            verdict = {True: "better", False: "worse", None: "n.s."}[d.method_better]
            lines.append(
                f"| {d.method} | {d.baseline} | {d.metric} {arrow(d.higher_is_better)} | {d.n} | "
                f"{format_number(d.mean_method)} | {format_number(d.mean_baseline)} | "
                f"{format_number(d.mean_diff)} [{format_number(d.ci_low)}, {format_number(d.ci_high)}] | "
                f"{format_number(d.ratio)} | {format_number(d.median_ratio)} | {verdict} |"
            )
    if result.notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in result.notes]]
    return "\n".join(lines) + "\n"
