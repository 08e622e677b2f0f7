"""Reports of a benchmark on disk: the Markdown summary, a JSON summary, a bar chart, and optionally Parquet scores.

Written atomically by rank 0 at the end of a run (and again after a resume), from the merged rows alone, so a
report always matches ``scores.csv``. Charts use matplotlib's Figure API on the Agg canvas: no pyplot global
state, safe in threads and on headless machines.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from semantic_pullbacks.evaluation.result import EvaluationResult, arrow, counted_items, markdown_report
from semantic_pullbacks.evaluation.store import FIELDS, atomic_write

__all__ = ["write_chart", "write_reports"]


def _summary_json(result: EvaluationResult) -> dict[str, Any]:
    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return {
        "methods": result.methods,
        "metrics": result.metrics,
        "higher_is_better": result.higher_is_better,
        "summaries": [
            {"method": m, "metric": k, **{f: clean(v) for f, v in asdict(s).items()}}
            for (m, k), s in result.summaries.items()
        ],
        "differences": [{f: clean(v) for f, v in asdict(d).items()} for d in result.differences],
        "notes": result.notes,
        "seconds": result.seconds,
        "ranks": result.ranks,
        "config": result.config,
    }


def write_chart(result: EvaluationResult, path: Path) -> None:
    """One panel per metric: mean per method with its 95% CI; pullback methods in colour, baselines in grey."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics: Sequence[str] = result.metrics
    methods = result.methods
    ncols = min(4, max(1, len(metrics)))
    nrows = math.ceil(len(metrics) / ncols) if metrics else 1
    height = max(2.5, 0.28 * len(methods) + 1.2)
    fig = Figure(figsize=(4.2 * ncols, height * nrows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    colours = ["#d95f02" if result.uses_pullback.get(m, False) else "#7f7f7f" for m in methods]
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(metrics):
            ax.set_visible(False)
            continue
        metric = metrics[i]
        means, errs = [], [[], []]
        for m in methods:
            s = result.summaries.get((m, metric))
            ok = s is not None and s.n > 0
            mean = s.mean if ok else math.nan
            means.append(mean)
            errs[0].append(max(0.0, mean - s.ci_low) if ok else 0.0)
            errs[1].append(max(0.0, s.ci_high - mean) if ok else 0.0)
        ys = list(range(len(methods)))
        ax.barh(ys, [0 if math.isnan(v) else v for v in means], xerr=errs, color=colours, capsize=2)
        ax.set_yticks(ys, methods if i % ncols == 0 else [""] * len(methods), fontsize=8)
        ax.invert_yaxis()
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_title(f"{metric} {arrow(result.higher_is_better[metric])}", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    n, noun = counted_items(result.config)
    fig.suptitle(
        f"{result.config.get('model', {}).get('name', '')}: mean and 95% CI over {n} {noun} (orange: pullback methods)",
        fontsize=10,
    )
    atomic_write(path, lambda p: fig.savefig(p, format="png"))


def _write_parquet(result: EvaluationResult, path: Path) -> bool:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return False
    columns = {f: [getattr(r, f) for r in result.rows] for f in FIELDS}
    atomic_write(path, lambda p: pq.write_table(pa.table(columns), p))
    return True


def _write_csv(result: EvaluationResult, path: Path) -> None:
    """Every row of the run, merged from all parts, in the plan's order (items, methods, metrics): the same file
    whatever number of processes computed it."""

    def write(p: Path) -> None:
        with p.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
            w.writeheader()
            for r in result.rows:
                w.writerow(r.as_record())

    atomic_write(path, write)


def write_reports(result: EvaluationResult, *, chart: bool = True) -> dict[str, Path]:
    """Write ``scores.csv``, ``summary.md``, ``summary.json``, ``chart.png`` and (with pyarrow) ``scores.parquet``
    into ``result.out``."""
    if result.out is None:
        return {}
    out = result.out
    files = {"scores": out / "scores.csv", "summary": out / "summary.md", "json": out / "summary.json"}
    _write_csv(result, files["scores"])
    markdown = markdown_report(result)
    atomic_write(files["summary"], lambda p: p.write_text(markdown, "utf-8"))
    data = json.dumps(_summary_json(result), indent=2, default=repr)
    atomic_write(files["json"], lambda p: p.write_text(data + "\n", "utf-8"))
    if chart and result.metrics and result.methods:
        files["chart"] = out / "chart.png"
        write_chart(result, files["chart"])
    if _write_parquet(result, out / "scores.parquet"):
        files["parquet"] = out / "scores.parquet"
    return files
