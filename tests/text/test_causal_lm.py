"""Causal LMs: each text's positions come from its own attention mask and its own special tokens, so a batch
padded on either side gives each text the map it gets alone, and a continuation is explained at its own tokens."""

from __future__ import annotations

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")

from semantic_pullbacks import InvalidInputError  # noqa: E402
from semantic_pullbacks.text import TextExplainer, load_text_model  # noqa: E402

PROMPTS = ["the cat sat on", "a dog ran far away and sat on"]
CONTINUATION = " the warm mat"


def bos_tokenizer():
    """A Llama-style tokenizer: it puts a beginning-of-sequence token first and appends nothing."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = [
        "<pad>",
        "<s>",
        "</s>",
        "<unk>",
        "the",
        "cat",
        "sat",
        "on",
        "a",
        "dog",
        "ran",
        "far",
        "away",
        "and",
        "warm",
        "mat",
    ]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


@pytest.fixture(scope="module")
def tokenizers():
    """``[CLS] ... [SEP]`` (a token appended after the text) and ``<s> ...`` (a token before it)."""
    return {"appends-sep": load_text_model().tokenizer, "adds-bos": bos_tokenizer()}


def tiny_lm(model_type: str):
    torch.manual_seed(0)
    sizes = {
        "gpt2": dict(n_embd=32, n_head=4, n_layer=2, bos_token_id=0, eos_token_id=0),
        "llama": dict(
            hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, num_hidden_layers=2
        ),
    }
    config = transformers.AutoConfig.for_model(model_type, vocab_size=30522, **sizes[model_type])
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def reference_log_prob(model, tokenizer, prompt: str, continuation: str, appended: int) -> float:
    """``log p(continuation | prompt)`` from one plain forward pass over the joined ids, without padding; the
    continuation's tokens are the last ones before the ``appended`` special tokens."""
    ids = tokenizer(prompt + continuation)["input_ids"]
    n = len(tokenizer(continuation, add_special_tokens=False)["input_ids"])
    end = len(ids) - appended
    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    return float(sum(logp[t - 1, ids[t]] for t in range(end - n, end)))


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
@pytest.mark.parametrize("kind", ["appends-sep", "adds-bos"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_padded_on_either_side_equals_each_text_alone(tokenizers, model_type, kind, side):
    tokenizer = copy.deepcopy(tokenizers[kind])
    tokenizer.padding_side = side
    model = tiny_lm(model_type)
    explainer = TextExplainer(model, tokenizer)
    for how in (dict(continuation=CONTINUATION), dict(target="the")):
        batch = explainer.attribute(PROMPTS, **how)
        for prompt, b in zip(PROMPTS, batch):
            alone = explainer.attribute(prompt, **how)
            assert b.tokens == alone.tokens and "[PAD]" not in b.tokens and "<pad>" not in b.tokens
            torch.testing.assert_close(torch.tensor(b.relevance), torch.tensor(alone.relevance), rtol=1e-4, atol=1e-6)
            assert b.score == pytest.approx(alone.score, rel=1e-5, abs=1e-6)
    for prompt, b in zip(PROMPTS, explainer.attribute(PROMPTS, continuation=CONTINUATION)):
        expected = reference_log_prob(model, tokenizer, prompt, CONTINUATION, appended=int(kind == "appends-sep"))
        assert b.score == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_next_token_target_is_taken_at_each_texts_last_real_token(tokenizers):
    tokenizer = copy.deepcopy(tokenizers["adds-bos"])
    tokenizer.padding_side = "left"
    model = tiny_lm("llama")
    explainer = TextExplainer(model, tokenizer)
    the = tokenizer("the", add_special_tokens=False)["input_ids"][0]
    for prompt, r in zip(PROMPTS, explainer.attribute(PROMPTS, target="the")):
        with torch.no_grad():
            logits = model(torch.tensor([tokenizer(prompt)["input_ids"]])).logits[0, -1]
        assert r.score == pytest.approx(float(logits.log_softmax(-1)[the]), rel=1e-5, abs=1e-6)


def test_a_continuation_that_tokenises_differently_after_the_prompt_is_refused(tokenizers):
    explainer = TextExplainer(tiny_lm("gpt2"), tokenizers["appends-sep"])
    # alone, "m mat" is the tokens 'm', 'mat'; after "... the war" it joins into 'warm', 'mat'
    with pytest.raises(InvalidInputError, match="tokenises differently"):
        explainer.attribute("the cat sat on the war", continuation="m mat")
    with pytest.raises(InvalidInputError, match="no token for this tokenizer"):
        explainer.attribute("the cat sat on", continuation="   ")


class PositionlessForCausalLM(torch.nn.Module):
    """A causal LM whose forward takes no position ids: a text padded on the left cannot sit where it sits alone."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(30522, 8)
        self.position = torch.nn.Embedding(64, 8)
        self.head = torch.nn.Linear(8, 30522)

    def get_input_embeddings(self):
        return self.embed

    def forward(self, inputs_embeds, attention_mask):
        from types import SimpleNamespace

        hidden = (inputs_embeds + self.position.weight[: inputs_embeds.shape[1]]).cumsum(1)
        return SimpleNamespace(logits=self.head(torch.tanh(hidden)))


def test_left_padding_for_a_model_without_position_ids_is_refused(tokenizers):
    left = copy.deepcopy(tokenizers["adds-bos"])
    left.padding_side = "left"
    with pytest.raises(InvalidInputError, match=r"padded on the left.*padding_side = 'right'"):
        TextExplainer(PositionlessForCausalLM().eval(), left).attribute(PROMPTS, target="the")
    right = copy.deepcopy(left)
    right.padding_side = "right"
    explainer = TextExplainer(PositionlessForCausalLM().eval(), right)
    for prompt, b in zip(PROMPTS, explainer.attribute(PROMPTS, target="the")):
        assert b.score == pytest.approx(explainer.attribute(prompt, target="the").score, rel=1e-5)
