"""Generate and explain: the model's own greedy continuation, every generated token explained from one forward
pass, as a target x source matrix; identical to explaining the same text given as a continuation."""

from __future__ import annotations

import json
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

from semantic_pullbacks import InvalidInputError  # noqa: E402
from semantic_pullbacks.text import TextExplainer, TokenAttribution, TokenMatrix, load_all, save_all  # noqa: E402
from semantic_pullbacks.text.views import matrix_html, save_matrix_png  # noqa: E402

WORDS = ["<pad>", "<s>", "</s>", "<unk>", "the", "cat", "sat", "on", "a", "dog", "ran", "far", "away", "and", "warm",
         "mat", "big", "red", "house", "is", "in", "garden"]  # fmt: skip


def word_tokenizer(template: str = "<s> $A"):
    """A Llama-style word-level tokenizer built offline (``template``: where it puts special tokens)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single=template, special_tokens=[("<s>", 1), ("</s>", 2)])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_causal(model_type: str):
    torch.manual_seed(0)
    sizes = {
        "gpt2": dict(n_embd=32, n_head=4, n_layer=2),
        "llama": dict(
            hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, num_hidden_layers=2
        ),
    }
    config = transformers.AutoConfig.for_model(
        model_type, vocab_size=len(WORDS), bos_token_id=1, eos_token_id=2, pad_token_id=0, **sizes[model_type]
    )
    return transformers.AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def explainer(request):
    return TextExplainer(tiny_causal(request.param), word_tokenizer())


PROMPT = "the cat sat on the"


def reference_greedy(model, tokenizer, prompt: str, n: int) -> list[int]:
    """Greedy decoding by hand: the argmax of the last logits, appended, n times."""
    ids = tokenizer(prompt)["input_ids"]
    for _ in range(n):
        with torch.no_grad():
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids


@pytest.mark.parametrize("method", ["SoftPullback", "Gradient"])
def test_generated_tokens_are_explained_exactly_as_the_same_continuation(explainer, method):
    ex = TextExplainer(explainer.text_model, method=method)
    m = ex.attribute(PROMPT, max_new_tokens=4)
    tok = ex.text_model.tokenizer
    expected = reference_greedy(ex.text_model.model, tok, PROMPT, 4)
    n_prompt = len(tok(PROMPT)["input_ids"])
    assert list(m.target_tokens) == tok.convert_ids_to_tokens(expected[n_prompt:])
    assert list(m.source_tokens) == tok.convert_ids_to_tokens(expected[:-1])
    assert m.shape == (4, n_prompt + 3)
    rows = ex.attribute(PROMPT, continuation=m.continuation, per_token=True)
    assert torch.equal(m.matrix.nan_to_num(), TokenMatrix.from_results(rows, m.continuation).matrix.nan_to_num())
    for k, row in enumerate(rows):
        seen = n_prompt + k  # target k sees the prompt and the k tokens generated before it
        assert torch.equal(m.matrix[k, :seen], torch.tensor(row.relevance[:seen], dtype=torch.float32))
        assert m.matrix[k, seen:].isnan().all()
        assert m.scores[k] == row.score
    assert m == TokenMatrix.from_results(rows, m.continuation)


def test_scores_are_the_greedy_tokens_log_probabilities(explainer):
    m = explainer.attribute(PROMPT, max_new_tokens=3)
    tok, model = explainer.text_model.tokenizer, explainer.text_model.model
    ids = reference_greedy(model, tok, PROMPT, 3)
    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    n = len(ids) - 3
    for k in range(3):
        assert m.scores[k] == pytest.approx(float(logp[n + k - 1, ids[n + k]]), abs=1e-5)


def test_sampling_needs_a_seed_and_a_seed_reproduces(explainer):
    with pytest.raises(InvalidInputError, match="seed="):
        explainer.attribute(PROMPT, max_new_tokens=3, do_sample=True)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = explainer.attribute(PROMPT, max_new_tokens=5, do_sample=True, seed=7, top_k=0)
    assert torch.equal(torch.rand(1), before)  # the caller's random stream is left as it was
    b = explainer.attribute(PROMPT, max_new_tokens=5, do_sample=True, seed=7, top_k=0)
    assert a == b


def test_bad_generation_arguments_are_typed_errors(explainer):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidInputError, match="max_new_tokens"):
            explainer.attribute(PROMPT, max_new_tokens=bad)
    context = explainer.text_model.max_length
    with pytest.raises(InvalidInputError, match="context"):
        explainer.attribute(PROMPT, max_new_tokens=context)
    with pytest.raises(InvalidInputError, match="not both"):
        explainer.attribute(PROMPT, max_new_tokens=2, continuation=" mat")
    with pytest.raises(InvalidInputError, match="set by the explainer"):
        explainer.attribute(PROMPT, max_new_tokens=2, max_length=9)


def test_a_prompt_longer_than_the_context_is_refused():
    model = tiny_causal("llama")
    tok = word_tokenizer()
    tok.model_max_length = 8
    with pytest.raises(InvalidInputError, match="context of 8"):
        TextExplainer(model, tok).attribute("the cat sat on the warm mat and the dog", max_new_tokens=1)


def test_words_aggregation_and_files_round_trip(explainer, tmp_path):
    m = explainer.attribute(PROMPT, max_new_tokens=3)
    words = m.words()  # word-level tokenizer: one token per word, the specials left out
    assert words.source_tokens == tuple(t for t in m.source_tokens if t != "<s>")
    torch.testing.assert_close(words.matrix, m.matrix[:, 1:], equal_nan=True)
    total = m.aggregate("sum")
    assert torch.equal(total[: len(m.source_tokens) - 2], m.matrix.nan_to_num().sum(0)[: len(m.source_tokens) - 2])
    assert math.isfinite(float(m.aggregate("mean")[0])) and math.isfinite(float(m.aggregate("max")[0]))
    last = len(m.source_tokens) - 1  # only the last target sees the token generated just before it
    assert float(m.aggregate("mean")[last]) == float(m.matrix[-1, last])
    with pytest.raises(InvalidInputError, match="how="):
        m.aggregate("median")
    assert TokenMatrix.load(m.save(tmp_path / "m.json")) == m
    assert json.loads((tmp_path / "m.json").read_text())["matrix"][0][-1] is None  # absent: null, not NaN
    html = matrix_html(m, level="tokens")
    assert html.count("<tr>") == 1 + 3 and html.count('class="na"') == int(m.matrix.isnan().sum())
    assert save_matrix_png(m, tmp_path / "m.png").stat().st_size > 1000
    with pytest.raises(InvalidInputError, match=r"TokenMatrix\.load"):
        TokenAttribution.load(tmp_path / "m.json")


def test_sub_words_merge_into_words_on_both_axes():
    """A word split in two: its columns add, its rows add, entries absent from both tokens stay absent."""
    base = dict(prompt="ab c", continuation=" de", method="Gradient", model="x", words_text=("ab", "c", "de"))
    m = TokenMatrix(
        source_tokens=("a", "b", "c", "d"),
        target_tokens=("d", "e"),
        matrix=torch.tensor([[1.0, 2.0, 3.0, math.nan], [4.0, 5.0, 6.0, 7.0]]),
        source_words=(0, 0, 1, 2),
        target_words=(2, 2),
        scores=(-1.0, -2.0),
        **base,
    )
    w = m.words()
    assert w.source_tokens == ("ab", "c", "de") and w.target_tokens == ("de",)
    assert w.matrix.tolist() == [[12.0, 9.0, 7.0]] and w.scores == (-3.0,)


def test_a_list_of_results_has_its_own_loader(tmp_path):
    from semantic_pullbacks.text import load_text_model

    results = TextExplainer(load_text_model()).attribute(["A man plays.", "A dog runs."], pair="Music.")
    path = save_all(results, tmp_path / "all.json")
    with pytest.raises(InvalidInputError, match="load_all"):
        TokenAttribution.load(path)
    assert load_all(path) == results
    assert load_all(results[0].save(tmp_path / "one.json")) == [results[0]]


def test_the_app_generates_and_explains_from_a_local_folder(tmp_path):
    from semantic_pullbacks.app.text_tab import MODES, explain_text

    folder = tmp_path / "tiny"
    tiny_causal("llama").save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    answer = explain_text(PROMPT, MODES[2], str(folder), "Gradient", 3)
    same = TextExplainer(tiny_causal("llama"), word_tokenizer(), method="Gradient")
    expected = same.attribute(PROMPT, max_new_tokens=3)
    assert answer.html == matrix_html(expected, standalone=False)
    assert f"generated **{expected.continuation.strip()}**" in answer.summary
    for folder_text, n, message in [(str(tmp_path / "none"), 3, "not a folder"), (str(folder), 0, "1 to 64"),
                                    ("", 3, "local model folder"), (str(folder), 2.5, "whole number")]:  # fmt: skip
        with pytest.raises(InvalidInputError, match=message):
            explain_text(PROMPT, MODES[2], folder_text, "Gradient", n)
