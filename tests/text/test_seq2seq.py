"""Encoder-decoders (T5, BART, Marian style, random weights from configs, an offline word-level tokenizer):
relevance over the encoder's input tokens and the decoder prefix, for each target token."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from semantic_pullbacks import InvalidInputError  # noqa: E402
from semantic_pullbacks.text import TextExplainer, TextModel, TokenMatrix  # noqa: E402

from .test_generate import WORDS, word_tokenizer  # noqa: E402

SOURCE = "the big red dog sat in the garden"
TARGET = "a dog is in the garden"


def tiny_seq2seq(model_type: str):
    torch.manual_seed(0)
    common = dict(vocab_size=len(WORDS), pad_token_id=0, bos_token_id=1, eos_token_id=2, forced_eos_token_id=None)
    # fmt: off
    sizes = {
        "t5": dict(d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4, decoder_start_token_id=0),
        "bart": dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                     decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                     decoder_start_token_id=2),
        "marian": dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                       decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                       decoder_start_token_id=0, scale_embedding=True),
    }
    # fmt: on
    config = transformers.AutoConfig.for_model(model_type, **common, **sizes[model_type])
    return transformers.AutoModelForSeq2SeqLM.from_config(config).eval()


@pytest.fixture(scope="module", params=["t5", "bart", "marian"])
def model(request):
    return tiny_seq2seq(request.param)


def tokenizer():
    return word_tokenizer("$A </s>")


def reference(model, source: str, target: str):
    """Relevance ``e . d log p(target_k) / d e`` by plain autograd over the encoder's and the decoder's input
    embeddings (each at the point its stack computes with), and the log-probabilities."""
    tok = tokenizer()
    src = torch.tensor([tok(source)["input_ids"]])
    tgt = tok(target, add_special_tokens=False)["input_ids"]
    dec = torch.tensor([[model.config.decoder_start_token_id, *tgt[:-1]]])
    table = model.get_input_embeddings()
    scale = float(getattr(model.get_encoder(), "embed_scale", 1.0) or 1.0)
    rows, scores = [], []
    for k, t in enumerate(tgt):
        e_src = (table(src) * scale).detach().requires_grad_()
        e_dec = table(dec).detach().requires_grad_()
        logp = model(inputs_embeds=e_src, decoder_inputs_embeds=e_dec).logits[0, k].log_softmax(-1)[t]
        g_src, g_dec = torch.autograd.grad(logp, (e_src, e_dec))
        rows.append(torch.cat([(e_src * g_src).sum(-1)[0], (e_dec * g_dec).sum(-1)[0]]))
        scores.append(float(logp.detach()))
    return torch.stack(rows), scores, src.shape[1]


def test_given_target_matches_plain_autograd(model):
    m = TextExplainer(model, tokenizer(), method="Gradient").attribute(SOURCE, continuation=TARGET)
    expected, scores, s = reference(model, SOURCE, TARGET)
    n = len(TARGET.split())
    assert m.shape == (n, s + n)
    assert m.source_tokens == (*SOURCE.split(), "</s>", m.source_tokens[s], *TARGET.split()[:-1])
    assert m.target_tokens == tuple(TARGET.split())
    for k in range(n):
        seen = s + k + 1  # the encoder's tokens, the decoder's start token and the k target tokens before
        torch.testing.assert_close(m.matrix[k, :seen], expected[k, :seen], rtol=1e-4, atol=1e-6)
        assert m.matrix[k, seen:].isnan().all()
    assert m.scores == pytest.approx(scores, abs=1e-5)
    words = m.words()  # the encoder's </s> and the decoder's start token are no words
    assert words.source_tokens == (*SOURCE.split(), *TARGET.split()[:-1])


def test_generated_target_is_greedy_and_explained_as_the_same_continuation(model):
    ex = TextExplainer(model, tokenizer())
    specials = [0, 1, 2, 3]  # a random model likes to end at once; generate_kwargs reach generate
    m = ex.attribute(SOURCE, max_new_tokens=4, suppress_tokens=specials)
    tok = tokenizer()
    src = torch.tensor([tok(SOURCE)["input_ids"]])
    dec = [model.config.decoder_start_token_id]
    for _ in range(len(m.target_tokens)):
        with torch.no_grad():
            logits = model(input_ids=src, decoder_input_ids=torch.tensor([dec])).logits[0, -1]
        dec.append(int(logits.index_fill(0, torch.tensor(specials), -torch.inf).argmax()))
    assert list(m.target_tokens) == tok.convert_ids_to_tokens(dec[1:])
    again = ex.attribute(SOURCE, continuation=m.continuation)
    assert again == m and isinstance(again, TokenMatrix)


def test_soft_pullback_runs_and_leaves_the_causal_entries_absent(model):
    ex = TextExplainer(model, tokenizer())
    other = "the cat sat on the mat"
    m = ex.attribute([SOURCE, other], continuation=TARGET)[1]
    assert m.prompt == other
    assert m.matrix[0, : len(other.split()) + 2].isfinite().all()
    assert m.matrix[0, -len(TARGET.split()) + 1 :].isnan().all()


def test_an_encoder_decoder_without_decoder_inputs_is_a_typed_error(model):
    ex = TextExplainer(model, tokenizer())
    assert ex.text_model.kind == "seq2seq"
    with pytest.raises(InvalidInputError, match="decoder inputs"):
        ex.attribute(SOURCE)
    with pytest.raises(InvalidInputError, match="max_new_tokens"):
        ex.attribute(SOURCE, max_new_tokens=0)
    with pytest.raises(InvalidInputError, match="seed="):
        ex.attribute(SOURCE, max_new_tokens=2, do_sample=True)
    with pytest.raises(InvalidInputError, match="continuation is empty"):
        ex.attribute(SOURCE, continuation="  ")
    small = TextModel.wrap(model, tokenizer())
    small.max_length = 4
    with pytest.raises(InvalidInputError, match="context of 4"):
        TextExplainer(small).attribute(SOURCE, continuation=TARGET)


def test_the_kind_comes_from_the_saved_architecture(tmp_path, model):
    from semantic_pullbacks.text import load_text_model

    model.save_pretrained(tmp_path)
    tokenizer().save_pretrained(tmp_path)
    assert load_text_model(tmp_path).kind == "seq2seq"


def test_explain_text_on_an_encoder_decoder_folder(tmp_path, capsys):
    from semantic_pullbacks.cli import main

    folder = tmp_path / "t5"
    tiny_seq2seq("t5").save_pretrained(folder)
    tokenizer().save_pretrained(folder)
    out = tmp_path / "out"
    assert main(["explain-text", SOURCE, "--model", str(folder), "--out", str(out / "none")]) == 2
    assert "decoder inputs" in capsys.readouterr().err and not (out / "none").exists()
    assert main(["explain-text", SOURCE, "--model", str(folder), "--continuation", TARGET, "--json",
                 "--out", str(out)]) == 0  # fmt: skip
    (path,) = out.glob("*.json")
    expected = TextExplainer(tiny_seq2seq("t5"), tokenizer()).attribute(SOURCE, continuation=TARGET)
    loaded = TokenMatrix.load(path)
    assert loaded.source_tokens == expected.source_tokens
    torch.testing.assert_close(loaded.matrix, expected.matrix, equal_nan=True)
