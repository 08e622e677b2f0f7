"""SDPA's frozen attention runs its backward pass on SDPA's own kernels: the same values adjoint as the explicit
softened weights, grouped-query and fully masked rows included, without ever holding the seq x seq weights."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from semantic_pullbacks import pullback_mode


def reference_grad_v(q, k, mask, tau, g, causal=False):  # type: ignore[no-untyped-def]
    """``softmax(q k^T / (tau sqrt d))^T g`` from explicit weights, keys repeated to the queries' heads."""
    k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
    s = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if causal:
        s = s.masked_fill(~torch.ones(s.shape[-2:], dtype=torch.bool).tril(), float("-inf"))
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.nan_to_num(torch.softmax(s / tau, -1))
    return w.transpose(-2, -1) @ g


def soft_grad_v(q, k, v, g, tau, **kwargs):  # type: ignore[no-untyped-def]
    v = v.clone().requires_grad_(True)
    with pullback_mode({"attention": tau}):
        (gv,) = torch.autograd.grad(F.scaled_dot_product_attention(q, k, v, **kwargs), v, g)
    return gv


def test_grouped_query_attention_folds_the_value_adjoint_back_to_its_heads():
    torch.manual_seed(0)
    q = torch.randn(2, 4, 6, 8, dtype=torch.float64)
    k, v = torch.randn(2, 2, 6, 8, dtype=torch.float64), torch.randn(2, 2, 6, 8, dtype=torch.float64)
    g = torch.randn(2, 4, 6, 8, dtype=torch.float64)
    got = soft_grad_v(q, k, v, g, 0.7, enable_gqa=True, is_causal=True)
    expected = reference_grad_v(q, k, None, 0.7, g, causal=True).unflatten(1, (2, 2)).sum(2)
    torch.testing.assert_close(got, expected)


def test_a_query_that_sees_no_key_gives_zero_not_nan():
    torch.manual_seed(1)
    q, k, v, g = (torch.randn(1, 2, 5, 4, dtype=torch.float64) for _ in range(4))
    mask = torch.rand(5, 5) > 0.4
    mask[:, 0] = True
    mask[3] = False  # query 3 attends to nothing
    got = soft_grad_v(q, k, v, g, 0.5, attn_mask=mask)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, reference_grad_v(q, k, mask, 0.5, g))


def _peak_bytes(fn) -> int:  # type: ignore[no-untyped-def]
    """Peak of the running total of tensor allocations the profiler saw during ``fn()``."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation:
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
        stack.extend(node.children)
    total = peak = 0
    for _, size in sorted(events):
        total += size
        peak = max(peak, total)
    return peak


def test_the_backward_pass_never_holds_the_attention_weights():
    torch.manual_seed(2)
    n = 2048  # the weights would take n * n * 4 bytes = 16 MiB per head; the kernel needs a few MiB of tiles
    q, k = torch.randn(1, 1, n, 16), torch.randn(1, 1, n, 16)
    v = torch.randn(1, 1, n, 16, requires_grad=True)
    g = torch.randn(1, 1, n, 16)
    with pullback_mode({"attention": 0.5}):
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        peak = _peak_bytes(lambda: torch.autograd.grad(out, v, g))
    assert peak < n * n * 4 / 2, f"the backward pass allocated {peak / 2**20:.1f} MiB at its peak"
