"""Does ``evaluate`` scale with processes? Throughput on 1 and on 2 torchrun processes, side by side (not a test).

    uv run python benchmarks/scale.py [--rounds 2] [--processes 1 2] [--threads 1] [--device cpu|cuda]

Each job is the real command a user runs, ``torchrun --nproc-per-node N -m semantic_pullbacks evaluate ...`` on
the embedded EfficientNet-Lite0 and the eleven bundled photos (``fast`` preset; 4 methods × 4 metrics = 176 scores),
into a fresh folder, every process with ``--threads`` torch threads. Jobs of the different sizes run interleaved
(1, 2, 2, 1, ...), so load from other processes on a shared machine hits all sizes alike.

Throughput is scores per second of ``evaluate`` itself (``summary.json``'s seconds: planning, computing, waiting
for the other ranks and reporting; it excludes starting Python and loading the model, reported separately as the
job's wall time). The busiest and least busy ranks' compute times show how evenly the work was shared, and
evaluate minus the busiest rank is the part that does not run in parallel. The speed-up is the median over rounds
of the ratio within a round. Every job's scores are also checked to be identical to the first job's: the number
of processes must not change a score.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = "SoftPullback,Gradient,IntegratedGradients,SmoothGrad"
METRICS = "infidelity,faithfulness_correlation,max_sensitivity,random_logit"


def job(processes: int, out: Path, args: argparse.Namespace) -> dict[str, float | list[tuple[str, ...]]]:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
        "-m", "semantic_pullbacks", "evaluate", "--images", args.images, "--fast",
        "--methods", args.methods, "--metrics", args.metrics, "--threads", str(args.threads),
        "--workers", str(args.workers), "--device", args.device, "--quiet", "--no-chart", "--out", str(out),
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"job on {processes} processes failed:\n{done.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    seconds = float(summary["seconds"])
    busy = [float(r["seconds"]) for r in summary["ranks"]]
    with (out / "scores.csv").open() as f:
        rows = [(r["item"], r["method"], r["metric"], r["score"]) for r in csv.DictReader(f)]
    return {"seconds": seconds, "wall": wall, "rows": rows, "busiest": max(busy), "idlest": min(busy)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default: 1)")
    parser.add_argument("--workers", type=int, default=1, help="decoding processes per rank (default: 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", default="examples")
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--metrics", default=METRICS)
    args = parser.parse_args()

    sizes = args.processes
    results: dict[int, list[dict]] = {n: [] for n in sizes}
    reference = None
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = sizes if r % 2 == 0 else sizes[::-1]
            for n in order:
                res = job(n, Path(tmp) / f"round{r}-n{n}", args)
                if reference is None:
                    reference = res["rows"]
                elif res["rows"] != reference:
                    sys.exit(f"scores on {n} processes differ from the first job's: the result depends on N")
                results[n].append(res)
                print(f"round {r + 1}, {n} process(es): {len(res['rows'])} scores in {res['seconds']:.1f} s "
                      f"(job wall {res['wall']:.1f} s)", file=sys.stderr, flush=True)  # fmt: skip

    n_scores = len(reference or [])
    base = sizes[0]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, {args.threads} torch "
        f"thread(s) per process, device {args.device}, load average {load:.1f}; {n_scores} scores per job "
        f"({args.methods} x {args.metrics}, fast preset, images: {args.images}); {args.rounds} rounds\n"
    )
    print(
        f"| processes | evaluate (s) | busiest rank (s) | least busy rank (s) | job wall (s) | scores/s "
        f"| speed-up vs {base} | scores identical |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for n in sizes:
        secs = statistics.median(x["seconds"] for x in results[n])
        wall = statistics.median(x["wall"] for x in results[n])
        ratios = [b["seconds"] / x["seconds"] for b, x in zip(results[base], results[n])]
        speedup = statistics.median(ratios)
        busiest = statistics.median(x["busiest"] for x in results[n])
        idlest = statistics.median(x["idlest"] for x in results[n])
        print(
            f"| {n} | {secs:.1f} | {busiest:.1f} | {idlest:.1f} | {wall:.1f} | {n_scores / secs:.3f} | "
            f"{speedup:.2f}x | yes |"
        )


if __name__ == "__main__":
    main()
