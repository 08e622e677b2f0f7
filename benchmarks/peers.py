"""SP side by side with the methods people use instead: quality on photos, time and memory (not a unit test).

    uv run python benchmarks/peers.py --quick                  # smoke run: 2 + 2 photos, 3 metrics, Lite0 timing
    flock /tmp/heavy.lock nice uv run python benchmarks/peers.py --out runs/peers

Needs the ``peers`` extra (``uv sync --extra peers``; the dev group has it).

**Quality.** The embedded EfficientNet-Lite0 with its recommended settings, on two photo sets: the eleven bundled
photos (``semantic_pullbacks.examples``, explained for their label), which the Lite0 settings were calibrated on,
and the nine scikit-image photos of ``benchmarks/quality/unseen_photos.py``, which nobody calibrated on (explained
for the top-1 class; the script checks that no name is in both sets). Methods: SoftPullback and PullbackAscent
(recommended settings), Gradient, and every image peer (``semantic_pullbacks.methods.peers``); a peer its package cannot
run on the model is listed with the reason. Scores come from the library's own ``evaluate`` (``fast`` preset, all
default metrics, every method scored on the same perturbations); each method is compared with SoftPullback photo
by photo: mean difference with a paired bootstrap 95 % CI (evaluate's ``paired_difference``). Resumable: rerun
the same command after an interruption.

**Why SP loses, where it does** (``--part investigate``, unseen photos only): readings of SP that need no tuning,
scored the same way against SP and Zennit-EpsilonPlusFlat: the relevance view ``x * SP`` (LRP's maps carry the
input; SP's do not), with ``x * gradient`` beside it, and SP with the adjoints of the stride-2 convolutions
averaged over the windows that cover each pixel instead of summed (the period-2 checkerboard of a stride-2
adjoint comes from pixels covered by one, two or four windows). Both are defined in this file only. Beside them,
the library's ``SmoothPullback`` at 50 samples (SP averaged over noisy copies of the input): stability bought with
passes.

**Cost.** Time and peak memory per map (batch 1, 224 px, one torch thread) of Gradient, SoftPullback and every
peer on Lite0 (recommended settings) and on random-weight ResNet50 and ViT-B/16 (paper temperatures), measured
interleaved in one run (``benchmarks/performance.py``'s ``interleaved`` and ``peak_memory``), as ratios to the
gradient. The peers build a restructured or private copy of the model on their first call (``first`` column)
and keep it (``copy MiB``); the per-map time is that of the calls after it. CAM memory omits pytorch-grad-cam's
numpy arrays, which the torch profiler does not see.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from semantic_pullbacks import Gradient, SoftPullback
from semantic_pullbacks.engine.registry import register_rule, unregister_rule
from semantic_pullbacks.evaluation import MethodSpec, evaluate
from semantic_pullbacks.evaluation.statistics import paired_difference
from semantic_pullbacks.examples import list_examples
from semantic_pullbacks.methods import METHODS
from semantic_pullbacks.methods.peers import PEERS
from semantic_pullbacks.models import load

HERE = Path(__file__).resolve().parent
METRICS = ("infidelity", "faithfulness_correlation", "faithfulness_estimate", "monotonicity_correlation",
           "max_sensitivity", "random_logit", "focus", "aliasing", "top_layer_randomisation")  # fmt: skip
QUICK_METRICS = ("infidelity", "max_sensitivity", "aliasing")
OURS = ("SoftPullback", "PullbackAscent", "Gradient")


def _module(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


unseen = _module(HERE / "quality" / "unseen_photos.py", "unseen_photos")
performance = _module(HERE / "performance.py", "performance")


# ------------------------------------------------------------------------------------------------------------------
# Readings of SP tried where it loses (defined here only; not methods of the library)
# ------------------------------------------------------------------------------------------------------------------
class SoftPullbackTimesInput(SoftPullback):
    """The relevance view ``x * SP``: SP's map carries no factor of the input, LRP's relevance does."""

    multiplies_by_inputs = True

    def attribute(self, inputs: torch.Tensor, target: Any = None, additional_forward_args: Any = None, **kw: Any):  # type: ignore[no-untyped-def]
        return super().attribute(inputs, target, additional_forward_args, **kw) * inputs.detach()


class GradientTimesInput(Gradient):
    """``x * gradient``, the relevance view's gradient counterpart."""

    multiplies_by_inputs = True

    def attribute(self, inputs: torch.Tensor, target: Any = None, additional_forward_args: Any = None, **kw: Any):  # type: ignore[no-untyped-def]
        return super().attribute(inputs, target, additional_forward_args, **kw) * inputs.detach()


class _CoverageAveragedConv(torch.autograd.Function):
    """A stride-2 convolution whose input adjoint is divided by how many windows cover each input pixel (scaled to
    mean 1), so that pixels seen by one, two or four windows get comparable shares; the forward is unchanged."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: Any, *params: Any) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(weight)
        ctx.shape, ctx.params = x.shape, params
        return torch.nn.functional.conv2d(x, weight, bias, *params)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        adjoint = torch.nn.grad.conv2d_input(ctx.shape, weight, grad, *ctx.params)
        windows = torch.nn.grad.conv2d_input(ctx.shape, torch.ones_like(weight), torch.ones_like(grad), *ctx.params)
        return adjoint / (windows / windows.mean()).clamp_min(1e-6), None, None, *(None for _ in ctx.params)


def _averaged_stride2(func: Any, args: Any, kwargs: Any, ctx: Any) -> Any:
    from semantic_pullbacks.engine.registry import NOT_HANDLED

    x, weight, bias, stride, padding, dilation, groups = (*args, *([None] * 7))[:7]
    if kwargs or stride not in ((2, 2), [2, 2], 2) or not torch.is_grad_enabled() or not x.requires_grad:
        return NOT_HANDLED
    return _CoverageAveragedConv.apply(x, weight, bias, stride, padding or 0, dilation or 1, groups or 1)


class SoftPullbackAveragedStride2(SoftPullback):
    """SP with every stride-2 convolution's adjoint averaged over the windows covering a pixel (see above)."""

    def attribute(self, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        register_rule(torch.conv2d, op="conv2d", family="relu", replace=True)(_averaged_stride2)
        try:
            return super().attribute(*args, **kwargs)
        finally:
            unregister_rule(torch.conv2d)


READINGS = {cls.__name__: cls for cls in (SoftPullbackTimesInput, GradientTimesInput, SoftPullbackAveragedStride2)}


# ------------------------------------------------------------------------------------------------------------------
# Quality
# ------------------------------------------------------------------------------------------------------------------
def photo_sets(out: Path, quick: bool) -> dict[str, str]:
    """``{"bundled": "examples", "unseen": folder}``, the unseen photos written (and checked apart) first."""
    overlap = set(unseen.PHOTOS) & {e.name for e in list_examples()}
    if overlap:
        raise SystemExit(f"the unseen photos include bundled ones: {sorted(overlap)}")
    folder = out / "unseen-photos"
    unseen.write_photos(folder)
    if quick:
        for extra in sorted(folder.glob("*.png"))[2:]:
            extra.unlink()
    return {"bundled": "examples", "unseen": str(folder)}


def runnable_peers(loaded: Any) -> tuple[list[str], dict[str, str]]:
    """The peers that run on ``loaded`` and, for the others, why not (one call on a bundled photo)."""
    from semantic_pullbacks.examples import example_path

    x = loaded.load_image(example_path("chelsea"))
    ok, refused = [], {}
    for name, cls in PEERS.items():
        try:
            cls(loaded).attribute(x, target=285)
            ok.append(name)
        except Exception as error:  # a refusal is a result here: it goes into the table
            refused[name] = f"{type(error).__name__}: {error}"
    return ok, refused


def run_quality(loaded: Any, images: str, methods: list[Any], metrics: tuple[str, ...], out: Path, quick: bool) -> Any:
    return evaluate(
        loaded, images=images, methods=methods, metrics=list(metrics), preset="fast", out=out, progress=False,
        chart=False, n_images=2 if quick and images == "examples" else None,
    )  # fmt: skip


def compare_table(result: Any, methods: list[str], metrics: tuple[str, ...], baseline: str) -> list[str]:
    """Markdown rows: each method's mean per metric, and its paired difference from ``baseline`` with the CI;
    **bold** where the difference is significant in the method's favour, *italic* where against it."""
    scores = result.scores()
    lines = [
        "| method | " + " | ".join(metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    verdicts: dict[str, list[str]] = {}
    for method in methods:
        cells = []
        for metric in metrics:
            mine = scores.get((method, metric), {})
            values = [v for v in mine.values() if math.isfinite(v)]
            mean = sum(values) / len(values) if values else math.nan
            if method == baseline or not mine:
                cells.append(f"{mean:.3g}")
                continue
            d = paired_difference(
                mine, scores.get((baseline, metric), {}), method=method, baseline=baseline, metric=metric,
                higher_is_better=result.higher_is_better[metric],
            )  # fmt: skip
            text = f"{mean:.3g} ({d.mean_diff:+.3g} [{d.ci_low:+.3g}, {d.ci_high:+.3g}])"
            if d.method_better is True:
                text, verdict = f"**{text}**", "better"
            elif d.method_better is False:
                text, verdict = f"*{text}*", "worse"
            else:
                verdict = "tie"
            verdicts.setdefault(method, []).append(f"{metric}:{verdict}")
            cells.append(text)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines.append("")
    for method, v in verdicts.items():
        better = sum(x.endswith("better") for x in v)
        worse = sum(x.endswith("worse") for x in v)
        tied = len(v) - better - worse
        lines.append(f"- {method} against {baseline}: better on {better}, worse on {worse}, tied on {tied} of {len(v)}")
    return lines


def quality(args: argparse.Namespace, loaded: Any, report: list[str]) -> None:
    metrics = QUICK_METRICS if args.quick else METRICS
    peers, refused = runnable_peers(loaded)
    methods = [*OURS, *peers]
    for name, why in refused.items():
        report.append(f"- {name} refused on EfficientNet-Lite0: {why}")
    for label, images in photo_sets(args.out, args.quick).items():
        start = time.perf_counter()
        result = run_quality(loaded, images, methods, metrics, args.out / f"quality-{label}", args.quick)
        report += ["", f"### {label} photos ({len(result.rows) // max(1, len(methods) * len(metrics))} photos, "
                   f"{time.perf_counter() - start:.0f} s): mean (method - SoftPullback [95 % CI])", ""]  # fmt: skip
        report += compare_table(result, methods, metrics, "SoftPullback")
        report += [f"- note: {n}" for n in result.notes[:10]]


def investigate(args: argparse.Namespace, loaded: Any, report: list[str]) -> None:
    metrics = QUICK_METRICS if args.quick else METRICS
    METHODS.update(READINGS)  # this process only: the readings become evaluable under their names
    # SmoothPullback (SP averaged over input noise, a method of the library) at its own 50 samples, not the fast
    # preset's 4: what buying stability with passes gives, against the LRP peers' stability
    smooth = MethodSpec("SmoothPullback-50", "SmoothPullback", {"nt_samples": 50, "nt_samples_batch_size": 10})
    methods = ["SoftPullback", *READINGS, smooth, "Zennit-EpsilonPlusFlat"]
    images = photo_sets(args.out, args.quick)["unseen"]
    result = run_quality(loaded, images, methods, metrics, args.out / "investigate-unseen", args.quick)
    report += ["", "### readings of SP on the unseen photos: mean (method - SoftPullback [95 % CI])", ""]
    report += compare_table(result, [m if isinstance(m, str) else m.label for m in methods], metrics, "SoftPullback")
    report += ["", "### the same, against Zennit-EpsilonPlusFlat", ""]
    against = ["Zennit-EpsilonPlusFlat", *READINGS, smooth.label]
    report += compare_table(result, against, metrics, "Zennit-EpsilonPlusFlat")
    from semantic_pullbacks import pullback_mode

    with pullback_mode() as pb:
        loaded.model(torch.zeros(1, 3, 224, 224, requires_grad=True))
    report += ["", f"- the nonlinear ops Lite0's forward pass meets (engine coverage): {pb.coverage}"]


# ------------------------------------------------------------------------------------------------------------------
# Cost
# ------------------------------------------------------------------------------------------------------------------
def cost_models(quick: bool) -> dict[str, Any]:
    """name -> what the methods are built on (Lite0 as loaded: its recommended settings)."""
    models: dict[str, Any] = {"efficientnet_lite0": load()}
    if not quick:
        for name in ("resnet50", "vit_b_16"):
            models[name] = performance.build_subject(name).model  # random weights, as in the performance benchmark
    return models


def _copy_mib(explainer: Any) -> float:
    held = getattr(getattr(explainer, "_copies", None), "_copy", None)
    if held is None:
        return 0.0
    return sum(t.numel() * t.element_size() for t in (*held.parameters(), *held.buffers())) / 2**20


def _built(model_name: str, target: Any, x: torch.Tensor, report: list[str]) -> dict[str, tuple[Any, float]]:
    """Each method built and called once (the peers build their copies then): name -> (explainer, seconds)."""
    built = {}
    for name, cls in {"Gradient": Gradient, "SoftPullback": SoftPullback, **PEERS}.items():
        try:
            explainer = cls(target)
            start = time.perf_counter()
            explainer.attribute(x, target=3)
            built[name] = (explainer, time.perf_counter() - start)
        except Exception as error:  # a refusal is a result here: it goes into the table
            why = f"{type(error).__name__}: {str(error)[:160]}"
            report.append(f"| {model_name} | {name} | refused: {why} | | | | | |")
    return built


def cost(args: argparse.Namespace, report: list[str]) -> None:
    repeats = 2 if args.quick else args.repeats
    report += ["", "| model | method | time (s) | time / gradient | peak MiB | memory / gradient | first call (s) "
               "| copy MiB |", "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cpu = torch.device("cpu")
    for model_name, target in cost_models(args.quick).items():
        built = _built(model_name, target, x, report)
        calls: dict[str, Callable[[], object]] = {
            n: (lambda e=e: e.attribute(x, target=3)) for n, (e, _) in built.items()
        }
        timed = performance.interleaved(calls, repeats, cpu)
        memory = {name: performance.peak_memory(fn, cpu) for name, fn in calls.items()}
        for name, (explainer, first) in built.items():
            ratio = performance.paired_ratio(timed, name, "Gradient")
            report.append(
                f"| {model_name} | {name} | {timed['median'][name]:.3f} | {ratio:.2f}x | {memory[name] / 2**20:.0f} | "
                f"{memory[name] / memory['Gradient']:.2f}x | {first:.2f} | {_copy_mib(explainer):.0f} |"
            )
        met = performance.paired_ratio(timed, "SoftPullback", "Gradient") <= 1.10
        report.append(f"| {model_name} | (target: SP <= 1.10x gradient) | | {'met' if met else '**unmet**'} | | | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 + 2 photos, 3 metrics, Lite0 timing only")
    parser.add_argument("--out", type=Path, default=Path("runs/peers"))
    parser.add_argument("--part", choices=["all", "quality", "investigate", "cost"], default="all")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per method (after one warm-up)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    loaded = load()
    report = [f"# SP and its peers ({'quick' if args.quick else 'full'} run, torch {torch.__version__}, 1 thread)"]
    if args.part in ("all", "quality"):
        quality(args, loaded, report)
    if args.part in ("all", "investigate"):
        investigate(args, loaded, report)
    if args.part in ("all", "cost"):
        cost(args, report)
    text = "\n".join(report)
    print(text)
    (args.out / f"report-{args.part}.md").write_text(text + "\n")
    (args.out / f"report-{args.part}.json").write_text(json.dumps({"argv": sys.argv, "report": report}, indent=1))


if __name__ == "__main__":
    main()
