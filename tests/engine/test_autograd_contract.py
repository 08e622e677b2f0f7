"""The engine against autograd's own contract: checkpointing, saved tensors freed, the derivatives it refuses."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from semantic_pullbacks import NotDifferentiableError, pullback_mode
from semantic_pullbacks.methods import SoftPullback


class Block(nn.Module):
    """Every rule family in one block: conv-BN-ReLU (rebuilt gate), max pooling, LayerNorm, SDPA, GELU, SiLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.norm = nn.LayerNorm(8)
        self.qkv = nn.Linear(8, 24)
        self.mlp = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)  # (B, 8, 4, 4)
        t = self.norm(h.flatten(2).transpose(1, 2))  # (B, 16, 8)
        q, k, v = self.qkv(t).chunk(3, dim=-1)
        t = t + F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return F.silu(self.mlp(F.gelu(t)))


class Net(nn.Module):
    def __init__(self, use_reentrant: bool | None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.block = Block()
        self.head = nn.Linear(16 * 8, 5)
        self.use_reentrant = use_reentrant  # None: no checkpointing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_reentrant is None:
            return self.head(self.block(x).flatten(1))
        return self.head(checkpoint(self.block, x, use_reentrant=self.use_reentrant).flatten(1))


def _with_bn_statistics(net: Net) -> Net:
    with torch.no_grad():
        net.block.bn.running_mean.uniform_(-0.5, 0.5)
        net.block.bn.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _backward_pullback(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    with pullback_mode():
        model(x)[:, 2].sum().backward()
    return x.grad


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_activation_checkpointing_gives_the_same_soft_pullback(use_reentrant):
    x = torch.randn(2, 3, 8, 8)
    plain = _with_bn_statistics(Net(None))
    checkpointed = _with_bn_statistics(Net(use_reentrant))
    checkpointed.load_state_dict(plain.state_dict())
    reference = _backward_pullback(plain, x)
    xg = x.clone().requires_grad_(True)
    plain(xg)[:, 2].sum().backward()
    assert not torch.allclose(reference, xg.grad, atol=1e-4), "the test model must tell SP from the gradient"

    torch.testing.assert_close(_backward_pullback(checkpointed, x), reference, rtol=1e-5, atol=1e-7)
    # the explainers take the pullback with autograd.grad, which reentrant checkpointing refuses; they fall back
    attr = SoftPullback(checkpointed).attribute(x, target=2)
    torch.testing.assert_close(attr, reference, rtol=1e-5, atol=1e-7)
    if not use_reentrant:
        xg = x.clone().requires_grad_(True)
        with pullback_mode():
            (g,) = torch.autograd.grad(checkpointed(xg)[:, 2].sum(), xg)
        torch.testing.assert_close(g, reference, rtol=1e-5, atol=1e-7)


def test_reentrant_fallback_leaves_parameter_grads_as_found():
    model = _with_bn_statistics(Net(True))
    marker = torch.full_like(model.head.weight, 7.0)
    model.head.weight.grad = marker
    SoftPullback(model).attribute(torch.randn(1, 3, 8, 8), target=0)
    assert model.head.weight.grad is marker and bool((marker == 7.0).all())
    assert model.block.conv.weight.grad is None


def _our_nodes(root) -> list:
    """The backward nodes of the engine's own rules reachable from ``root``."""
    nodes, stack, seen = [], [root], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        forward_cls = getattr(type(node), "_forward_cls", None)  # a custom autograd Function's node
        if forward_cls is not None and forward_cls.__module__.startswith("semantic_pullbacks"):
            nodes.append(node)
        stack.extend(n for n, _ in node.next_functions)
    return nodes


def _tensors_in(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors_in(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors_in(v)]
    return []


def test_rules_keep_no_tensor_beyond_the_backward_pass():
    """Rules save through ``save_for_backward``: after the backward pass the graph holds none of their buffers,
    as ordinary autograd frees its saved tensors, even while the output (and so the graph) stays alive."""
    torch.manual_seed(0)
    stem = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU6(), nn.LeakyReLU(), nn.PReLU(3), nn.Hardswish())
    model = nn.Sequential(stem, nn.ReLU(), _with_bn_statistics(Net(None)).eval())
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    expected = {"_SoftGateBackward", "_FrozenNormBackward", "_SoftPoolBackward", "_FrozenSDPABackward"}
    for passes, relu in ((1, {"_SoftReLUBackward", "_RebuiltSoftReLUBackward", "_ChannelAffineBackward"}), (2, set())):
        with pullback_mode(backward_passes=passes):
            out = model(x)
            nodes = _our_nodes(out.grad_fn)
            assert {type(n).__name__ for n in nodes} >= expected | relu
            out[:, 0].sum().backward()
        held = {type(n).__name__: k for n in nodes for k, v in vars(n).items() if _tensors_in(v)}
        assert not held, f"rule nodes keep tensors after backward: {held}"
        assert out.grad_fn is not None  # the graph is alive; only its buffers are gone


def test_an_intermediate_tensor_is_freed_after_backward_like_with_ordinary_autograd():
    def run(soft: bool) -> bool:
        x = torch.randn(3, 5, requires_grad=True)
        hidden = x * 2.0
        ref = weakref.ref(hidden)
        with pullback_mode() if soft else torch.enable_grad():
            out = F.hardtanh(hidden) + F.gelu(hidden)  # both save their input for backward
        del hidden
        assert ref() is not None  # held by the graph until backward
        out.sum().backward()
        gc.collect()
        return ref() is None

    assert run(soft=False)
    assert run(soft=True)


def test_create_graph_is_refused_with_a_clear_error():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(3, 4, requires_grad=True)
    with pytest.raises(NotDifferentiableError, match="create_graph=True"), pullback_mode():
        torch.autograd.grad(model(x)[:, 0].sum(), x, create_graph=True)
    with pullback_mode():  # first-order pullbacks still work, and families set to None differentiate twice
        (g,) = torch.autograd.grad(model(x)[:, 0].sum(), x)
    with pullback_mode({"relu": None}):
        (g2,) = torch.autograd.grad(model(x)[:, 0].sum(), x, create_graph=True)
    assert g.shape == g2.shape and g2.requires_grad


def test_torch_func_transforms_are_refused_with_a_clear_error():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(3, 4)
    with pytest.raises(NotDifferentiableError, match=r"torch\.func"), pullback_mode():
        torch.func.grad(lambda t: model(t)[:, 0].sum())(x)
    torch.func.grad(lambda t: model(t)[:, 0].sum())(x)  # outside the mode, torch.func works as usual
