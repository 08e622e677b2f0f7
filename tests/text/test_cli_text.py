"""``semantic-pullbacks explain-text`` on the embedded model: output files, and clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from semantic_pullbacks.cli import main
from semantic_pullbacks.text import TextExplainer, TokenAttribution, TokenMatrix, load_text_model


def written(out: str) -> list[Path]:
    return [Path(line.split("wrote ", 1)[1]) for line in out.splitlines() if "wrote " in line]


def test_explain_text_pair_writes_html_png_json(tmp_path, capsys):
    code = main(["explain-text", "A man is playing a guitar.", "--pair", "The guitar sounds great.",
                 "--out", str(tmp_path), "--png", "--json"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    html, png, js = written(out)
    assert "guitar" in out and html.parent == tmp_path and html.name.startswith("text-a-man-is-playing-a-")
    assert [html.suffix, png.suffix, js.suffix] == [".html", ".png", ".json"] and html.stem == png.stem == js.stem
    page = html.read_text()
    assert "guitar" in page and "<script" not in page
    assert png.stat().st_size > 1000
    data = json.loads(js.read_text())
    words = dict(zip(data["tokens"], data["relevance"]))
    assert max(words, key=words.get) == "guitar"
    assert TokenAttribution.load(js).target == "similarity to 'The guitar sounds great.'"  # what --json wrote
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (html, png, js))  # no partial files


def test_another_text_or_target_never_overwrites_and_the_same_command_rewrites_its_own(tmp_path, capsys):
    man, woman = "A man is playing a guitar.", "A woman is playing a guitar."
    runs = [
        [man, "--pair", "Music."],
        [man, "--pair", "Sports."],
        [woman, "--pair", "Music."],
        [man, "--pair", "Music."],
    ]
    files = []
    for argv in runs:
        assert main(["explain-text", *argv, "--out", str(tmp_path)]) == 0
        (html,) = written(capsys.readouterr().out)
        files.append(html)
    assert len(set(files[:3])) == 3 and files[3] == files[0]
    assert sorted(tmp_path.iterdir()) == sorted(set(files))
    assert "Sports." in files[1].read_text() and "Sports." not in files[0].read_text()


def test_explain_text_creates_no_folder_for_bad_arguments(tmp_path):
    for argv in (["A film.", "--pair", "x", "--method", "NoSuchMethod"], ["  ", "--pair", "x"],
                 ["A film.", "--pair", "x", "--model", "nobody/no-such-model-xyz", "--offline"]):  # fmt: skip
        assert main(["explain-text", *argv, "--out", str(tmp_path / "new")]) == 2
        assert not (tmp_path / "new").exists()


def test_explain_text_zero_shot_labels(tmp_path, capsys):
    code = main(["explain-text", "A moving, beautiful film.", "--labels",
                 "This review is positive.,This review is negative.", "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    assert "This review is positive." in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["   ", "--pair", "x"], "empty"),
        (["A film.", "--labels", "good,bad", "--target", "neutral"], "unknown label"),
        (["A film."], "pair="),
        (["A film.", "--pair", "x", "--model", "nobody/no-such-model-xyz", "--offline"], "offline"),
        (["A film.", "--pair", "x", "--method", "NoSuchMethod"], "unknown method"),
    ],
    ids=["empty", "unknown-label", "no-target", "offline-missing", "bad-method"],
)
def test_explain_text_bad_input_exits_2_with_an_error_line(tmp_path, capsys, argv, message):
    assert main(["explain-text", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err.split("error:", 1)[1]


@pytest.fixture(scope="module")
def llm_folder(tmp_path_factory):
    """A tiny random-weight Llama and a word-level tokenizer saved as a local model folder."""
    from .test_generate import tiny_causal, word_tokenizer

    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_causal("llama").save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return folder


def test_explain_text_generates_and_writes_the_matrix_load_reads(tmp_path, capsys, llm_folder):
    prompt = "the cat sat on the"
    argv = ["explain-text", prompt, "--model", str(llm_folder), "--max-new-tokens", "3", "--out", str(tmp_path)]
    assert main([*argv, "--png", "--json"]) == 0
    out = capsys.readouterr().out
    html, png, js = written(out)
    expected = TextExplainer(load_text_model(llm_folder)).attribute(prompt, max_new_tokens=3)
    loaded = TokenMatrix.load(js)
    assert loaded.continuation == expected.continuation and loaded.target_tokens == expected.target_tokens
    torch.testing.assert_close(loaded.matrix, expected.matrix, equal_nan=True)
    assert expected.continuation.strip() in out and "summed over 3 generated tokens" in out
    assert html.read_text().count("<tr>") == 1 + 3 and png.stat().st_size > 1000
    assert main(["explain-text", prompt, "--model", str(llm_folder), "--continuation", expected.continuation,
                 "--per-token", "--json", "--out", str(tmp_path)]) == 0  # fmt: skip
    per_token = TokenMatrix.load(written(capsys.readouterr().out)[-1])
    torch.testing.assert_close(per_token.matrix, expected.matrix, equal_nan=True)


@pytest.mark.parametrize(
    "extra,message",
    [(["--max-new-tokens", "2", "--sample"], "seed="), (["--seed", "3"], "add --max-new-tokens"),
     (["--max-new-tokens", "0"], "at least 1"), (["--max-new-tokens", "2", "--target", "the"], "take no")],
    ids=["sample-without-seed", "seed-without-generation", "zero-tokens", "target-with-generation"],
)  # fmt: skip
def test_explain_text_bad_generation_options_exit_2(tmp_path, capsys, llm_folder, extra, message):
    argv = ["explain-text", "the cat sat on", "--model", str(llm_folder), "--out", str(tmp_path / "new"), *extra]
    with pytest.raises(SystemExit) if extra[-1] == "0" else _nothing():
        assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def _nothing():
    import contextlib

    return contextlib.nullcontext()
