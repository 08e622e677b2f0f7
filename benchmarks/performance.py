"""Soft pullbacks at the price of a gradient? Time and peak memory, measured side by side (not a unit test).

    uv run python benchmarks/performance.py [--quick] [--device cpu|cuda] [--models lite0 mobilenet_v3 ...]
    uv run python benchmarks/performance.py --models lite0 --batches 4 --no-extras --profile   # where time goes

The models, one per common gate type, first the one every new user meets:

* ``lite0``: the embedded, pretrained EfficientNet-Lite0 (ReLU6 after BatchNorm) with its recommended per-stage
  ``Relative`` temperatures (``1*std;112:3*std;56:1.5*std``) and its recommended ascent, on the bundled photos;
* ``mobilenet_v3``: torchvision MobileNetV3-Large (Hardswish, ReLU, hardsigmoid squeeze-excitation);
* ``convnext_atto``: timm ConvNeXt-atto (GELU, LayerNorm);
* ``efficientnet_b0``: torchvision EfficientNet-B0 (SiLU, sigmoid squeeze-excitation);
* ``resnet50``, ``vit_b_16``, ``pvt_v2_b1``: ReLU/max-pool, attention/GELU/LayerNorm, and both.

All but ``lite0`` have random weights (weights do not change the cost of a pass), random inputs in [-1, 1] and the
paper's temperatures; every variant gets the same inputs. What is compared:

* **SoftPullback vs Gradient** (our ``Gradient`` is Captum's ``Saliency(abs=False)``: one forward, one backward
  to the input) — wall time and peak memory. Target: time <= 1.25x at batch 1 and <= 1.15x from batch 4 on,
  memory <= 1.15x.
* **SoftPullback vs class-swap** (ResNet50, ViT, PVT): the same rules written the straightforward way, inside this
  file, by swapping the classes of ``nn.ReLU``/``nn.GELU``/``nn.MaxPool2d``/``nn.LayerNorm`` and timm attention
  modules on a deep copy of the model for modules that call custom autograd functions. It shows what intercepting
  at the torch-function level (no model copy, functional calls covered) costs or saves against module surgery.
* **PullbackAscent (K=5) vs Gradient** (target <= 5.5x), **SmoothGrad (n=50) vs SoftPullback**, and
  **10 targets at once** (``attribute_targets``) **vs 10 separate ``attribute`` calls** (target >= 2x faster),
  next to the same comparison for the plain gradient: one shared forward pass saves at most
  ``(F + B) / (F / T + B)``, which is under 2 whenever a backward pass costs more than 0.8 forward passes.

Timing: the variants of one comparison run interleaved (A, B, B, A, A, B, ...) after one warm-up call each; the
table gives each variant's median of ``--repeats`` runs, and as the ratio the median over rounds of A/B from the
same round, so that load from other processes hits both sides of a ratio alike. On a shared machine the absolute
times are noisy; the ratios are what to read.

Peak memory: on CPU, a separate call under ``torch.profiler`` with ``profile_memory=True``; every tensor
allocation and free the CPU allocator reports is replayed in time order, and the peak of the running total is the
memory the call needed above what was live when it started (model weights and inputs excluded). Unlike a process's
peak RSS this is exact, unaffected by the allocator keeping freed pages and by other threads, and counts tensors
only (no Python objects). On CUDA: ``torch.cuda.max_memory_allocated`` above the allocation at the start.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from semantic_pullbacks.methods import (
    Gradient,
    PullbackAscent,
    SmoothGrad,
    SoftPullback,
)

# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Subject:
    """A model as the benchmark runs it: its temperatures, its ascent, where its inputs come from."""

    name: str
    model: nn.Module
    temperatures: Any = None  # None: the paper's
    ascent: dict[str, Any] = field(default_factory=lambda: {"steps": 5})
    photos: Any = None  # a LoadedModel whose preprocessing reads the bundled photos; None: random inputs
    swap: bool = False  # compare with the class-swap baseline (it covers ReLU/GELU/max-pool/LayerNorm/attention)

    def inputs(self, batch: int, size: int) -> torch.Tensor:
        if self.photos is None:
            g = torch.Generator().manual_seed(batch)
            return torch.rand(batch, 3, size, size, generator=g) * 2 - 1
        from semantic_pullbacks.examples import example_path, list_examples

        names = [e.name for e in list_examples()]
        paths = [example_path(names[i % len(names)]) for i in range(batch)]
        return self.photos.preprocess.load_batch(paths)


def build_subject(name: str) -> Subject:
    """The model ``name`` with the settings it is benchmarked with (random weights except the embedded Lite0)."""
    torch.manual_seed(0)
    if name == "lite0":
        from semantic_pullbacks import load
        from semantic_pullbacks.calibration import recommended_settings

        loaded = load()
        settings = recommended_settings(loaded.name)
        ascent = {"steps": settings.ascent.steps, "alpha": settings.ascent.alpha}
        ascent["temperatures"] = settings.ascent.temperatures
        return Subject("lite0 (recommended)", loaded.model, settings.temperatures, ascent, photos=loaded)
    if name in ("resnet50", "mobilenet_v3", "efficientnet_b0"):
        import torchvision

        tv = {"resnet50": "resnet50", "mobilenet_v3": "mobilenet_v3_large", "efficientnet_b0": "efficientnet_b0"}
        model = getattr(torchvision.models, tv[name])(weights=None).eval()
        return Subject(name, model, swap=name == "resnet50")
    import timm

    timm_name = {"vit_b_16": "vit_base_patch16_224", "pvt_v2_b1": "pvt_v2_b1", "convnext_atto": "convnext_atto"}
    model = timm.create_model(timm_name[name], pretrained=False).eval()
    return Subject(name, model, swap=name != "convnext_atto")


MODELS = ("lite0", "mobilenet_v3", "convnext_atto", "efficientnet_b0", "resnet50", "vit_b_16", "pvt_v2_b1")

# ----------------------------------------------------------------------------------------------------------------
# The class-swap baseline: the same soft rules, installed by swapping module classes on a deep copy
# ----------------------------------------------------------------------------------------------------------------

TAU = {"relu": 0.6, "gelu": 1.0, "maxpool": 0.3}


class _SwapGate(torch.autograd.Function):
    """ReLU/GELU: exact forward; backward ``grad * Phi(x / tau)``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, kind: str, approximate: str) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.tau = TAU[kind]
        return F.relu(x) if kind == "relu" else F.gelu(x, approximate=approximate)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        return grad * torch.special.ndtr(x / ctx.tau), None, None


class _SwapMaxPool2d(torch.autograd.Function):
    """Max pooling: exact forward; backward spreads each window's gradient by ``softmax(window / tau)``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, k: tuple[int, int], s: tuple[int, int], p: tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.cfg = (k, s, p)
        return F.max_pool2d(x, k, s, p)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        k, s, p = ctx.cfg
        n, c, h, w = x.shape
        xp = F.pad(x, (p[1], p[1], p[0], p[0]), value=float("-inf"))
        cols = F.unfold(xp.reshape(n * c, 1, *xp.shape[-2:]), k, stride=s)  # (n*c, k*k, L)
        weights = torch.softmax(cols / TAU["maxpool"], dim=1) * grad.reshape(n * c, 1, -1)
        gx = F.fold(weights, xp.shape[-2:], k, stride=s)[..., p[0] : p[0] + h, p[1] : p[1] + w]
        return gx.reshape(n, c, h, w), None, None, None


class _SwapLayerNorm(torch.autograd.Function):
    """LayerNorm with frozen statistics: backward ``grad * weight / std`` (no parameter gradients needed)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, shape: tuple[int, ...], weight: Any, bias: Any, eps: float) -> Any:
        ctx.save_for_backward(x, weight)
        ctx.nd, ctx.eps = len(shape), eps
        return F.layer_norm(x, shape, weight, bias, eps)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        dims = tuple(range(x.dim() - ctx.nd, x.dim()))
        rstd = torch.rsqrt(x.var(dim=dims, unbiased=False, keepdim=True) + ctx.eps)
        return grad * weight * rstd, None, None, None, None


class _SwapSDPA(torch.autograd.Function):
    """Attention with frozen weights: no gradient to queries and keys; values get ``softmax(qk^T)^T @ grad``."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(q, k)
        return F.scaled_dot_product_attention(q, k, v)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, k = ctx.saved_tensors
        w = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1]), dim=-1)
        return None, None, w.transpose(-2, -1) @ grad


class _SoftReLU(nn.ReLU):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _SwapGate.apply(x, "relu", "none")


class _SoftGELU(nn.GELU):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _SwapGate.apply(x, "gelu", self.approximate)


class _SoftMaxPool2d(nn.MaxPool2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pair = nn.modules.utils._pair
        if self.ceil_mode or self.dilation not in (1, (1, 1)):
            raise NotImplementedError("the class-swap baseline only covers plain max pooling")
        return _SwapMaxPool2d.apply(x, pair(self.kernel_size), pair(self.stride), pair(self.padding))


class _SoftLayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _SwapLayerNorm.apply(x, tuple(self.normalized_shape), self.weight, self.bias, self.eps)


class _FunctionalWithSoftSDPA:
    """Stands in for ``torch.nn.functional`` in a timm module's globals: only the attention call differs."""

    def __getattr__(self, name: str) -> Any:
        return getattr(F, name)

    @staticmethod
    def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw: Any) -> torch.Tensor:
        if kw.get("attn_mask") is not None or kw.get("is_causal") or kw.get("dropout_p", 0.0):
            raise NotImplementedError("the class-swap baseline only covers unmasked attention")
        return _SwapSDPA.apply(q, k, v)


class _SoftAttentionMixin(nn.Module):
    """timm attention calls ``F.scaled_dot_product_attention`` inside its forward, out of reach of a module swap:
    the swapped class rebinds the ``F`` its module reads for the duration of the call (not thread-safe)."""

    _functional_home: str

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        module = sys.modules[self._functional_home]
        saved = module.F
        module.F = _FunctionalWithSoftSDPA()
        try:
            return super().forward(*args, **kwargs)
        finally:
            module.F = saved


def class_swapped(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose gate modules run the soft rules (the research-code approach)."""
    swapped = copy.deepcopy(model)
    table: dict[type[nn.Module], type[nn.Module]] = {
        nn.ReLU: _SoftReLU,
        nn.GELU: _SoftGELU,
        nn.MaxPool2d: _SoftMaxPool2d,
    }
    for m in swapped.modules():
        cls = type(m)
        if cls in table:
            m.__class__ = table[cls]
        elif isinstance(m, nn.LayerNorm):
            m.__class__ = type(f"Soft{cls.__name__}", (_SoftLayerNorm, cls), {})
        elif getattr(m, "fused_attn", None) is not None and "F" in vars(sys.modules[cls.__module__]):
            m.fused_attn = True
            m.__class__ = type(f"Soft{cls.__name__}", (_SoftAttentionMixin, cls), {"_functional_home": cls.__module__})
    return swapped


class ClassSwapPullback(Gradient):
    """The plain gradient of the class-swapped copy, i.e. its soft pullback."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(class_swapped(model))


# ----------------------------------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(variants: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, Any]:
    """Median seconds per variant (and the first, warm-up call), run in alternating order."""
    names = list(variants)
    first: dict[str, float] = {}
    for n in names:
        start = time.perf_counter()
        variants[n]()
        _sync(device)
        first[n] = time.perf_counter() - start
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names if r % 2 == 0 else reversed(names):
            _sync(device)
            start = time.perf_counter()
            variants[n]()
            _sync(device)
            times[n].append(time.perf_counter() - start)
    return {"median": {n: statistics.median(t) for n, t in times.items()}, "first": first, "all": times}


def paired_ratio(result: dict[str, Any], a: str, b: str) -> float:
    """The median, over rounds, of A's time over B's from the same round.

    Each round runs A and B back to back, so a slow spell on a shared machine (another process, a noisy
    neighbour of the virtual machine) hits both sides of a ratio alike; the ratio of the two medians does not
    have that protection and was seen to swing by +-10 % between runs here.
    """
    return statistics.median(x / y for x, y in zip(result["all"][a], result["all"][b]))


def peak_memory(fn: Callable[[], object], device: torch.device) -> float:
    """Peak bytes allocated by one call above what was live at its start (see the module docstring)."""
    fn()  # warm: one-time caches do not count
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - base)
    from torch.profiler import ProfilerActivity, profile

    with _quiet_profiler(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    total = peak = 0
    for _, size, _ in _allocations(prof):
        total += size
        peak = max(peak, total)
    return float(peak)


def _allocations(prof: Any) -> list[tuple[int, int, Any]]:
    """The CPU allocator's events of a profile in time order: ``(time, bytes (negative: a free), event node)``."""
    from torch._C._profiler import _EventType

    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation:
            events.append((node.start_time_ns, node.extra_fields.alloc_size, node))
        stack.extend(node.children)
    return sorted(events, key=lambda e: (e[0], e[1]))


def live_at_peak(fn: Callable[[], object], frames: int = 3) -> list[tuple[float, int, str]]:
    """What makes up the CPU peak of one call: the allocations live at that moment, grouped by the op that made
    them and the innermost Python frames above it, largest first, as ``(bytes, count, "op <- frame <- ...")``."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    fn()
    with _quiet_profiler(), profile(activities=[ProfilerActivity.CPU], profile_memory=True, with_stack=True) as p:
        fn()
    live: dict[int, tuple[int, Any]] = {}
    total = peak = 0
    at_peak: dict[int, tuple[int, Any]] = {}
    for _, size, node in _allocations(p):
        total += size
        if size > 0:
            live[node.extra_fields.ptr] = (size, node)
        else:
            live.pop(node.extra_fields.ptr, None)
        if total > peak:
            peak, at_peak = total, dict(live)
    groups: dict[str, list[int]] = {}
    for size, node in at_peak.values():
        names, parent = [], node.parent
        op = parent.name if parent is not None else "?"
        while parent is not None and len(names) < frames:
            if parent.tag == _EventType.PyCall and "/torch/" not in parent.name:
                names.append(parent.name.rsplit("/", 1)[-1])
            parent = parent.parent
        entry = groups.setdefault(" <- ".join([op, *names]), [0, 0])
        entry[0] += size
        entry[1] += 1
    return sorted(((float(b), n, key) for key, (b, n) in groups.items()), reverse=True)


@contextlib.contextmanager
def _quiet_profiler() -> Iterator[None]:
    """Kineto prints start/stop lines on stderr's file descriptor; keep them out of the table."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


@dataclass
class Row:
    model: str
    batch: int
    comparison: str
    a: str
    b: str
    time_a: float
    time_b: float
    mem_a: float | None = None
    mem_b: float | None = None
    target: str = ""
    met: bool | None = None
    paired: float | None = None  # median over rounds of A/B measured back to back (see ``paired_ratio``)

    @property
    def ratio(self) -> float:
        return self.paired if self.paired is not None else self.time_a / self.time_b

    @property
    def mem_ratio(self) -> float | None:
        if self.mem_a is None or self.mem_b is None or self.mem_b == 0:
            return None
        return self.mem_a / self.mem_b


def _check(value: float | None, op: str, bound: float) -> bool | None:
    if value is None:
        return None
    return value <= bound if op == "<=" else value >= bound


def sp_target(batch: int) -> float:
    """SoftPullback's time over the gradient's it must stay under: a one-sample pass pays more fixed costs."""
    return 1.25 if batch < 4 else 1.15


def bench_config(subject: Subject, batch: int, device: torch.device, cfg: argparse.Namespace) -> list[Row]:
    """Every comparison for one model and batch size, on one shared input."""
    name, model = subject.name, subject.model
    x = subject.inputs(batch, cfg.size).to(device)
    target = 3
    sp, grad = SoftPullback(model, subject.temperatures), Gradient(model)
    variants = {"sp": lambda: sp.attribute(x, target=target), "grad": lambda: grad.attribute(x, target=target)}
    rows: list[Row] = []
    rel = None
    if subject.swap:
        # Same rules, same numbers: the swap baseline is a fair reference only if it computes the same map.
        swap = ClassSwapPullback(model)
        a_sp, a_swap = sp.attribute(x, target=target), swap.attribute(x, target=target)
        rel = float((a_sp - a_swap).norm() / a_sp.norm().clamp_min(1e-30))
        if rel > 1e-3:
            warnings.warn(f"{name}: class-swap and SoftPullback maps differ (relative L2 {rel:.1e})", stacklevel=1)
        variants["swap"] = lambda: swap.attribute(x, target=target)
    run_sp, run_grad = variants["sp"], variants["grad"]

    res = interleaved(variants, cfg.repeats, device)
    t = res["median"]
    mem = {k: peak_memory(f, device) for k, f in variants.items()}
    bound = sp_target(batch)
    row = Row(name, batch, "SoftPullback vs Gradient", "SoftPullback", "Gradient", t["sp"], t["grad"])
    row.mem_a, row.mem_b = mem["sp"], mem["grad"]
    row.paired = paired_ratio(res, "sp", "grad")
    row.target = f"time <= {bound:.2f}x, mem <= 1.15x"
    row.met = bool(_check(row.ratio, "<=", bound)) and bool(_check(row.mem_ratio, "<=", 1.15))
    rows.append(row)
    if subject.swap:
        rows.append(
            Row(name, batch, "SoftPullback vs class-swap", "SoftPullback", "class-swap", t["sp"], t["swap"],
                mem["sp"], mem["swap"], f"(maps agree to {rel:.0e})", paired=paired_ratio(res, "sp", "swap"))
        )  # fmt: skip
    if batch in cfg.extras_batches:
        rows += _extras(subject, x, target, sp, grad, run_sp, run_grad, device, cfg)
    return rows


def _extras(subject, x, target, sp, grad, run_sp, run_grad, device, cfg) -> list[Row]:  # type: ignore[no-untyped-def]
    """Ascent, several targets at once and SmoothGrad, each against its reference."""
    name, model, batch, rows = subject.name, subject.model, x.shape[0], []
    ascent = PullbackAscent(model, **subject.ascent)
    res = interleaved({"ascent": lambda: ascent.attribute(x, target=target), "grad": run_grad}, cfg.repeats, device)
    t = res["median"]
    r = Row(name, batch, "PullbackAscent K=5 vs Gradient", "PullbackAscent", "Gradient", t["ascent"], t["grad"])
    r.paired = paired_ratio(res, "ascent", "grad")
    r.target, r.met = "<= 5.5x", bool(_check(r.ratio, "<=", 5.5))
    rows.append(r)

    # Gradient's row is the reference: sharing the forward pass saves at most (F + B) / (F / T + B), which is
    # below 2 when a backward pass B costs more than 0.8 forward passes F.
    targets = list(range(cfg.targets))
    for method, label in ((sp, f"{cfg.targets} targets: separate vs at once"),
                          (grad, f"{cfg.targets} targets, Gradient (reference)")):  # fmt: skip
        res = interleaved(
            {
                "loop": lambda m=method: [m.attribute(x, target=c) for c in targets],
                "at_once": lambda m=method: m.attribute_targets(x, targets),
            },
            cfg.repeats,
            device,
        )
        t = res["median"]
        r = Row(name, batch, label, "separate", "attribute_targets", t["loop"], t["at_once"],
                paired=paired_ratio(res, "loop", "at_once"))  # fmt: skip
        if method is sp:
            r.target, r.met = ">= 2x", bool(_check(r.ratio, ">=", 2.0))
        rows.append(r)

    smooth = SmoothGrad(model, nt_samples=cfg.smooth_n, nt_samples_batch_size=max(1, 50 // batch))
    res = interleaved({"smooth": lambda: smooth.attribute(x, target=target), "sp": run_sp}, cfg.smooth_repeats, device)
    t = res["median"]
    rows.append(
        Row(name, batch, f"SmoothGrad n={cfg.smooth_n} vs SoftPullback", "SmoothGrad", "SoftPullback",
            t["smooth"], t["sp"], paired=paired_ratio(res, "smooth", "sp"))
    )  # fmt: skip
    return rows


def profile_table(subject: Subject, batch: int, device: torch.device, cfg: argparse.Namespace, rows: int = 20) -> str:
    """Where the time goes: the ops with the most self time in one SoftPullback and one gradient call."""
    from torch.profiler import ProfilerActivity, profile

    x = subject.inputs(batch, cfg.size).to(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    parts = []
    for label, method in (("SoftPullback", SoftPullback(subject.model, subject.temperatures)),
                          ("Gradient", Gradient(subject.model))):  # fmt: skip
        method.attribute(x, target=3)  # warm
        with _quiet_profiler(), profile(activities=activities) as prof:
            method.attribute(x, target=3)
            _sync(device)
        parts.append(
            f"{subject.name}, batch {batch}: {label}\n" + prof.key_averages().table(sort_by=sort, row_limit=rows)
        )
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    text = (
        f"CPU: {cpu}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}; "
        f"torch {torch.__version__}; Python {platform.python_version()}"
    )
    if device.type == "cuda":
        text += f"; GPU: {torch.cuda.get_device_name(device)}"
    with contextlib.suppress(OSError):
        text += f"; load average {os.getloadavg()[0]:.1f}"
    return text


def _mib(v: float | None) -> str:
    return "" if v is None else f"{v / 2**20:,.0f}"


def _x(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}x"


def table(rows: list[Row]) -> str:
    head = "| model | batch | comparison | A (s) | B (s) | A/B time | A (MiB) | B (MiB) | A/B mem | target | met |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(
            f"| {r.model} | {r.batch} | {r.comparison} | {r.time_a:.3f} | {r.time_b:.3f} | {_x(r.ratio)} | "
            f"{_mib(r.mem_a)} | {_mib(r.mem_b)} | {_x(r.mem_ratio)} | {r.target} | {met} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: Lite0 (recommended) and ResNet50 at 96x96, batch 1, 3 repeats"
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=None)
    parser.add_argument("--batches", nargs="+", type=int, default=None, help="default: 1 8 (CPU), 1 8 64 (CUDA)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per variant (default 5, quick 3)")
    parser.add_argument("--no-extras", action="store_true", help="only SoftPullback vs Gradient vs class-swap")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--profile", action="store_true", help="also print the ops with the most self time, SoftPullback and Gradient"
    )
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    args.models = args.models or (["lite0", "resnet50"] if args.quick else list(MODELS))
    args.batches = args.batches or ([1] if args.quick else [1, 8, 64] if cuda else [1, 8])
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.size = 96 if args.quick else 224
    # ascent, multi-target and SmoothGrad: smallest batch only
    args.extras_batches = set() if args.no_extras else {args.batches[0]}
    args.targets = 10
    args.smooth_n = 10 if args.quick else 50
    args.smooth_repeats = 1 if args.quick else 3

    print(machine(device))
    print(f"inputs {args.size}x{args.size}, medians of {args.repeats} interleaved runs after one warm-up each\n")
    rows: list[Row] = []
    profiles: list[str] = []
    for name in args.models:
        if args.size != 224 and name not in ("resnet50", "lite0"):  # lite0 reads photos at its own 224 px
            warnings.warn(f"{name} needs 224x224 inputs; skipped in --quick mode", stacklevel=1)
            continue
        subject = build_subject(name)
        subject.model.to(device)
        for batch in args.batches:
            start = time.perf_counter()
            rows += bench_config(subject, batch, device, args)
            print(f"  {name} batch {batch}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        if args.profile:
            profiles.append(profile_table(subject, args.batches[0], device, args))
    print(table(rows))
    for text in profiles:
        print(f"\n{text}")
    print(f"\n{machine(device)}")


if __name__ == "__main__":
    main()
