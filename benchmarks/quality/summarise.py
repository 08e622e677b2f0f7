"""Re-read a calibration run (``calibrate_lite0.py``'s ``calibration.json`` and ``settings.json``) and print the
held-out figures against the issue's targets, for all photos and for the photos added with the search only.

    uv run python benchmarks/quality/summarise.py benchmarks/quality/results

The added photos (astronaut, china, clock, raccoon, flower, ascent) never influenced the candidate grid, which
was drawn up after a first look at the five photos bundled before; their held-out figures are the cleanest.
"""

from __future__ import annotations

import argparse
import ast
import json
from collections import defaultdict
from pathlib import Path

import torch

from semantic_pullbacks import Temperatures
from semantic_pullbacks.calibration import DEFAULT_CRITERIA, judge
from semantic_pullbacks.evaluation.statistics import bootstrap_ci
from semantic_pullbacks.metrics import get_metric

#: the issue's targets, as criteria values (ratio to the gradient, shortfall against it, or SP's own score)
TARGETS = {
    "infidelity": 0.3,
    "max_sensitivity": 0.5,
    "aliasing": 1.25,
    "top_layer_randomisation": 0.5,
    "faithfulness_correlation": 0.0,
    "monotonicity_correlation": 0.0,
}
ADDED = ("astronaut", "china", "clock", "raccoon", "flower", "ascent")


def key(temperatures: dict | None) -> str:
    if temperatures is None:
        return "gradient"
    return repr(sorted(Temperatures.coerce(temperatures).to_dict().items()))


def stored_key(config: str) -> str:
    """A run's configuration label, re-keyed as :func:`key` does today (families added since take defaults)."""
    return config if config == "gradient" else key(dict(ast.literal_eval(config)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    args = parser.parse_args()
    raw = json.loads((args.results / "calibration.json").read_text())
    evidence = json.loads((args.results / "settings.json").read_text())["evidence"]
    per_image: dict[tuple[str, int, str], float] = {}
    focus: dict[tuple[str, tuple[int, ...]], list[float]] = defaultdict(list)
    for r in raw["report_scores"]:
        if r["metric"] == "focus":
            focus[(stored_key(r["config"]), tuple(r["mosaics_of"]))].append(r["score"])
        else:
            per_image[(stored_key(r["config"]), r["image"], r["metric"])] = r["score"]
    names = raw["images"]
    criteria = DEFAULT_CRITERIA
    higher = {c.metric: get_metric(c.metric).higher_is_better for c in criteria}

    def verdict(parts: list[tuple[str, list[int], tuple[int, ...]]]):  # type: ignore[no-untyped-def]
        sp: dict[str, list[float]] = defaultdict(list)
        grad: dict[str, list[float]] = defaultdict(list)
        for config, images, fold in parts:
            for c in criteria:
                if c.metric == "focus":
                    sp["focus"] += focus.get((config, fold), [])
                    grad["focus"] += focus.get(("gradient", fold), [])
                    continue
                sp[c.metric] += [per_image[(config, i, c.metric)] for i in images]
                grad[c.metric] += [per_image[("gradient", i, c.metric)] for i in images]
        as_t = lambda d: {k: torch.tensor(v, dtype=torch.float64) for k, v in d.items()}
        return judge(criteria, as_t(sp), as_t(grad), higher)

    folds = evidence["folds"]
    rows = {
        "chosen per fold, all photos": [
            (key(f["chosen"]), f["held_out_images"], tuple(f["held_out_images"])) for f in folds
        ],
        "chosen per fold, added photos": [
            (key(f["chosen"]), [i for i in f["held_out_images"] if names[i] in ADDED], tuple(f["held_out_images"]))
            for f in folds
        ],
        "paper defaults, all photos": [(key({}), f["held_out_images"], tuple(f["held_out_images"])) for f in folds],
    }
    metrics = [c.metric for c in criteria]
    print("| held out | " + " | ".join(metrics) + " |")
    print("|---" * (len(metrics) + 1) + "|")
    for label, parts in rows.items():
        v = verdict(parts)
        print(f"| {label} | " + " | ".join(f"{v.values[m]:.3g}" for m in metrics) + " |")
    print(
        "\ntargets: "
        + ", ".join(f"{m} {'<=' if m != 'top_layer_randomisation' else '<'} {t:g}" for m, t in TARGETS.items())
    )
    print("(focus: mosaics of each fold's held-out photos, all of them in both rows)")
    print("\nheld out, SP (chosen per fold) minus the gradient, mean over photos with a paired bootstrap 95% CI:")
    for metric in ("faithfulness_correlation", "monotonicity_correlation"):
        diffs = [
            per_image[(key(f["chosen"]), i, metric)] - per_image[("gradient", i, metric)]
            for f in folds
            for i in f["held_out_images"]
        ]
        low, high = bootstrap_ci(diffs, n_resamples=10_000)
        mean = sum(diffs) / len(diffs)
        print(f"  {metric}: {mean:+.3f} [{low:+.3f}, {high:+.3f}] over {len(diffs)} photos")


if __name__ == "__main__":
    main()
