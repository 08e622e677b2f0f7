"""``semantic-pullbacks explain-text`` on the embedded model: output files, and clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from semantic_pullbacks.cli import main


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
    words = dict(zip(data[0]["tokens"], data[0]["relevance"]))
    assert max(words, key=words.get) == "guitar"
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
