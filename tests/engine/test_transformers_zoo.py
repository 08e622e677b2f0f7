"""A sweep over the Hugging Face decoder and encoder-decoder zoo, built from tiny configs (random weights).

For every architecture x attention implementation this transformers version builds: the forward pass inside
``pullback_mode`` is bit-identical, the soft pullback is finite and differs from the gradient, the ops each
family is known for are softened, and nothing is left on its ordinary gradient -- except the gaps listed in
``KNOWN_GAPS``, which are asserted exactly, so that the coverage report stays honest in both directions.
Encoder-decoders are explained with respect to the encoder's and the decoder's input embeddings at once.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from semantic_pullbacks import pullback_mode  # noqa: E402

V = 100
DECODER = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, head_dim=8,
               num_hidden_layers=2, vocab_size=V, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
               eos_token_id=2)  # fmt: skip
T5 = dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, vocab_size=V, relative_attention_num_buckets=8)
BART = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
            encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=V, max_position_embeddings=64, pad_token_id=0,
            decoder_start_token_id=2)  # fmt: skip
GPTJ = dict(n_embd=32, n_head=4, n_layer=2, vocab_size=V, rotary_dim=4, n_positions=64)
RMS_SWIGLU = {"rms_norm", "swiglu"}
LN_GELU = {"layer_norm", "gelu"}

# name -> (model_type, config kwargs, ops that must be softened besides attention)
ZOO = {
    "gemma": ("gemma", DECODER, {"rms_norm", "geglu"}),
    "gemma2": ("gemma2", DECODER, {"rms_norm", "geglu", "tanh"}),  # tanh: the logit soft-capping
    "gemma3": ("gemma3_text", DECODER, {"rms_norm", "geglu"}),
    "phi": ("phi", DECODER, LN_GELU),
    "phi3": ("phi3", DECODER, RMS_SWIGLU),
    "mistral": ("mistral", DECODER, RMS_SWIGLU),
    "falcon": ("falcon", dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, vocab_size=V), LN_GELU),
    "gpt_neox": ("gpt_neox", DECODER, LN_GELU),
    "opt": ("opt", DECODER, {"layer_norm", "relu"}),
    "stablelm": ("stablelm", DECODER, {"layer_norm", "swiglu"}),
    "qwen3": ("qwen3", DECODER, RMS_SWIGLU),
    "olmo": ("olmo", DECODER, {"layer_norm", "swiglu"}),
    "olmo2": ("olmo2", DECODER, RMS_SWIGLU),
    "cohere": ("cohere", DECODER, {"layer_norm", "swiglu"}),
    "starcoder2": ("starcoder2", DECODER, LN_GELU),
    "granite": ("granite", DECODER, RMS_SWIGLU),
    "gptj": ("gptj", GPTJ, LN_GELU),
    "codegen": ("codegen", dict(GPTJ, n_ctx=64), LN_GELU),
    "gpt_bigcode": ("gpt_bigcode", DECODER, LN_GELU),
    "biogpt": ("biogpt", DECODER, LN_GELU),
    "helium": ("helium", DECODER, RMS_SWIGLU),
    "glm": ("glm", DECODER, RMS_SWIGLU),
    "smollm3": ("smollm3", DECODER, RMS_SWIGLU),
    "mixtral": ("mixtral", DECODER, RMS_SWIGLU),
    "qwen3_moe": ("qwen3_moe", DECODER, RMS_SWIGLU),
    "bloom": ("bloom", DECODER, {"layer_norm"}),
    "persimmon": ("persimmon", DECODER, {"layer_norm", "relu"}),
    "t5": ("t5", T5, {"rms_norm", "relu"}),
    "t5-gated-gelu": ("t5", dict(T5, feed_forward_proj="gated-gelu"), {"rms_norm", "geglu"}),
    "mt5": ("mt5", T5, {"rms_norm", "geglu"}),
    "bart": ("bart", BART, LN_GELU),
    "marian": ("marian", BART, LN_GELU),
}

#: What stays on the ordinary gradient, per architecture, and why.
KNOWN_GAPS = {
    # Mixture-of-experts routing: softmax -> top-k -> renormalise -> multiply the chosen experts' outputs. The
    # routing weights keep their ordinary gradient (a softmax, a product and, in Mixtral, the in-place division
    # per layer): no rule freezes them.
    "mixtral": ({"softmax": 2}, {"div": 2, "product": 2}),
    "qwen3_moe": ({"softmax": 2}, {"product": 2}),
    # Bloom reshapes the softmax output with .view before torch.bmm; the view drops the tag that lets the
    # product freeze the weights, so its attention weights keep their ordinary gradient. Its GELU is a TorchScript
    # function, which no torch-function mode sees: it keeps its gradient and is missing from the report.
    "bloom": ({"softmax": 2}, {}),
    # Persimmon's squared ReLU, relu(x) ** 2: the ReLU is softened, the square keeps its gradient.
    "persimmon": ({}, {"pow": 2}),
}

IMPLEMENTATIONS = ("eager", "sdpa")
ATTENTION_OP = {"eager": "softmax", "sdpa": "scaled_dot_product_attention"}


def build(name: str, impl: str) -> torch.nn.Module:
    model_type, kwargs, _ = ZOO[name]
    config = transformers.AutoConfig.for_model(model_type, **kwargs)
    auto = transformers.AutoModelForSeq2SeqLM if config.is_encoder_decoder else transformers.AutoModelForCausalLM
    torch.manual_seed(0)
    try:
        return auto.from_config(config, attn_implementation=impl).eval()
    except ValueError as e:  # this transformers version has no such implementation for the architecture
        pytest.skip(str(e).splitlines()[0][:120])


def model_inputs(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Embeddings that require grad (encoder and decoder for seq2seq models) and a padded attention mask."""
    torch.manual_seed(1)
    ids = torch.randint(3, V, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    kwargs = {"inputs_embeds": emb, "attention_mask": mask}
    if not model.config.is_encoder_decoder:
        return kwargs, [emb]
    decoder = model.get_input_embeddings()(torch.randint(3, V, (2, 5))).detach()
    if getattr(model.config, "model_type", "") in ("bart", "marian"):
        decoder = decoder * getattr(model.get_decoder().embed_tokens, "embed_scale", 1.0)
    kwargs["decoder_inputs_embeds"] = decoder.requires_grad_(True)
    return kwargs, [emb, kwargs["decoder_inputs_embeds"]]


CASES = [(n, impl) for n in ZOO for impl in IMPLEMENTATIONS]


@pytest.mark.parametrize("name,impl", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_zoo_forward_exact_and_every_gate_softened(name, impl):
    model = build(name, impl)
    kwargs, wrt = model_inputs(model)
    reference = model(**kwargs).logits
    v = torch.randn_like(reference)
    with pullback_mode() as pb:
        out = model(**kwargs).logits
        soft = torch.autograd.grad(out, wrt, v)
    assert torch.equal(out, reference), "forward pass changed inside pullback_mode"
    grad = torch.autograd.grad(model(**kwargs).logits, wrt, v)
    for s, g in zip(soft, grad):
        assert torch.isfinite(s).all() and s.abs().sum() > 0
        assert (s - g).norm() > 0.05 * g.norm(), "the soft pullback is the gradient"
    ordinary, unhandled = KNOWN_GAPS.get(name, ({}, {}))
    assert pb.coverage.ordinary == ordinary and pb.coverage.unhandled == unhandled, str(pb.coverage)
    must = ZOO[name][2] | ({ATTENTION_OP[impl]} if name != "bloom" else set())
    assert must <= set(pb.coverage.softened), str(pb.coverage)


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_encoder_decoder_attention_counts(name):
    """Every attention is softened: the encoder's self-attention, the decoder's, and the cross-attention."""
    model = build(name, "eager")
    kwargs, wrt = model_inputs(model)
    with pullback_mode() as pb:
        torch.autograd.grad(model(**kwargs).logits.sum(), wrt)
    layers = 2
    assert pb.coverage.softened["softmax"] == 3 * layers, str(pb.coverage)  # encoder self, decoder self, cross


def test_gemma_norm_offset_weight_is_linear_and_the_statistic_frozen():
    """Gemma's ``x * rsqrt(mean(x^2) + eps) * (1 + w)``: the adjoint is ``v * (1 + w) / rms(x)``."""
    config = transformers.AutoConfig.for_model("gemma", **DECODER)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    norm = model.model.layers[0].input_layernorm
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(-0.5, 0.5, 32))
    x = torch.randn(2, 3, 32, requires_grad=True)
    v = torch.randn(2, 3, 32)
    with pullback_mode() as pb:
        (g,) = torch.autograd.grad(norm(x), x, v)
    closed = v * (1 + norm.weight) / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)
    torch.testing.assert_close(g, closed, rtol=1e-5, atol=1e-6)
    assert pb.coverage.softened == {"rms_norm": 1} and not pb.coverage.unhandled, str(pb.coverage)
