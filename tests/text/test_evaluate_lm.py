"""``evaluate`` on a causal LM: one row per continuation token (given, or the model's greedy one), equal to a
direct computation with the text package; resumable; the CLI's --texts FILE --model LM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from semantic_pullbacks.errors import InvalidInputError  # noqa: E402
from semantic_pullbacks.evaluation import evaluate  # noqa: E402
from semantic_pullbacks.evaluation.language import bundled_prompts  # noqa: E402
from semantic_pullbacks.evaluation.store import ResultsStore  # noqa: E402
from semantic_pullbacks.text import TextExplainer, load_text_model  # noqa: E402
from semantic_pullbacks.text.metrics import comprehensiveness, removal_token  # noqa: E402
from semantic_pullbacks.text.targets import TokenLogProb  # noqa: E402

from .test_generate import tiny_causal, word_tokenizer  # noqa: E402

METHODS = ["SoftPullback", "Gradient"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_causal("llama").save_pretrained(path)
    word_tokenizer().save_pretrained(path)
    return path


@pytest.fixture
def prompts(tmp_path) -> Path:
    path = tmp_path / "prompts.jsonl"
    rows = [{"id": "p1", "text": "the cat sat on"}, {"id": "p2", "text": "a dog ran", "continuation": " far away"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _run(folder, prompts, out=None, **kwargs):  # type: ignore[no-untyped-def]
    return evaluate(str(folder), texts=prompts, out=out, methods=METHODS, progress=False, on_error="raise", **kwargs)


def test_lm_rows_are_per_token_and_equal_a_direct_computation(folder, prompts, tmp_path):
    result = _run(folder, prompts)
    assert result.metrics == ["comprehensiveness", "sufficiency", "deletion_abc"]
    items = sorted({r.item for r in result.rows})
    assert items == [*(f"p1/t{k:02d}" for k in range(8)), "p2/t00", "p2/t01"]  # greedy 8 tokens; ' far', ' away'
    assert len(result.rows) == 10 * 2 * 3
    scores = {r.key: r.score for r in result.rows}

    # p2's second token, ' away': explained from '<s> a dog ran far', removal judged by log p(away | ...)
    tm = load_text_model(folder)
    ids = torch.tensor([tm.tokenizer("a dog ran far")["input_ids"]])
    away = tm.tokenizer("away", add_special_tokens=False)["input_ids"][0]
    target = TokenLogProb(away, (ids.shape[1] - 1,))
    explainer = TextExplainer(tm, method="Gradient")
    enc = tm.encode(["a dog ran far"])
    (row,) = explainer.explain_encoded(enc, [target])
    fm = tm.forward_module

    def score_fn(x, mask):  # type: ignore[no-untyped-def]
        return target(fm(tm.embed(x), mask))

    expected = comprehensiveness(score_fn, ids, torch.ones_like(ids), torch.tensor([row[0].relevance]),
                                 enc.special, removal_token(tm.tokenizer))  # fmt: skip
    assert scores[("p2/t01", "Gradient", "comprehensiveness")] == pytest.approx(float(expected[0]), rel=1e-4)
    assert any(d.method == "SoftPullback" for d in result.differences)  # paired against its gradient counterpart


def test_lm_run_resumes_and_says_what_it_scored(folder, prompts, tmp_path):
    out = tmp_path / "run"
    stored = []

    def stop(row):  # type: ignore[no-untyped-def]
        stored.append(row)
        if len(stored) == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(folder, prompts, out, metrics=["sufficiency"], on_row=stop)
    assert len(ResultsStore.attach(out, {}).rows()) == 7
    resumed = _run(folder, prompts, out, metrics=["sufficiency"])
    assert resumed.computed_rows == 10 * 2 - 7
    summary = (out / "summary.md").read_text()
    assert "10 continuation tokens of 2 prompts" in summary


def test_lm_bad_options_are_typed_errors(folder, prompts, tmp_path):
    with pytest.raises(InvalidInputError, match="classes="):
        _run(folder, prompts, classes=["a", "b"])
    with pytest.raises(InvalidInputError, match="unknown metric"):
        _run(folder, prompts, metrics=["pointing_game"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "the cat", "continuation": "  "}) + "\n")
    with pytest.raises(InvalidInputError, match="empty continuation"):
        _run(folder, bad)


def test_cli_scores_the_bundled_prompts_with_a_local_lm(folder, tmp_path):
    from semantic_pullbacks.cli import main

    assert len(bundled_prompts().read_text().splitlines()) == 40
    argv = ["evaluate", "--texts", "examples", "--model", str(folder), "--n-texts", "2", "--methods", "Gradient",
            "--metrics", "sufficiency", "--quiet", "--no-chart", "--out", str(tmp_path / "cli")]  # fmt: skip
    assert main(argv) == 0
    lines = (tmp_path / "cli" / "scores.csv").read_text().splitlines()
    assert 2 <= len(lines) - 1 <= 2 * 8  # 8 greedy tokens a prompt, fewer where the model ends the text
    assert all(line.startswith("prompt-") for line in lines[1:])
    assert len({line.split("/")[0] for line in lines[1:]}) == 2
