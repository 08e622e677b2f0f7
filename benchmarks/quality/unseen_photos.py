"""The recommended settings on photos nobody calibrated on: nine scikit-image photos that are not bundled.

    uv run python benchmarks/quality/unseen_photos.py --out runs/unseen

Writes the photos (centre square, 320 px) to ``OUT/photos``, runs ``semantic-pullbacks evaluate`` (``fast``
preset, one torch thread) for SoftPullback at the recommended settings and for the gradient, then SoftPullback at
the previous recommendation (``relu = 3*std``) and at the paper's temperatures, and prints the issue-14 table:
median per-photo ratios to the gradient (infidelity, max-sensitivity, aliasing), SP's median top-layer
randomisation |Spearman|, and SP minus the gradient on faithfulness and monotonicity correlation (mean with a
paired bootstrap 95% CI). Each photo is explained for the model's top-1 class (they have no ImageNet labels).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from semantic_pullbacks.evaluation.statistics import bootstrap_ci

PHOTOS = ("stereo_motorcycle", "coins", "moon", "retina", "hubble_deep_field", "immunohistochemistry", "brick",
          "grass", "gravel")  # fmt: skip
METRICS = (
    "infidelity,max_sensitivity,aliasing,top_layer_randomisation,faithfulness_correlation,monotonicity_correlation"
)
RUNS = {
    "recommended": ["--methods", "SoftPullback,Gradient"],
    "old: relu=3*std": ["--methods", "SoftPullback", "--temperatures", "relu=3*std"],
    "paper: relu=0.6": ["--methods", "SoftPullback", "--paper-defaults"],
}


def write_photos(folder: Path) -> None:
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        a = getattr(skimage.data, name)()
        a = np.asarray(a[0] if isinstance(a, tuple) else a)
        a = np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3]
        if a.dtype != np.uint8:
            a = (255 * (a - a.min()) / (a.max() - a.min())).astype(np.uint8)
        side = min(a.shape[:2])
        top, left = (a.shape[0] - side) // 2, (a.shape[1] - side) // 2
        crop = Image.fromarray(a[top : top + side, left : left + side])
        crop.resize((320, 320), Image.LANCZOS).save(folder / f"{name}.png")


def scores(path: Path) -> dict[tuple[str, str, str], float]:
    with path.open() as f:
        return {(r["method"], r["metric"], r["item"]): float(r["score"] or "nan") for r in csv.DictReader(f)}


def paired(diffs: list[float]) -> str:
    """Mean of the per-photo differences with its bootstrap 95% interval (evaluate's own statistics)."""
    low, high = bootstrap_ci(diffs, n_resamples=10_000)
    return f"{sum(diffs) / len(diffs):+.3f} [{low:+.3f}, {high:+.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/unseen"))
    args = parser.parse_args()
    write_photos(args.out / "photos")
    found = {}
    for i, (label, extra) in enumerate(RUNS.items()):
        folder = args.out / f"run-{i}"
        cmd = [sys.executable, "-m", "semantic_pullbacks", "evaluate", "--images", str(args.out / "photos"),
               "--fast", "--metrics", METRICS, "--threads", "1", "--out", str(folder), *extra]  # fmt: skip
        subprocess.run(cmd, check=True)
        found[label] = scores(folder / "scores.csv")
    grad = {(m, i): v for (method, m, i), v in found["recommended"].items() if method == "Gradient"}
    photos = sorted({i for _, i in grad})
    print(f"\n{len(photos)} photos: {', '.join(photos)}\n")
    print("| SoftPullback | infidelity / grad | max-sensitivity / grad | aliasing / grad | top-layer rand. |ρ| "
          "| faithfulness corr. SP − grad | monotonicity corr. SP − grad |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, table in found.items():
        sp = {(m, i): v for (method, m, i), v in table.items() if method == "SoftPullback"}
        cells = [
            f"{statistics.median(sp[(m, i)] / grad[(m, i)] for i in photos):.2f}"
            for m in ("infidelity", "max_sensitivity", "aliasing")
        ]
        cells.append(f"{statistics.median(sp[('top_layer_randomisation', i)] for i in photos):.2f}")
        for m in ("faithfulness_correlation", "monotonicity_correlation"):
            cells.append(paired([sp[(m, i)] - grad[(m, i)] for i in photos]))
        print(f"| {label} | " + " | ".join(cells) + " |")
    rand = statistics.median(grad[("top_layer_randomisation", i)] for i in photos)
    print(f"| (gradient) | 1 | 1 | 1 | {rand:.2f} | | |")


if __name__ == "__main__":
    main()
