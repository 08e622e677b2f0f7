"""Token attributions end to end: the embedded MiniLM, tiny random-init classifiers and LMs, bad input, files."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

from semantic_pullbacks import InvalidInputError, UnknownClassError, UnsupportedModelError  # noqa: E402
from semantic_pullbacks.errors import WeightsUnavailableError  # noqa: E402
from semantic_pullbacks.text import (  # noqa: E402
    TextExplainer,
    TextModel,
    TokenAttribution,
    load_text_model,
    save_html,
    save_png,
    to_html,
)


@pytest.fixture(scope="module")
def minilm():
    return load_text_model()


@pytest.fixture(scope="module")
def tokenizer(minilm):
    return minilm.tokenizer


def tiny(auto: str, model_type: str, **kw):
    torch.manual_seed(0)
    base = dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, num_hidden_layers=2, vocab_size=30522)
    config = transformers.AutoConfig.for_model(model_type, **{**base, **kw})
    return getattr(transformers, auto).from_config(config).eval()


# --- the real MiniLM ------------------------------------------------------------------------------------------
PAIRS = [
    ("A man is playing a guitar on stage.", "The guitar sounds beautiful.", "guitar"),
    ("The chef cooked pasta for dinner.", "I love eating pasta.", "pasta"),
    ("My dog chased the ball in the park.", "Dogs are loyal animals.", "dog"),
    ("She read a novel on the train.", "The train was late again.", "train"),
    ("We watched the sunset at the beach.", "The beach was crowded.", "beach"),
]


def test_minilm_similarity_puts_top_relevance_on_the_shared_word(minilm):
    explainer = TextExplainer(minilm)
    results = explainer.attribute([a for a, _, _ in PAIRS], pair=[b for _, b, _ in PAIRS])
    for (_, other, word), result in zip(PAIRS, results):
        assert result.top_words(1)[0].text.lower() == word, [(w.text, w.relevance) for w in result.words()]
        assert result.target == f"similarity to {other!r}"  # each text names its own pair, not the first one
    cov = explainer.coverage
    assert cov.unhandled == {} and cov.ordinary == {}, str(cov)


def test_minilm_zero_shot_labels_and_bad_labels(minilm):
    labels = ["This review is positive.", "This review is negative."]
    r = TextExplainer(minilm).attribute("A wonderful, moving film.", labels=labels)
    assert r.target in labels and -1 <= r.score <= 1
    with pytest.raises(UnknownClassError, match="unknown label"):
        TextExplainer(minilm).attribute("A film.", labels=labels, target="This review is neutral.")


def test_gradient_and_integrated_gradients_over_embeddings(minilm):
    for method in ("Gradient", "IntegratedGradients", "IntegratedPullbacks"):
        r = TextExplainer(minilm, method=method).attribute(PAIRS[0][0], pair=PAIRS[0][1])
        assert r.method == method and any(v != 0 for v in r.relevance)


# --- tiny random-init models with the same tokenizer -----------------------------------------------------------
def test_classifier_label_by_name_index_and_batches_with_padding(tokenizer):
    model = tiny("AutoModelForSequenceClassification", "bert", num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"})
    explainer = TextExplainer(model, tokenizer)
    texts = ["a short one", "a much longer text than the first one here"]
    batch = explainer.attribute(texts, target="pos")
    singles = [explainer.attribute(t, target=2) for t in texts]
    for b, s in zip(batch, singles):
        assert b.tokens == s.tokens
        torch.testing.assert_close(torch.tensor(b.relevance), torch.tensor(s.relevance), rtol=1e-4, atol=1e-6)
    assert batch[0].target == "pos"
    with pytest.raises(UnknownClassError, match="neg, neu, pos"):
        explainer.attribute("text", target="happy")


def test_an_encoder_with_a_left_padding_tokenizer_explains_a_batch_as_each_text_alone(tokenizer):
    # BERT's absolute positions: a text padded on the left would sit at other positions than alone
    model = tiny("AutoModelForSequenceClassification", "bert", num_labels=2)
    left = copy.deepcopy(tokenizer)
    left.padding_side = "left"
    explainer = TextExplainer(model, left)
    texts = ["a short one", "a much longer text than the first one here"]
    for b, s in zip(explainer.attribute(texts, target=1), [explainer.attribute(t, target=1) for t in texts]):
        assert b.tokens == s.tokens and b.score == pytest.approx(s.score, rel=1e-5)
        torch.testing.assert_close(torch.tensor(b.relevance), torch.tensor(s.relevance), rtol=1e-4, atol=1e-6)


def test_a_model_in_training_mode_keeps_its_modes_and_the_user_is_warned(tokenizer):
    model = tiny("AutoModelForSequenceClassification", "bert", num_labels=2, attention_probs_dropout_prob=0.0).train()
    model.bert.embeddings.dropout.eval()  # mixed modes, as the caller left them
    modes = {name: m.training for name, m in model.named_modules()}
    with pytest.warns(UserWarning, match="training mode"):
        text_model = TextModel.wrap(model, tokenizer)
    with pytest.warns(UserWarning, match="training mode"):
        TextExplainer(text_model).attribute("a short text", target=1)
    assert {name: m.training for name, m in model.named_modules()} == modes


def test_causal_lm_continuation_per_token_from_one_forward_pass(tokenizer):
    model = tiny("AutoModelForCausalLM", "llama", num_key_value_heads=2)
    explainer = TextExplainer(model, tokenizer)
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    per_token = explainer.attribute("the cat sat on", continuation=" the warm mat", per_token=True)
    assert len(calls) == 2  # one for the scores shown, one shared by all the tokens' backward passes
    assert len(per_token) == 3 and all(isinstance(r, TokenAttribution) for r in per_token)
    total = explainer.attribute("the cat sat on", continuation=" the warm mat")
    assert total.score == pytest.approx(sum(r.score for r in per_token), rel=1e-5)
    summed = torch.tensor([r.relevance for r in per_token]).sum(0)
    torch.testing.assert_close(torch.tensor(total.relevance), summed, rtol=1e-4, atol=1e-6)


def test_contrast_target_and_foil_equal_to_target(tokenizer):
    model = tiny("AutoModelForCausalLM", "gpt2", n_embd=32, n_head=4, n_layer=2, bos_token_id=0, eos_token_id=0)
    explainer = TextExplainer(model, tokenizer)
    r = explainer.attribute("the keys to the cabinet", target="are", foil="is")
    assert "'are' vs 'is'" in r.target
    with pytest.raises(InvalidInputError, match="same token"):
        explainer.attribute("the keys", target="are", foil="are")


def test_bad_input(tokenizer, minilm):
    with pytest.raises(InvalidInputError, match="empty"):
        TextExplainer(minilm).attribute("   ", pair="x")
    with pytest.raises(UnsupportedModelError, match="input-embedding"):
        TextModel.wrap(torch.nn.Linear(3, 3), tokenizer)
    small = tiny("AutoModelForSequenceClassification", "bert", vocab_size=1000)
    with pytest.raises(InvalidInputError, match="does not match the model"):
        TextModel.wrap(small, tokenizer)
    with pytest.warns(UserWarning, match="truncated"):
        minilm.encode(["word " * 600])


def test_offline_missing_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="offline"):
        load_text_model("nobody/no-such-model-xyz")
    with pytest.raises((WeightsUnavailableError, InvalidInputError), match="model"):
        load_text_model(tmp_path)


@pytest.mark.parametrize("switch", ["SEMANTIC_PULLBACKS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_every_offline_switch_of_the_library_applies_to_text_models(monkeypatch, switch):
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_OFFLINE  # conftest's guard: the hub never touches the network here
    for name in ("SEMANTIC_PULLBACKS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(switch, "1")
    with pytest.raises(WeightsUnavailableError, match=f"downloads are off \\({switch}=1 is set\\)"):
        load_text_model("nobody/no-such-model-xyz")


def test_json_round_trip_words_and_views(minilm, tmp_path):
    r = TextExplainer(minilm).attribute("Unbelievably tasty dumplings.", pair="Good food.")
    assert TokenAttribution.load(r.save(tmp_path / "r.json")) == r
    words = [w.text for w in r.words()]
    assert words == ["Unbelievably", "tasty", "dumplings", "."]
    assert sum(w.relevance for w in r.words()) == pytest.approx(sum(v for v, s in zip(r.relevance, r.special) if not s))
    page = save_html([r], tmp_path / "r.html").read_text()
    assert "dumplings" in page and "http" not in page and "<script" not in page
    assert save_png([r], tmp_path / "r.png").stat().st_size > 1000
    assert "dumplings" in to_html([r], standalone=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from rich.console import Console

        console = Console(record=True, width=100)
        console.print(r)
        assert "dumplings" in console.export_text()
