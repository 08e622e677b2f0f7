"""Hugging Face architectures built from configs (random weights, no download), both attention implementations.

Forward bit-identical; coverage complete (no nonlinear op on its ordinary gradient, nothing unhandled); each norm
module's adjoint equals the frozen-statistics closed form; the soft pullback differs from the gradient; and on a
tiny hand-written transformer, it equals the gradient of the same network with every gate detached (the paper's
frozen-gate linear map, at temperature 1).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

transformers = pytest.importorskip("transformers")

from semantic_pullbacks import pullback_mode  # noqa: E402

SMALL = dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, num_hidden_layers=2, vocab_size=100,
             max_position_embeddings=64)  # fmt: skip
# name -> (model_type, config kwargs, auto class, implementations, ops that must be softened)
ARCHITECTURES = {
    "bert": ("bert", SMALL, "AutoModelForSequenceClassification", {"gelu", "layer_norm", "tanh"}),
    "distilbert": (
        "distilbert",
        dict(dim=32, n_heads=4, hidden_dim=64, n_layers=2, vocab_size=100, max_position_embeddings=64),
        "AutoModelForSequenceClassification",
        {"gelu", "layer_norm", "relu"},
    ),
    "roberta": ("roberta", SMALL, "AutoModelForSequenceClassification", {"gelu", "layer_norm", "tanh"}),
    "mpnet": ("mpnet", SMALL, "AutoModel", {"gelu", "layer_norm", "tanh"}),
    "gpt2": (
        "gpt2",
        dict(n_embd=32, n_head=4, n_layer=2, vocab_size=100, n_positions=64, bos_token_id=0, eos_token_id=0),
        "AutoModelForCausalLM",
        {"gelu", "layer_norm"},
    ),
    "llama": ("llama", dict(SMALL, num_key_value_heads=2), "AutoModelForCausalLM", {"rms_norm", "swiglu"}),
    "qwen2": ("qwen2", dict(SMALL, num_key_value_heads=2), "AutoModelForCausalLM", {"rms_norm", "swiglu"}),
}
CASES = [(n, impl) for n in ARCHITECTURES for impl in ("eager", "sdpa") if not (n == "mpnet" and impl == "sdpa")]
ATTENTION_OP = {"eager": "softmax", "sdpa": "scaled_dot_product_attention"}


def build(name: str, impl: str) -> nn.Module:
    model_type, kwargs, auto, _ = ARCHITECTURES[name]
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(model_type, **kwargs)
    return getattr(transformers, auto).from_config(config, attn_implementation=impl).eval()


def inputs(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(3, 100, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # padding in the second sample
    return model.get_input_embeddings()(ids).detach(), mask


def first_output(model, emb, mask):  # type: ignore[no-untyped-def]
    out = model(inputs_embeds=emb, attention_mask=mask)
    return out.logits if hasattr(out, "logits") and out.logits is not None else out.last_hidden_state


@pytest.mark.parametrize("name,impl", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_architecture_forward_exact_coverage_complete(name, impl):
    model = build(name, impl)
    emb, mask = inputs(model)
    emb.requires_grad_(True)
    reference = first_output(model, emb, mask)
    v = torch.randn_like(reference)
    with pullback_mode() as pb:
        out = first_output(model, emb, mask)
        (soft,) = torch.autograd.grad(out, emb, v)
    assert torch.equal(out, reference), "forward pass changed inside pullback_mode"
    (grad,) = torch.autograd.grad(first_output(model, emb, mask), emb, v)
    assert torch.isfinite(soft).all() and soft.abs().sum() > 0
    assert (soft - grad).norm() > 0.05 * grad.norm(), "the soft pullback is the gradient"
    assert pb.coverage.unhandled == {} and pb.coverage.ordinary == {}, str(pb.coverage)
    must = ARCHITECTURES[name][3] | {ATTENTION_OP[impl]}
    assert must <= set(pb.coverage.softened), str(pb.coverage)


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_eager_and_sdpa_give_the_same_pullback(name):
    maps = []
    for impl in ("eager", "sdpa"):
        model = build(name, impl)
        emb, mask = inputs(model)
        emb.requires_grad_(True)
        with pullback_mode():
            out = first_output(model, emb, mask)
            (g,) = torch.autograd.grad(out[:, -1].sum(), emb)
        maps.append(g)
    torch.testing.assert_close(maps[0], maps[1], rtol=1e-4, atol=1e-6)


def _norm_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if type(m).__name__.endswith(("LayerNorm", "RMSNorm"))]


@pytest.mark.parametrize("name", ["bert", "distilbert", "gpt2", "llama", "qwen2"])
def test_each_norm_module_adjoint_is_the_frozen_statistics_closed_form(name):
    model = build(name, "eager")
    emb, mask = inputs(model)
    seen: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda m, a, o: seen.append((m, a[0].detach()))) for m in _norm_modules(model)]
    try:
        with torch.no_grad():
            first_output(model, emb, mask)
    finally:
        for h in hooks:
            h.remove()
    assert len(seen) >= 3
    for module, x in seen:
        x = x.clone().requires_grad_(True)
        v = torch.randn_like(x)
        with pullback_mode() as pb:
            (g,) = torch.autograd.grad(module(x), x, v)
        rms = isinstance(getattr(module, "variance_epsilon", None), float)
        eps = module.variance_epsilon if rms else module.eps
        centred = x if rms else x - x.mean(-1, keepdim=True)
        closed = v * module.weight / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + eps)
        torch.testing.assert_close(g, closed, rtol=1e-5, atol=1e-6)
        assert set(pb.coverage.softened) == {"rms_norm" if rms else "layer_norm"}


# --- a tiny transformer and its frozen-gate reference -------------------------------------------------------
class TinyDecoder(nn.Module):
    """One Llama-style block (RMSNorm, causal softmax attention, SwiGLU), a GPT-2 GELU and a BERT-style tanh pooler."""

    def __init__(self, d: int = 8, heads: int = 2, hidden: int = 16) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.gate, self.up, self.down = nn.Linear(d, hidden), nn.Linear(d, hidden), nn.Linear(hidden, d)
        self.n1, self.n2 = nn.Parameter(torch.rand(d) + 0.5), nn.Parameter(torch.rand(d) + 0.5)
        self.fc, self.pool, self.head = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, 3)

    def rms(self, h: torch.Tensor, w: torch.Tensor, frozen: bool) -> torch.Tensor:
        r = torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        return w * (h * (r.detach() if frozen else r))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.rms(x, self.n1, False)
        q, k, v = (p(h).view(b, t, self.heads, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)
        scores = scores.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
        w = scores.softmax(-1)
        x = x + self.o((w @ v).transpose(1, 2).reshape(b, t, d))
        h = self.rms(x, self.n2, False)
        x = x + self.down(F.silu(self.gate(h)) * self.up(h))
        z = self.fc(x[:, -1])
        z = 0.5 * z * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * torch.pow(z, 3.0))))
        return self.head(torch.tanh(self.pool(z)))


def test_soft_pullback_of_a_tiny_transformer_equals_the_frozen_gate_linear_map():
    torch.manual_seed(0)
    model = TinyDecoder().eval()
    x = torch.randn(2, 5, 8, requires_grad=True)
    v = torch.randn(2, 3)
    temperatures = {"gelu": 1.0, "silu": 1.0, "attention": 1.0, "bounded": 1.0}
    with pullback_mode(temperatures) as pb:
        out = model(x)
        (soft,) = torch.autograd.grad(out, x, v)
    assert pb.coverage.unhandled == {} and pb.coverage.ordinary == {}, str(pb.coverage)
    assert set(pb.coverage.softened) == {"rms_norm", "softmax", "swiglu", "gelu", "tanh"}

    # reference: every gate detached; the GELU's adjoint is its gate Phi(z), frozen
    def reference(x: torch.Tensor) -> torch.Tensor:
        original = torch.tanh

        def frozen_gelu_forward(z: torch.Tensor) -> torch.Tensor:
            """The forward value of the written-out GELU; its adjoint is the paper's gate Phi(z) (frozen)."""
            value = 0.5 * z * (1.0 + original(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z.pow(3))))
            gate = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
            surrogate = z * gate.detach()
            return value.detach() + (surrogate - surrogate.detach())

        b, t, d = x.shape
        m = model
        h = m.rms(x, m.n1, True)
        q, k, vv = (p(h).view(b, t, m.heads, -1).transpose(1, 2) for p in (m.q, m.k, m.v))
        scores = (q @ k.transpose(-2, -1) / math.sqrt(d // m.heads)).masked_fill(
            ~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf")
        )
        x = x + m.o((scores.softmax(-1).detach() @ vv).transpose(1, 2).reshape(b, t, d))
        h = m.rms(x, m.n2, True)
        x = x + m.down(F.silu(m.gate(h)).detach() * m.up(h))
        p = m.pool(frozen_gelu_forward(m.fc(x[:, -1])))
        return m.head(p * (original(p) / p).detach())

    xr = x.detach().clone().requires_grad_(True)
    out_ref = reference(xr)
    torch.testing.assert_close(out_ref, out.detach(), rtol=1e-5, atol=1e-6)  # the frozen map reproduces the output
    (expected,) = torch.autograd.grad(out_ref, xr, v)
    torch.testing.assert_close(soft, expected, rtol=1e-4, atol=1e-6)
    (grad,) = torch.autograd.grad(model(x), x, v)
    assert (soft - grad).norm() > 0.05 * grad.norm()
