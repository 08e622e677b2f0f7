"""The engine on accelerators: pooling's soft backward without host syncs or loops over cells, SDPA and autocast
forwards identical to the plain model's.

The CPU tests check the properties that make this hold (the paths an accelerator takes, the grad mode the exact
SDPA kernel runs in, autocast on CPU); the tests marked ``cuda`` check it on a GPU and are skipped without one
(``benchmarks/gpu_check.sh`` runs them).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from semantic_pullbacks import Relative, pullback_mode

from .test_architectures import build
from .test_rules_analytic import POOLS, pullback, slow_soft_maxpool


# ------------------------------------------------------------------------------------------------ max pooling
@pytest.mark.parametrize("pool", ["max_pool2d", "adaptive_max_pool2d"])
def test_unbatched_relative_maxpool_equals_the_sample_batched(pool):
    """Issue 11, failure 2: an unbatched (C, H, W) input with a Relative temperature crashed in ``t.reshape(())``;
    it must give the map of the same sample in a batch of one (one std over all its elements)."""
    fn = (lambda t: F.max_pool2d(t, 2)) if pool == "max_pool2d" else (lambda t: F.adaptive_max_pool2d(t, 3))
    torch.manual_seed(0)
    x = torch.randn(3, 4, 4) * torch.tensor([1.0, 5.0, 0.2]).view(3, 1, 1)  # channels of different scale
    v = torch.randn_like(fn(x))
    (unbatched,) = pullback(fn, x, direction=v, temperatures={"maxpool": Relative(0.5)})
    (batched,) = pullback(fn, x[None], direction=v[None], temperatures={"maxpool": Relative(0.5)})
    torch.testing.assert_close(unbatched, batched[0], rtol=0, atol=0)
    tau = 0.5 * x.std(unbiased=False)
    if pool == "max_pool2d":
        torch.testing.assert_close(unbatched, slow_soft_maxpool(x, v, (2, 2), (2, 2), (0, 0), (1, 1), tau))


def _adaptive_reference(x: torch.Tensor, v: torch.Tensor, out: tuple[int, ...], tau: float) -> torch.Tensor:
    """Cell by cell: each output's gradient spread by softmax over its adaptive window."""
    import itertools

    nd = len(out)
    sizes = x.shape[-nd:]
    ref = torch.zeros_like(x)
    for cell in itertools.product(*[range(o) for o in out]):
        sl = tuple(slice((c * s) // o, -((-(c + 1) * s) // o)) for c, s, o in zip(cell, sizes, out))
        win = x[(..., *sl)]
        w = torch.softmax(win.flatten(-nd) / tau, -1).view(win.shape)
        ref[(..., *sl)] += w * v[(..., *cell)].reshape(*v.shape[:-nd], *([1] * nd))
    return ref


@pytest.mark.parametrize(
    ("shape", "out"),
    [((2, 3, 7), (3,)), ((2, 3, 5), (8,)), ((1, 2, 7, 10), (3, 4)), ((2, 6, 9), (4, 5)), ((1, 2, 5, 6, 7), (2, 4, 3))],
    ids=["1d", "1d-upsampling", "2d", "2d-unbatched", "3d"],
)
def test_adaptive_maxpool_without_a_loop_over_cells_matches_the_reference(shape, out):
    torch.manual_seed(1)
    x = torch.randn(*shape, dtype=torch.float64)
    fn = getattr(F, f"adaptive_max_pool{len(out)}d")
    v = torch.randn_like(fn(x, out))
    (g,) = pullback(lambda t: fn(t, out), x, direction=v, temperatures={"maxpool": 0.4})
    torch.testing.assert_close(g, _adaptive_reference(x, v, out, 0.4))


def test_accelerator_maxpool_path_is_exact_where_the_factored_one_gives_up():
    """Off the CPU the offset-by-offset path runs without the factored path's host-side checks: it must be exact
    on its own, also for windows far below their channel's maximum, and give non-finite windows no gradient."""
    from semantic_pullbacks.engine.rules import pooling

    torch.manual_seed(5)
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    x[0, 0, 0, 0] = 200.0
    x[0, 1, :2, :2] = float("-inf")
    v = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    z = x / 0.3
    got = pooling._offsetwise_grad(z, v, 2, (2, 2), (2, 2), (0, 0), (1, 1), [0, 0], (4, 4))
    assert torch.isfinite(got).all() and got[0, 1, :2, :2].abs().sum() == 0
    finite = x.clone()
    finite[0, 1, :2, :2] = 0.0
    expected = slow_soft_maxpool(finite, v, (2, 2), (2, 2), (0, 0), (1, 1), 0.3)
    expected[0, 1, :2, :2] = 0.0
    torch.testing.assert_close(got, expected)


# ------------------------------------------------------------------------------------------------ SDPA
class _GradModeAtKernel(TorchDispatchMode):
    """Records, for each SDPA kernel that runs, whether grad mode was on: SDPA chooses its CUDA kernel from it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, bool]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if "scaled_dot_product" in str(func):
            self.seen.append((str(func), torch.is_grad_enabled()))
        return func(*args, **(kwargs or {}))


def test_sdpa_exact_kernel_runs_in_the_callers_grad_mode():
    """Inside an autograd.Function's forward grad mode is off, which can make SDPA pick another CUDA kernel than
    the plain model (other output bits). The exact op must run as the plain model runs it."""
    q, k, v = (torch.randn(2, 3, 5, 4, requires_grad=True) for _ in range(3))
    with _GradModeAtKernel() as plain:
        reference = F.scaled_dot_product_attention(q, k, v)
    with _GradModeAtKernel() as inside, pullback_mode() as pb:
        out = F.scaled_dot_product_attention(q, k, v)
    assert pb.coverage.softened == {"scaled_dot_product_attention": 1}
    assert inside.seen == plain.seen and plain.seen[0][1] is True
    assert torch.equal(out, reference)
    out.mul_(2.0)  # the output is an ordinary tensor: in-place ops on it work as on the plain model's
    (gv,) = torch.autograd.grad(out.sum(), v)
    w = torch.softmax(q @ k.transpose(-2, -1) / 2.0, -1).detach()
    torch.testing.assert_close(gv, 2.0 * w.transpose(-2, -1) @ torch.ones_like(out))


def test_multihead_attention_inner_sdpa_runs_in_the_callers_grad_mode():
    torch.manual_seed(2)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    x = torch.randn(3, 5, 8, requires_grad=True)
    with _GradModeAtKernel() as plain:
        reference = mha(x, x, x, need_weights=False)[0]
    with _GradModeAtKernel() as inside, pullback_mode() as pb:
        out = mha(x, x, x, need_weights=False)[0]
    assert pb.coverage.softened == {"multi_head_attention": 1}
    assert inside.seen == plain.seen and plain.seen and all(grad for _, grad in plain.seen)
    assert torch.equal(out, reference)


# ------------------------------------------------------------------------------------------------ autocast
def _small_models() -> dict[str, tuple[nn.Module, int]]:
    vit = {"image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64}
    return {
        "resnet18": (build("torchvision", "resnet18", {}), 64),
        "vit_tiny": (build("timm", "vit_tiny_patch16_224", {"img_size": 64}), 64),
        "tv_vit": (build("torchvision", "VisionTransformer", vit), 32),
    }


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_forward_is_the_plain_models_on_cpu(dtype):
    for name, (model, size) in _small_models().items():
        x = torch.randn(2, 3, size, size, requires_grad=True)
        with torch.autocast("cpu", dtype=dtype):
            reference = model(x)
            with pullback_mode():
                out = model(x)
                (g,) = torch.autograd.grad(out[:, 3].sum(), x)
        assert out.dtype == reference.dtype == dtype, name
        assert torch.equal(out, reference), name
        assert torch.isfinite(g).all() and g.abs().sum() > 0, name


# ------------------------------------------------------------------------------------------------ on a GPU
@pytest.mark.cuda
@pytest.mark.parametrize("case", POOLS, ids=[p[0] for p in POOLS])
def test_cuda_maxpool_backward_has_no_host_sync_and_matches_the_reference(case):
    _, fn, k, s, p, d, shape = case
    torch.manual_seed(4)
    x = torch.randn(*shape, dtype=torch.float64, device="cuda", requires_grad=True)
    for tau in (0.3, Relative(0.5)):
        with pullback_mode({"maxpool": tau}):
            out = fn(x)
            v = torch.randn_like(out)
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            try:
                (g,) = torch.autograd.grad(out, x, v)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        t = tau if isinstance(tau, float) else None
        if t is not None:
            expected = slow_soft_maxpool(x.detach().cpu(), v.cpu(), k, s, p, d, t)
            torch.testing.assert_close(g.cpu(), expected)


@pytest.mark.cuda
@pytest.mark.parametrize("out", [(3, 4), (1, 1), (7, 5)])
def test_cuda_adaptive_maxpool_backward_has_no_host_sync(out):
    torch.manual_seed(2)
    x = torch.randn(2, 3, 7, 10, dtype=torch.float64, device="cuda", requires_grad=True)
    with pullback_mode({"maxpool": 0.4}):
        y = F.adaptive_max_pool2d(x, out)
        v = torch.randn_like(y)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            (g,) = torch.autograd.grad(y, x, v)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(g.cpu(), _adaptive_reference(x.detach().cpu(), v.cpu(), out, 0.4))


_SDPA_CASES = [
    # (batch, heads, queries, keys, head dim): sizes that send SDPA to flash, memory-efficient, cuDNN or math
    (2, 4, 128, 128, 64),
    (1, 2, 77, 77, 256),
    (2, 8, 197, 197, 64),
    (1, 1, 5, 9, 8),
    (4, 2, 64, 300, 128),
]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", _SDPA_CASES, ids=["x".join(map(str, s)) for s in _SDPA_CASES])
@pytest.mark.parametrize("variant", ["plain", "causal", "bool-mask", "float-mask"])
def test_cuda_sdpa_forward_is_bit_identical(dtype, shape, variant):
    b, h, lq, lk, e = shape
    torch.manual_seed(3)
    q = torch.randn(b, h, lq, e, device="cuda", dtype=dtype, requires_grad=True)
    k, v = (torch.randn(b, h, lk, e, device="cuda", dtype=dtype, requires_grad=True) for _ in range(2))
    kwargs: dict = {}
    if variant == "causal":
        kwargs["is_causal"] = True
    elif variant == "bool-mask":
        kwargs["attn_mask"] = torch.rand(lq, lk, device="cuda") > 0.2
    elif variant == "float-mask":
        kwargs["attn_mask"] = torch.randn(lq, lk, device="cuda", dtype=dtype)
    reference = F.scaled_dot_product_attention(q, k, v, **kwargs)
    with pullback_mode() as pb:
        out = F.scaled_dot_product_attention(q, k, v, **kwargs)
        (gv,) = torch.autograd.grad(out.float().sum(), v)
    assert pb.coverage.softened == {"scaled_dot_product_attention": 1}
    assert torch.equal(out, reference)
    assert torch.isfinite(gv).all()


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_forward_is_the_plain_models(dtype):
    for name, (model, size) in _small_models().items():
        model = model.cuda()
        x = torch.randn(4, 3, size, size, device="cuda", requires_grad=True)
        with torch.autocast("cuda", dtype=dtype):
            reference = model(x)
            with pullback_mode():
                out = model(x)
                (g,) = torch.autograd.grad(out[:, 3].sum(), x)
        assert torch.equal(out, reference), name
        assert torch.isfinite(g).all() and g.abs().sum() > 0, name


@pytest.mark.cuda
def test_cuda_soft_pullback_matches_cpu():
    from semantic_pullbacks.methods import SoftPullback

    model, size = _small_models()["resnet18"]
    x = torch.randn(2, 3, size, size)
    on_cpu = SoftPullback(model).attribute(x, target=3)
    on_gpu = SoftPullback(model.cuda()).attribute(x.cuda(), target=3)
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-3, atol=1e-5)
