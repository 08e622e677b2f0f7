"""Text peers: each gives, per token, the relevance its own package gives when called directly on the same model
and input, and leaves the process as it found it.

LXT 2.1 does not import with transformers 5: its tests run in the environment of ``benchmarks/envs/text-peers``
(``.ci/run`` syncs it and runs this file there) and are skipped in the main one with that reason.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap

import pytest
import torch

transformers = pytest.importorskip("transformers")

from semantic_pullbacks.errors import InvalidInputError, MissingDependencyError, UnsupportedModelError  # noqa: E402
from semantic_pullbacks.text import TextExplainer, TextModel, load_text_model  # noqa: E402
from semantic_pullbacks.text.peers import TEXT_PEERS, get_text_method  # noqa: E402


def _unimportable(module: str, why: str = "") -> str:
    """Why ``module`` cannot be used here ("" when it imports), with how to run the tests that need it."""
    try:
        importlib.import_module(module)
    except ImportError as error:
        name = module.split(".")[0]
        return (
            f"{name} does not import here ({error}){why}: run this file with "
            "uv run --project benchmarks/envs/text-peers pytest tests/text/test_text_peers.py"
        )
    return ""


LXT_REASON = _unimportable("lxt.efficient", "; LXT 2.1 needs transformers < 5")
needs_lxt = pytest.mark.skipif(bool(LXT_REASON), reason=LXT_REASON)

PAIR = ("A man is playing a guitar.", "Someone plays music.")


def tiny_llama() -> TextModel:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, pad_token_id=0)  # fmt: skip
    model = transformers.LlamaForCausalLM(config).eval()
    tokenizer = load_text_model().tokenizer  # any tokenizer whose ids fit: the model only sees ids < 64
    return TextModel(model, tokenizer, "causal-lm", "tiny-llama")


def llama_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[1, 17, 5, 33, 9, 41, 2, 60, 12]])
    return ids, torch.ones_like(ids)


def last_logprob(token: int):
    def target(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1].log_softmax(-1)[:, token]

    return target


def run_alone(code: str) -> list[float]:
    """``code`` in a fresh interpreter (LXT's own patches stay in the process that made them); it prints a JSON
    list."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ lookup


def test_text_peers_are_found_by_their_table_names_and_ours_still_are():
    assert get_text_method("lxt_attnlrp") is TEXT_PEERS["LXT-AttnLRP"]
    assert get_text_method("Captum-LayerIG").__name__ == "Captum-LayerIG"
    assert get_text_method("captum_llm_layerig").__name__ == "Captum-LLM-LayerIG"
    assert get_text_method("soft-pullback").__name__ == "SoftPullback"
    with pytest.raises(InvalidInputError, match="text peers: LXT-AttnLRP"):
        get_text_method("AttnLRP-typo")


def test_evaluate_resolves_text_peers():
    from semantic_pullbacks.evaluation.specs import MethodSpec

    assert MethodSpec.of("captum-layerig").label == "Captum-LayerIG"


@pytest.mark.skipif(not LXT_REASON, reason="lxt imports here")
def test_lxt_without_its_environment_is_a_typed_error_naming_it():
    with pytest.raises(MissingDependencyError, match="benchmarks/envs/text-peers"):
        TextExplainer(load_text_model(), method="LXT-AttnLRP")


def test_a_text_peer_refuses_a_model_that_is_not_a_text_model():

    with pytest.raises(UnsupportedModelError, match="TextExplainer"):
        get_text_method("Captum-LayerIG")(torch.nn.Linear(3, 2))


# ------------------------------------------------------------------------------------------------ Captum


def test_captum_layer_ig_equals_captum_called_directly_on_minilm():
    from captum.attr import LayerIntegratedGradients

    tm = load_text_model()
    result = TextExplainer(tm, method="Captum-LayerIG").attribute(PAIR[0], pair=PAIR[1])
    enc, other = tm.encode([PAIR[0]]), tm.encode([PAIR[1]])
    reference = torch.nn.functional.normalize(tm.output(other.input_ids, other.attention_mask), dim=-1)

    def similarity(ids, mask):
        out = tm.model(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask[..., None].float()
        pooled = (out * m).sum(1) / m.sum(1)
        return torch.nn.functional.cosine_similarity(pooled, reference, dim=-1)

    ids = enc.input_ids
    baseline = torch.where(enc.special, ids, torch.full_like(ids, tm.tokenizer.pad_token_id))
    lig = LayerIntegratedGradients(similarity, tm.model.get_input_embeddings())
    direct = lig.attribute(ids, baselines=baseline, additional_forward_args=(enc.attention_mask,), n_steps=50)
    torch.testing.assert_close(torch.tensor(result.relevance), direct.sum(-1)[0], rtol=1e-4, atol=1e-6)
    assert result.relevance[0] == 0.0 and result.relevance[-1] == 0.0  # [CLS], [SEP]: the baseline keeps them


def test_captum_layer_ig_on_a_causal_lm_is_complete():
    """Integrated gradients' completeness: the relevance sums to the score's change from the baseline."""
    tm = tiny_llama()
    ids, mask = llama_inputs()
    explainer = TextExplainer(tm, method="Captum-LayerIG", n_steps=200)
    target = last_logprob(7)
    from semantic_pullbacks.text.explain import token_maps

    signed, _ = token_maps(explainer.explainer, tm, ids, mask, [target])
    base = torch.zeros_like(ids)  # the pad id; this tokenizer marks none of these ids special except [CLS]=101..
    special = torch.isin(ids, torch.tensor(tm.tokenizer.all_special_ids))
    base = torch.where(special, ids, base)
    with torch.no_grad():
        fwd = tm.forward_module
        gap = target(fwd(tm.embed(ids), mask)) - target(fwd(tm.embed(base), mask))
    torch.testing.assert_close(signed.sum(), gap.sum(), rtol=2e-3, atol=2e-4)


# ------------------------------------------------------------------------------------------------ Captum LLM


def test_captum_llm_equals_llm_gradient_attribution_called_directly():
    """Same prompt text, same target token (given to Captum as text, which it encodes without special tokens),
    same steps, pad-token baseline with the special tokens skipped: Captum's own LLM template, called here."""
    from captum.attr import LayerIntegratedGradients, LLMGradientAttribution, TextTokenInput

    tm = tiny_bos_llama()
    result = TextExplainer(tm, method="Captum-LLM-LayerIG", n_steps=17).attribute(PROMPT, target=NEXT)
    lig = LayerIntegratedGradients(tm.model, tm.model.get_input_embeddings())
    prompt = TextTokenInput(PROMPT, tm.tokenizer, baselines=tm.tokenizer.pad_token_id, skip_tokens=["<s>"])
    direct = LLMGradientAttribution(lig, tm.tokenizer).attribute(prompt, target=NEXT, n_steps=17)
    assert result.tokens[0] == "<s>" and result.relevance[0] == 0.0  # skipped: it stays in the baseline
    torch.testing.assert_close(torch.tensor(result.relevance[1:]), direct.token_attr[0], rtol=1e-5, atol=1e-8)


def test_captum_llm_is_layer_ig_of_the_next_token_log_prob_and_complete():
    """The same integral as Captum-LayerIG (ids, mask, pad baseline) on the prompt, and complete: it sums to
    ``log p(token | prompt) - log p(token | baseline prompt)``; per continuation token, tokens after the
    explained position score 0."""
    from semantic_pullbacks.text.explain import token_maps
    from semantic_pullbacks.text.targets import TokenLogProb

    tm = tiny_bos_llama()
    enc = tm.encode([PROMPT])
    ids, mask = enc.input_ids, enc.attention_mask
    token = tm.tokenizer(NEXT, add_special_tokens=False)["input_ids"][0]
    target = TokenLogProb(token, (ids.shape[1] - 1,))
    llm = TextExplainer(tm, method="Captum-LLM-LayerIG", n_steps=300).explainer
    layer_ig = TextExplainer(tm, method="Captum-LayerIG", n_steps=300).explainer
    ours, _ = token_maps(llm, tm, ids, mask, [target])
    theirs, _ = token_maps(layer_ig, tm, ids, mask, [target])
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    base = torch.where(enc.special, ids, torch.full_like(ids, tm.tokenizer.pad_token_id))
    with torch.no_grad():
        gap = target(tm.model(ids).logits) - target(tm.model(base).logits)
    torch.testing.assert_close(ours.sum(), gap.sum(), rtol=1e-3, atol=1e-5)
    early, _ = token_maps(llm, tm, ids, mask, [TokenLogProb(token, (2,))])
    assert (early[0, 0, 3:] == 0).all() and (early[0, 0, 1:3] != 0).all()


def test_captum_llm_refuses_what_captums_template_cannot_express():
    from semantic_pullbacks.text.explain import token_maps
    from semantic_pullbacks.text.targets import TokenLogProb

    tm = tiny_bos_llama()
    explainer = TextExplainer(tm, method="Captum-LLM-LayerIG", n_steps=4)
    with pytest.raises(InvalidInputError, match="one next token"):
        explainer.attribute(PROMPT, continuation=" the mat")  # the summed log-probability of a continuation
    with pytest.raises(UnsupportedModelError, match="causal LM"):
        TextExplainer(load_text_model(), method="Captum-LLM-LayerIG")
    with pytest.raises(InvalidInputError, match="output_selector"):
        get_text_method("Captum-LLM-LayerIG")(tm.forward_module, output_selector=0)
    llama, (ids, mask) = tiny_llama(), llama_inputs()  # with MiniLM's tokenizer, whose text is [CLS] ... [SEP]
    with pytest.raises(InvalidInputError, match="Captum-LayerIG, which starts from ids"):
        token_maps(TextExplainer(llama, method="Captum-LLM-LayerIG").explainer, llama, ids, mask,
                   [TokenLogProb(7, (8,))])  # fmt: skip
    layer_ig = TextExplainer(tm, method="Captum-LLM-LayerIG").explainer
    with pytest.raises(InvalidInputError, match="starts from token ids"):
        layer_ig.attribute(tm.embed(tm.encode([PROMPT]).input_ids), target=0)


def test_captum_llm_runs_in_evaluate_and_scores_as_captum_layer_ig(tmp_path):
    """``evaluate --texts --methods`` on a causal LM: the same explanations as Captum-LayerIG, so the same
    metric scores on every continuation token."""
    from semantic_pullbacks.evaluation import evaluate

    from .test_evaluate_lm import tiny_causal
    from .test_generate import word_tokenizer

    folder = tmp_path / "tiny-llama"
    tiny_causal("llama").save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "p", "text": "a dog ran", "continuation": " far away"}) + "\n")
    from semantic_pullbacks.evaluation.specs import MethodSpec

    methods = [MethodSpec.of(m, {"n_steps": 8}) for m in ("Captum-LayerIG", "captum-llm-layerig")]
    result = evaluate(str(folder), texts=prompts, methods=methods, metrics=["comprehensiveness", "deletion_abc"],
                      progress=False, on_error="raise")  # fmt: skip
    scores = {(r.item, r.metric): {} for r in result.rows}
    for r in result.rows:
        scores[(r.item, r.metric)][r.method] = r.score
    assert len(scores) == 4
    for by_method in scores.values():
        assert by_method["Captum-LLM-LayerIG"] == pytest.approx(by_method["Captum-LayerIG"], rel=1e-4, abs=1e-6)


# ------------------------------------------------------------------------------------------------ LXT

LXT_LLAMA = """
    import json, torch, transformers
    import lxt.efficient
    from transformers.models.llama import modeling_llama
    lxt.efficient.monkey_patch(modeling_llama)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, pad_token_id=0)
    model = transformers.LlamaForCausalLM(config).eval()
    ids = torch.tensor([[1, 17, 5, 33, 9, 41, 2, 60, 12]])
    emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=emb, attention_mask=torch.ones_like(ids),
                   position_ids=torch.arange(ids.shape[1])[None]).logits
    logits[:, -1].log_softmax(-1)[:, 7].sum().backward()
    print(json.dumps((emb * emb.grad).sum(-1)[0].tolist()))
"""

LXT_MINILM = """
    import json, torch, lxt.efficient
    from transformers.models.bert import modeling_bert
    from semantic_pullbacks.text import load_text_model
    tm = load_text_model()
    enc, other = tm.encode([{a!r}]), tm.encode([{b!r}])
    reference = tm.output(other.input_ids, other.attention_mask)
    lxt.efficient.monkey_patch(modeling_bert)
    model = modeling_bert.BertModel(tm.model.config)
    model.load_state_dict(tm.model.state_dict())
    model.eval()
    emb = tm.embed(enc.input_ids).requires_grad_(True)
    out = model(inputs_embeds=emb, attention_mask=enc.attention_mask).last_hidden_state
    m = enc.attention_mask[..., None].float()
    pooled = (out * m).sum(1) / m.sum(1)
    torch.nn.functional.cosine_similarity(pooled, reference, dim=-1).sum().backward()
    print(json.dumps((emb * emb.grad).sum(-1)[0].tolist()))
"""


@needs_lxt
def test_attnlrp_equals_lxt_called_directly_on_a_llama():
    tm = tiny_llama()
    ids, mask = llama_inputs()
    from semantic_pullbacks.text.explain import token_maps

    signed, _ = token_maps(TextExplainer(tm, method="LXT-AttnLRP").explainer, tm, ids, mask, [last_logprob(7)])
    torch.testing.assert_close(signed[0, 0], torch.tensor(run_alone(LXT_LLAMA)), rtol=1e-4, atol=1e-6)


@needs_lxt
def test_attnlrp_equals_lxt_called_directly_on_minilm():
    result = TextExplainer(load_text_model(), method="LXT-AttnLRP").attribute(PAIR[0], pair=PAIR[1])
    direct = run_alone(LXT_MINILM.format(a=PAIR[0], b=PAIR[1]))
    torch.testing.assert_close(torch.tensor(result.relevance), torch.tensor(direct), rtol=1e-4, atol=1e-6)


@needs_lxt
def test_attnlrp_leaves_the_modeling_files_and_other_methods_as_found():
    from transformers.models.bert import modeling_bert
    from transformers.models.llama import modeling_llama

    before = {m: dict(vars(m)) for m in (modeling_llama, modeling_bert)}
    forwards = (modeling_llama.LlamaMLP.forward, torch.nn.LayerNorm.forward, torch.nn.Dropout.forward)
    tm = load_text_model()
    gradient = TextExplainer(tm, method="Gradient").attribute(PAIR[0], pair=PAIR[1]).relevance
    TextExplainer(tm, method="LXT-AttnLRP").attribute(PAIR[0], pair=PAIR[1])
    ids, mask = llama_inputs()
    from semantic_pullbacks.text.explain import token_maps

    llama = tiny_llama()
    token_maps(TextExplainer(llama, method="LXT-AttnLRP").explainer, llama, ids, mask, [last_logprob(7)])
    assert {m: dict(vars(m)) for m in before} == before
    assert (modeling_llama.LlamaMLP.forward, torch.nn.LayerNorm.forward, torch.nn.Dropout.forward) == forwards
    assert TextExplainer(tm, method="Gradient").attribute(PAIR[0], pair=PAIR[1]).relevance == gradient


# ------------------------------------------------------------------------------------------------ inseq

INSEQ_REASON = _unimportable("inseq")
needs_inseq = pytest.mark.skipif(bool(INSEQ_REASON), reason=INSEQ_REASON)
PROMPT, NEXT = "the cat sat on", "the"


def tiny_bos_llama() -> TextModel:
    from .test_causal_lm import bos_tokenizer

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1,
                                      eos_token_id=2)  # fmt: skip
    return TextModel.wrap(transformers.LlamaForCausalLM(config).eval(), bos_tokenizer(), "causal-lm")


def inseq_direct(tm: TextModel, method: str, **options) -> torch.Tensor:
    import inseq

    model = inseq.load_model(tm.model, method, tokenizer=tm.tokenizer)
    out = model.attribute(PROMPT, f"{PROMPT} {NEXT}", attributed_fn="probability", logprob=True,
                          show_progress=False, **options)  # fmt: skip
    return out.sequence_attributions[0].target_attributions[:-1, 0]


@needs_inseq
@pytest.mark.parametrize(
    ("name", "method", "reduce"),
    [
        ("inseq-InputXGradient", "input_x_gradient", lambda a: a.sum(-1)),
        ("inseq-IntegratedGradients", "integrated_gradients", lambda a: a.sum(-1)),
        ("inseq-Attention", "attention", lambda a: a.reshape(a.shape[0], -1).mean(-1)),
    ],
)
def test_inseq_peers_equal_inseq_called_directly(name, method, reduce):
    tm = tiny_bos_llama()
    result = TextExplainer(tm, method=name).attribute(PROMPT, target=NEXT)
    if method == "attention":
        tm.model.config._attn_implementation = "eager"  # inseq reads attention weights only from eager attention
    direct = reduce(inseq_direct(tm, method).float())
    torch.testing.assert_close(torch.tensor(result.relevance), direct, rtol=1e-4, atol=1e-6)


@needs_inseq
def test_inseq_gradients_are_our_gradient_and_the_attention_setting_is_restored():
    """Signed saliency scored ``e . grad`` and input x gradient are both our ``Gradient``: one quantity, three
    code paths. Attention switches the model to eager attention only while it runs."""
    tm = tiny_bos_llama()
    before = tm.model.config._attn_implementation
    ours = TextExplainer(tm, method="Gradient").attribute(PROMPT, target=NEXT).relevance
    for name in ("inseq-Saliency", "inseq-InputXGradient"):
        theirs = TextExplainer(tm, method=name).attribute(PROMPT, target=NEXT).relevance
        torch.testing.assert_close(torch.tensor(theirs), torch.tensor(ours), rtol=1e-4, atol=1e-7)
    TextExplainer(tm, method="inseq-Attention").attribute(PROMPT, target=NEXT)
    assert tm.model.config._attn_implementation == before


@needs_inseq
def test_inseq_refuses_targets_it_cannot_express():
    tm = tiny_bos_llama()
    with pytest.raises(InvalidInputError, match="one next token"):
        TextExplainer(tm, method="inseq-Saliency").attribute(PROMPT, continuation=" the mat")
