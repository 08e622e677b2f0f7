"""Big models: half precision, accelerate's device maps and hooks, quantised layers (all on CPU, nothing downloaded)."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from semantic_pullbacks import pullback_mode  # noqa: E402
from semantic_pullbacks.errors import InvalidInputError, MissingDependencyError, UnsupportedModelError  # noqa: E402
from semantic_pullbacks.text import TextExplainer, load_text_model  # noqa: E402
from semantic_pullbacks.text.explain import token_relevance  # noqa: E402
from semantic_pullbacks.text.model import TextModel  # noqa: E402

from .test_causal_lm import bos_tokenizer  # noqa: E402

PROMPT = "the cat sat on"
CONTINUATION = " the warm mat"


def tiny_llama() -> nn.Module:
    config = transformers.LlamaConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                      intermediate_size=64, num_hidden_layers=2, vocab_size=32)  # fmt: skip
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    model = tiny_llama()
    model.config.architectures = ["LlamaForCausalLM"]
    model.save_pretrained(path)
    bos_tokenizer().save_pretrained(path)
    return path


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_with_a_device_map_loads_and_its_forward_is_bit_identical_in_the_mode(folder, dtype):
    tm = load_text_model(folder, offline=True, dtype=dtype, device_map="cpu")
    assert next(tm.model.parameters()).dtype == dtype
    enc = tm.encode([PROMPT])
    emb = tm.embed(enc.input_ids).requires_grad_(True)
    reference = tm.forward_module(emb, enc.attention_mask)
    with pullback_mode() as pb:
        out = tm.forward_module(emb, enc.attention_mask)
        (pullback,) = torch.autograd.grad(out[0, -1, 5].float(), emb)
    assert torch.equal(out, reference) and out.dtype == dtype
    assert pullback.dtype == dtype and torch.isfinite(pullback).all()
    assert not pb.coverage.unhandled and not pb.coverage.ordinary, str(pb.coverage)
    result = TextExplainer(tm).attribute(PROMPT, continuation=CONTINUATION)
    assert all(map(torch.isfinite, torch.tensor(result.relevance)))


def test_the_embedded_model_loads_in_half_precision_too():
    tm = load_text_model(dtype=torch.bfloat16)
    assert next(tm.model.parameters()).dtype == torch.bfloat16 and tm.name == "all-MiniLM-L6-v2"
    assert next(load_text_model().model.parameters()).dtype == torch.float32  # the shared copy is untouched


def test_relevance_of_half_precision_maps_is_summed_in_float32():
    torch.manual_seed(0)
    emb = torch.randn(2, 5, 512).to(torch.bfloat16)
    maps = torch.randn(2, 5, 512).to(torch.bfloat16)
    signed, l2 = token_relevance(emb, maps)
    assert signed.dtype == l2.dtype == torch.float32
    exact = (emb.double() * maps.double()).sum(-1)
    torch.testing.assert_close(signed.double(), exact, rtol=1e-6, atol=1e-5)  # bf16 sums are off by ~1e-2


def test_a_model_behind_accelerate_offload_hooks_gets_the_plain_models_explanation(folder):
    accelerate = pytest.importorskip("accelerate")
    tokenizer = bos_tokenizer()
    plain = tiny_llama()
    offloaded = accelerate.cpu_offload(copy.deepcopy(plain), execution_device=torch.device("cpu"))
    assert any(hasattr(m, "_hf_hook") for m in offloaded.modules()), "no accelerate hook was attached"
    expected = TextExplainer(plain, tokenizer).attribute(PROMPT, continuation=CONTINUATION)
    got = TextExplainer(offloaded, tokenizer).attribute(PROMPT, continuation=CONTINUATION)
    assert got.tokens == expected.tokens
    torch.testing.assert_close(torch.tensor(got.relevance), torch.tensor(expected.relevance), rtol=1e-5, atol=1e-7)


def test_device_map_without_accelerate_is_a_typed_error(folder, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "accelerate" else real(name, *a))
    with pytest.raises(MissingDependencyError, match="accelerate"):
        load_text_model(folder, offline=True, device_map="auto")


def test_a_dtype_that_is_not_floating_point_is_a_typed_error(folder):
    with pytest.raises(InvalidInputError, match="not a floating-point dtype"):
        load_text_model(folder, offline=True, dtype=torch.int8)


@pytest.mark.parametrize("bits", [4, 8])
def test_bitsandbytes_quantised_model_is_explained_on_cpu(folder, bits):
    pytest.importorskip("bitsandbytes")
    quantisation = transformers.BitsAndBytesConfig(
        **({"load_in_4bit": True, "bnb_4bit_compute_dtype": torch.float32} if bits == 4 else {"load_in_8bit": True})
    )
    tm = load_text_model(folder, offline=True, quantization_config=quantisation, device_map="cpu")
    assert {type(m).__name__ for m in tm.model.modules()} & {"Linear4bit", "Linear8bitLt"}
    enc = tm.encode([PROMPT])
    emb = tm.embed(enc.input_ids).float().requires_grad_(True)
    reference = tm.forward_module(emb, enc.attention_mask)
    with pullback_mode():
        out = tm.forward_module(emb, enc.attention_mask)
        (pullback,) = torch.autograd.grad(out[0, -1, 5], emb)
    (gradient,) = torch.autograd.grad(tm.forward_module(emb, enc.attention_mask)[0, -1, 5], emb)
    assert torch.equal(out, reference)
    assert torch.isfinite(pullback).all() and (pullback - gradient).norm() > 0.05 * gradient.norm()


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight):  # type: ignore[no-untyped-def, override]
        return x @ weight.t()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        raise NotImplementedError("int4 matmul has no backward kernel on this device")


class Linear4bit(nn.Linear):
    """Named like bitsandbytes' layer; its kernel, like some quantised kernels on some devices, has no backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _NoBackward.apply(x, self.weight)


def test_a_quantised_layer_without_a_backward_pass_is_refused_by_name():
    model = tiny_llama()
    model.lm_head = Linear4bit(32, 32, bias=False)
    with pytest.raises(UnsupportedModelError, match=r"Linear4bit layers cannot be differentiated.*no backward"):
        TextModel.wrap(model, bos_tokenizer())
