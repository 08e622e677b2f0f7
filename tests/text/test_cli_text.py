"""``semantic-pullbacks explain-text`` on the embedded model: output files, and clear errors for bad input."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from semantic_pullbacks.cli import main


def test_explain_text_pair_writes_html_png_json(tmp_path, capsys):
    code = main(["explain-text", "A man is playing a guitar.", "--pair", "The guitar sounds great.",
                 "--out", str(tmp_path), "--png", "--json"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "guitar" in out and "wrote" in out
    page = (tmp_path / "text_explanation.html").read_text()
    assert "guitar" in page and "<script" not in page
    assert (tmp_path / "text_explanation.png").stat().st_size > 1000
    data = json.loads((tmp_path / "text_explanation.json").read_text())
    words = dict(zip(data[0]["tokens"], data[0]["relevance"]))
    assert max(words, key=words.get) == "guitar"


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
