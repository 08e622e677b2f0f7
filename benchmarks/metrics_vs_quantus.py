"""Time our metric suite against Quantus on the same inputs (not a unit test).

    uv run python benchmarks/metrics_vs_quantus.py [--model small|resnet18] [--images 2] [--repeats 3]

Paper settings for 224×224 inputs, Saliency attributions (Captum), CPU unless CUDA is available. Each metric is
timed as the median of ``--repeats`` runs; the ratio column is Quantus time / our time (>1: we are faster).
Quantus's faithfulness correlation uses random pixel subsets; ours uses the paper's 16 patches, so Quantus is
given 16 runs of 3136 pixels for comparable work. Quantus's infidelity has no optimal scaling; the perturbations
(and model calls) are the same.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import quantus
import torch
from captum.attr import Saliency
from torch import nn

from semantic_pullbacks.metrics import (
    FaithfulnessCorrelation,
    FaithfulnessEstimate,
    Focus,
    Infidelity,
    MaxSensitivity,
    MonotonicityCorrelation,
    RandomLogit,
    as_explainer,
)


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=4, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(256, 1000),
    )


def build_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "resnet18":
        import torchvision

        return torchvision.models.resnet18(weights=None)
    return small_cnn()


def timed(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["small", "resnet18"], default="small")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--only", nargs="*", default=None, help="metric names to run (default: all)")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_model(args.model).eval().to(device)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(args.images, 3, 224, 224, generator=g) * 2 - 1).to(device)
    y = torch.arange(args.images, device=device) % 1000
    explain = as_explainer(Saliency(model), abs=False)
    a = explain(model, x, y)
    positions = torch.tensor([[1, 1, 0, 0]] * args.images, dtype=torch.bool, device=device)

    def q_explain(model, inputs, targets, **kwargs):
        xt = torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=device)
        yt = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=device)
        return explain(model, xt, yt).cpu().numpy()

    xn, yn, an = x.cpu().numpy(), y.cpu().numpy(), a.cpu().numpy()
    common = dict(disable_warnings=True, return_aggregate=False)
    uniform = dict(perturb_baseline="uniform", perturb_func_kwargs={"uniform_low": -1.0, "uniform_high": 1.0})
    bs = args.batch_size
    cases: list[tuple[str, Callable[[], object], object, dict]] = [
        (
            "infidelity",
            Infidelity(batch_size=bs),
            quantus.Infidelity(perturb_patch_sizes=[112, 56], n_perturb_samples=5, **uniform, **common),
            {},
        ),
        (
            "faithfulness_correlation",
            FaithfulnessCorrelation(batch_size=bs),
            quantus.FaithfulnessCorrelation(nr_runs=16, subset_size=3136 * 3, perturb_baseline=0.0, abs=True, **common),
            {},
        ),
        (
            "faithfulness_estimate",
            FaithfulnessEstimate(batch_size=bs),
            quantus.FaithfulnessEstimate(features_in_step=3136, perturb_baseline=0.0, abs=True, **common),
            {},
        ),
        (
            "monotonicity_correlation",
            MonotonicityCorrelation(batch_size=bs),
            quantus.MonotonicityCorrelation(nr_samples=10, features_in_step=3136, **uniform, **common),
            {},
        ),
        (
            "max_sensitivity",
            MaxSensitivity(batch_size=bs),
            quantus.MaxSensitivity(nr_samples=10, lower_bound=0.02, **common),
            {"explain_func": q_explain},
        ),
        (
            "random_logit",
            RandomLogit(batch_size=bs),
            quantus.RandomLogit(
                num_classes=1000, similarity_func=quantus.similarity_func.correlation_pearson, **common
            ),
            {"explain_func": q_explain},
        ),
        ("focus", Focus(batch_size=bs), quantus.Focus(**common), {"custom_batch": [(1, 1, 0, 0)] * args.images}),
    ]
    print(
        f"model={args.model} images={args.images} repeats={args.repeats} device={device} "
        f"threads={torch.get_num_threads()}"
    )
    print(f"{'metric':<26}{'ours [s]':>10}{'quantus [s]':>13}{'ratio':>8}")
    for name, ours, theirs, q_kwargs in cases:
        if args.only and name not in args.only:
            continue
        extra = {"positions": positions} if name == "focus" else {}  # the only metric that takes them
        t_ours = timed(
            lambda ours=ours, extra=extra: ours(model, x, y, attributions=a, explain_func=explain, **extra),
            args.repeats,
        )

        def run_quantus(theirs=theirs, q_kwargs=q_kwargs) -> object:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return theirs(
                    model=model,
                    x_batch=xn,
                    y_batch=yn,
                    a_batch=an,
                    device=device,
                    channel_first=True,
                    batch_size=bs,
                    **q_kwargs,
                )

        t_theirs = timed(run_quantus, args.repeats)
        print(f"{name:<26}{t_ours:>10.3f}{t_theirs:>13.3f}{t_theirs / t_ours:>8.1f}x", flush=True)


if __name__ == "__main__":
    main()
