"""Hostile inputs on the surfaces added after the first probe: the results folder, evaluate's inputs (folders, text
files), the text API and ``explain-text``, settings strings, the app's functions and the rank set-up.

Organised by category, as the probe found them: scores lost or stale (part files, content keys, folders, labels),
crashes at the edges (DataLoader workers, arguments checked before work, ranks), text inputs, settings, the app.
Each case fails without its fix: a lost row, a stale score, or an untyped error where a typed one is expected.
"""

from __future__ import annotations

import csv
import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distributed_worker import tiny, write_png
from semantic_pullbacks.errors import ImageLoadError, InvalidInputError, UnknownClassError
from semantic_pullbacks.evaluation import evaluate
from semantic_pullbacks.evaluation.job import JobFailedError
from semantic_pullbacks.evaluation.store import PartWriter, Row, read_part

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ part files
def hostile_ids(n: int, seed: int) -> list[str]:
    """Seeded ids built from the characters that break line- and CSV-based formats, lone surrogates (a JSON
    ``\\ud83d`` escape, a Latin-1 file name's ``\\udce9``), bidi and zero-width marks, and ordinary text."""
    alphabet = ["\n", "\r", "\r\n", ",", '"', "'", "\\", "\x00", "\x1f", "\t", " ", "\ud83d", "\udce9", "\udfff",
                "\u202e", "\u200b", "\u2028", "é", "猫", "😀", "a", "Z", "0", "{", "]", "/", "~", "#", ";"]  # fmt: skip
    rng = random.Random(seed)
    out = {"", "\n", "a\nb", '"', ",,,", "\ud83d", "caf\udce9"}
    while len(out) < n:
        out.add("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))))
    return sorted(out)


def _row(item: str, i: int) -> Row:
    return Row(item, i % 3 - 1, i % 7, 'Soft\nPullback,"x"', f"metric {i}", i / 7 - 1.0, 0.25 * i, f"d{i:04x}")


def test_any_id_round_trips_through_a_part_file(tmp_path):
    ids = hostile_ids(400, seed=19)
    rows = [_row(item, i) for i, item in enumerate(ids)] + [Row("nan", 0, 0, "m", "s", float("nan"), 0.0, "")]
    writer = PartWriter(tmp_path / "p.jsonl")
    writer.append(rows[:100])
    for r in rows[100:]:
        writer.append([r])
    writer.close()
    back, damaged = read_part(tmp_path / "p.jsonl")
    assert damaged == 0
    assert [r.item for r in back] == [r.item for r in rows]
    assert [dataclass_tuple(r) for r in back[:-1]] == [dataclass_tuple(r) for r in rows[:-1]]
    assert back[-1].score != back[-1].score  # NaN stays NaN


def dataclass_tuple(r: Row) -> tuple[object, ...]:
    return (r.item, r.label, r.target, r.method, r.metric, r.score, r.seconds, r.digest)


def test_a_line_reported_damaged_is_damaged_and_only_that_line(tmp_path):
    ids = hostile_ids(60, seed=3)
    path = tmp_path / "p.jsonl"
    writer = PartWriter(path)
    writer.append([_row(item, i) for i, item in enumerate(ids)])
    writer.close()
    lines = path.read_bytes().split(b"\n")
    rng = random.Random(5)
    hit = sorted(rng.sample(range(1, len(ids) + 1), 10))
    for k in hit:  # one byte changed per damaged line, somewhere in it
        line = bytearray(lines[k])
        at = rng.randrange(len(line))
        line[at] = (line[at] + 1 + rng.randrange(200)) % 256 or 1
        lines[k] = bytes(line).replace(b"\n", b"?")
    path.write_bytes(b"\n".join(lines))
    back, damaged = read_part(path)
    assert damaged == len(hit)
    assert [r.item for r in back] == [item for j, item in enumerate(ids, 1) if j not in hit]


def test_an_earlier_versions_part_file_is_refused_with_what_to_do(tmp_path):
    old = tmp_path / "p.csv"
    old.write_text("item,label,target,method,metric,score,seconds,check\na,0,0,G,m,0.5,0.1,00000000\n")
    with pytest.raises(InvalidInputError, match=r"earlier version.*--force"):
        read_part(old)


def test_a_results_folder_of_an_earlier_version_is_refused_with_what_to_do(tmp_path):
    folder, out = tmp_path / "data", tmp_path / "out"
    folder.mkdir()
    write_png(folder / "a.png", seed=1)
    _evaluate(folder, out)
    config = json.loads((out / "config.json").read_text())
    config["settings"]["format"] = 3  # as an earlier version wrote it
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidInputError, match=r"earlier version of semantic-pullbacks \(results format 3, now 4\)"):
        _evaluate(folder, out)
    assert _evaluate(folder, out, force=True).computed_rows == 1


HOSTILE_NAMES = ["two\nlines", 'comma, and "quote"', "plain"]


def _hostile_folder(root: Path) -> Path:
    root.mkdir()
    for k, name in enumerate(HOSTILE_NAMES):
        write_png(root / f"{name}.png", seed=k)
    write_png(Path(os.fsdecode(bytes(root) + b"/caf\xe9.png")), seed=9)  # a Latin-1 file name
    return root


def _evaluate(images, out, **kw):  # type: ignore[no-untyped-def]
    settings = {"methods": ["Gradient"], "metrics": ["random_logit"], "preset": "fast", "progress": False,
                "workers": 0, "on_error": "raise"}  # fmt: skip
    return evaluate(tiny(), images, out=out, **{**settings, **kw})


def test_image_ids_with_any_character_are_stored_and_resumed(tmp_path):
    folder, out = _hostile_folder(tmp_path / "data"), tmp_path / "out"
    first = _evaluate(folder, out)
    assert first.computed_rows == 4 and len(first.rows) == 4
    again = _evaluate(folder, out)
    assert again.computed_rows == 0 and len(again.rows) == 4 and not any("damaged" in n for n in again.notes)
    assert sorted(r.item for r in again.rows) == sorted([*HOSTILE_NAMES, "caf\\xe9"])
    with (out / "scores.csv").open(newline="", encoding="utf-8") as f:
        assert sorted(r["item"] for r in csv.DictReader(f)) == sorted(r.item for r in first.rows)


def test_text_ids_with_any_character_are_stored_and_resumed(tmp_path):
    pytest.importorskip("transformers")
    ids = ["a\nb", 'q"uote,comma', "\u202eright-to-left", "tab\there"]
    path = tmp_path / "t.jsonl"
    reviews = ["Great food.", "Cold soup.", "Lovely hotel.", "Dirty room."]
    labels = ["positive", "negative", "positive", "negative"]
    path.write_text("".join(json.dumps({"id": i, "text": t, "label": lab}) + "\n" for i, t, lab in
                            zip(ids, reviews, labels)))  # fmt: skip
    kw = {"methods": ["Gradient"], "metrics": ["sufficiency"], "template": "This review is {}.", "progress": False,
          "on_error": "raise"}  # fmt: skip
    first = evaluate(None, texts=path, out=tmp_path / "out", **kw)
    again = evaluate(None, texts=path, out=tmp_path / "out", **kw)
    assert first.computed_rows == 4 and again.computed_rows == 0
    assert sorted(r.item for r in again.rows) == sorted(ids)


# ------------------------------------------------------------------------------------------------ content keys
def test_a_replaced_photo_is_recomputed_never_given_stale_scores(tmp_path):
    folder, out = tmp_path / "data", tmp_path / "out"
    folder.mkdir()
    for k in range(3):
        write_png(folder / f"im{k}.png", seed=k)
    first = _evaluate(folder, out)
    stat = (folder / "im1.png").stat()
    write_png(folder / "im1.png", seed=77)  # another photo under the same name, size and time
    os.utime(folder / "im1.png", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (folder / "im1.png").stat().st_size == stat.st_size
    again = _evaluate(folder, out)
    fresh = _evaluate(folder, None)
    assert again.computed_rows == 1 and any("changed since" in n for n in again.notes)
    assert {r.key: r.score for r in again.rows} == {r.key: r.score for r in fresh.rows}
    assert {r.key: r.score for r in again.rows} != {r.key: r.score for r in first.rows}


def test_an_edited_text_is_recomputed_not_refused(tmp_path):
    pytest.importorskip("transformers")
    path = tmp_path / "t.jsonl"
    rows = [("r1", "Great food.", "positive"), ("r2", "Cold soup.", "negative")]
    write = lambda rs: path.write_text(
        "".join(json.dumps({"id": i, "text": t, "label": lab}) + "\n" for i, t, lab in rs)
    )
    write(rows)
    kw = {"methods": ["Gradient"], "metrics": ["sufficiency"], "template": "This review is {}.", "progress": False,
          "on_error": "raise"}  # fmt: skip
    evaluate(None, texts=path, out=tmp_path / "out", **kw)
    write([rows[0], ("r2", "Cold soup, rude waiters.", "negative")])
    again = evaluate(None, texts=path, out=tmp_path / "out", **kw)
    fresh = evaluate(None, texts=path, out=None, **kw)
    assert again.computed_rows == 1
    assert {r.key: r.score for r in again.rows} == {r.key: r.score for r in fresh.rows}


def test_explain_resume_keys_a_file_by_its_content(tmp_path):
    from semantic_pullbacks.cli._done import DoneLog

    image = tmp_path / "a.png"
    write_png(image, seed=1)
    log = DoneLog(tmp_path / "out", {"method": "Gradient"}, rank=0)
    log.mark(image)
    stat = image.stat()
    write_png(image, seed=2)  # same name, size and modification time, other pixels
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert not DoneLog(tmp_path / "out", {"method": "Gradient"}, rank=1).is_done(image)
    write_png(image, seed=1)
    assert DoneLog(tmp_path / "out", {"method": "Gradient"}, rank=1).is_done(image)


# ------------------------------------------------------------------------------------------------ folders
def test_images_beside_class_folders_are_an_error_naming_them(tmp_path):
    (tmp_path / "d" / "3").mkdir(parents=True)
    write_png(tmp_path / "d" / "3" / "a.png", seed=1)
    write_png(tmp_path / "d" / "loose.png", seed=2)
    with pytest.raises(
        InvalidInputError, match=r"class sub-folders \('3/'\) and 1 image\(s\) at its top \('loose.png'"
    ):
        _evaluate(tmp_path / "d", None)


@pytest.mark.parametrize("link", ["dangling", "loop"])
def test_a_link_that_leads_nowhere_is_an_error_like_a_corrupt_file(tmp_path, link):
    folder = tmp_path / "d"
    folder.mkdir()
    write_png(folder / "a.png", seed=1)
    (folder / "b.png").symlink_to("missing.png" if link == "dangling" else "b.png")
    with pytest.raises(InvalidInputError, match=r"lead nowhere.*'b.png'"):
        _evaluate(folder, None)


# ------------------------------------------------------------------------------------------------ labels
def test_labels_mixing_names_and_indices_are_refused_showing_one_of_each(tmp_path):
    from semantic_pullbacks.text.dataset import read_texts

    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "good", "label": "positive"}\n{"text": "bad", "label": 1}\n{"text": "x", "label": -1}\n')
    with pytest.raises(InvalidInputError, match=r"mix class names and class indices.*'positive'.*: 1\)"):
        read_texts(path)
    path.write_text('{"text": "good", "label": 0}\n{"text": "x", "label": -1}\n')  # -1: unlabelled, not a class
    assert [t.label for t in read_texts(path).texts] == [0, -1]


# ------------------------------------------------------------------------------------------------ workers
def test_a_bad_image_in_a_worker_is_the_same_error_as_in_process(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    write_png(folder / "a.png", seed=1)
    (folder / "b.png").write_bytes(b"not a png")
    errors = []
    for workers in (0, 1):
        with pytest.raises(ImageLoadError) as caught:
            _evaluate(folder, None, workers=workers)
        errors.append(str(caught.value))
    assert errors[0] == errors[1] and "DataLoader" not in errors[1]


def run_cli(*argv: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    environment = {**os.environ, **(env or {})}
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        if env is None or k not in env:
            environment.pop(k, None)
    return subprocess.run([sys.executable, "-m", "semantic_pullbacks", *argv], capture_output=True, text=True,
                          env=environment, timeout=timeout, cwd=ROOT)  # fmt: skip


def test_cli_worker_error_is_one_error_line(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    write_png(folder / "a.png", seed=1)
    (folder / "b.png").write_bytes(b"not a png")
    done = run_cli("evaluate", "--images", str(folder), "--methods", "Gradient", "--metrics", "random_logit",
                   "--workers", "1", "--out", str(tmp_path / "out"))  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("error:"), done.stderr
    assert "b.png" in done.stderr


# ------------------------------------------------------------------------------------------------ arguments
def test_a_negative_seed_is_refused_before_any_work(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    write_png(folder / "a.png", seed=1)
    with pytest.raises(InvalidInputError, match="seed must be a whole number from 0"):
        _evaluate(folder, tmp_path / "out", seed=-5)
    assert not (tmp_path / "out").exists()
    done = run_cli("evaluate", "--images", str(folder), "--seed", "-5", "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "--seed: must be at least 0" in done.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RANK": "0", "WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not a whole number"),
        ({"RANK": "5", "WORLD_SIZE": "2"}, "RANK=5 is not a rank of WORLD_SIZE=2"),
        ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE=0: a job has at least 1 process"),
        ({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "x"}, "LOCAL_RANK='x' is not a whole number"),
    ],
)
def test_rank_variables_are_checked_before_any_work(monkeypatch, env, message):
    from semantic_pullbacks.evaluation.world import World

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(InvalidInputError, match=message), World.join():
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_rendezvous_that_never_comes_is_one_error_line_naming_the_address(tmp_path):
    port = _free_port()
    env = {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    done = run_cli("evaluate", "--images", "examples", "--methods", "Gradient", "--metrics", "random_logit",
                   "--timeout", "2", "--out", str(tmp_path / "out"), env=env, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: rank 1 could not meet the other ranks at 127.0.0.1:") and str(port) in (
        done.stderr
    )
    assert done.stderr.strip().count("\n") == 0, done.stderr  # torch's own log lines of the attempt are dropped


def test_the_rendezvous_error_is_typed_in_the_api(monkeypatch):
    from semantic_pullbacks.evaluation.world import World

    for k, v in {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(JobFailedError, match="raise --timeout"), World.join(timeout=1):
        pass


# ------------------------------------------------------------------------------------------------ text inputs
@pytest.fixture(scope="module")
def minilm():  # type: ignore[no-untyped-def]
    pytest.importorskip("transformers")
    from semantic_pullbacks.text import load_text_model

    return load_text_model()


@pytest.fixture(scope="module")
def explainer(minilm):  # type: ignore[no-untyped-def]
    from semantic_pullbacks.text import TextExplainer

    return TextExplainer(minilm)


LABELS = ["This review is positive.", "This review is negative."]


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("a \ud83d b", {"pair": "x"}, r"texts\[0\] is not valid Unicode: a lone surrogate U\+D83D"),
        ("ok", {"pair": "caf\udce9"}, r"lone surrogate U\+DCE9"),
        ("\u200b\u202e\x07 \u2060", {"pair": "x"}, r"texts\[0\] is empty: it has no printable character"),
        ("ok", {"labels": "positive,negative"}, r"labels= is one string.*labels=\['positive', 'negative'\]"),
        ("ok", {"labels": LABELS, "target": True}, r"target True is not a label index"),
        ("ok", {"pair": "x", "per_token": True}, r"per_token=True explains each token of a continuation="),
    ],
)
def test_bad_text_inputs_are_refused_by_name(explainer, text, kwargs, message):
    with pytest.raises((InvalidInputError, UnknownClassError), match=message):
        explainer.attribute(text, **kwargs)


def test_a_tokenizer_is_required_when_the_explainer_is_built(minilm):
    from semantic_pullbacks.text import TextExplainer

    with pytest.raises(InvalidInputError, match="needs its tokenizer"):
        TextExplainer(minilm.model)


@pytest.fixture(scope="module")
def tiny_lm(minilm):  # type: ignore[no-untyped-def]
    import transformers

    from semantic_pullbacks.text import TextExplainer

    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model("gpt2", vocab_size=30522, n_embd=32, n_head=4, n_layer=2)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    return TextExplainer(model, minilm.tokenizer)


@pytest.mark.parametrize(("arg", "value"), [("target", 30522), ("target", -1), ("foil", 10**30)])
def test_token_ids_are_range_checked(tiny_lm, arg, value):
    kwargs = {"target": 2000, arg: value}
    with pytest.raises(InvalidInputError, match=f"{arg} token id {value} is outside the vocabulary"):
        tiny_lm.attribute("the cat sat", **kwargs)


def test_per_token_without_a_continuation_is_refused_on_an_lm(tiny_lm):
    with pytest.raises(InvalidInputError, match="per_token=True explains each token"):
        tiny_lm.attribute("the cat sat", per_token=True)


def test_cli_text_inputs_are_one_error_line(tmp_path):
    pytest.importorskip("transformers")
    bad = os.fsdecode(b"caf\xe9 latin-1")  # a shell argument that is not UTF-8
    done = run_cli("explain-text", bad, "--pair", "A movie.", "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and done.stderr.startswith("error: texts[0] is not valid Unicode"), done.stderr
    done = run_cli("explain-text", "A film.", "--pair", "A movie.", "--per-token", "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and done.stderr.startswith("error: per_token=True"), done.stderr
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a \\ud83d b", "label": "positive"}\n')
    done = run_cli("evaluate", "--texts", str(path), "--out", str(tmp_path / "e"))
    assert done.returncode == 2 and "row 1 is not valid Unicode" in done.stderr and "Traceback" not in done.stderr


# ------------------------------------------------------------------------------------------------ settings
@pytest.mark.parametrize("text", ["none;1*std;112:2*std", "1*std;112:2*std;none", "1*std;2*std"])
def test_two_staged_defaults_are_refused_whatever_their_order(text):
    from semantic_pullbacks.engine.temperatures import BySize

    with pytest.raises(InvalidInputError, match="more than one default value"):
        BySize.parse(text)


# ------------------------------------------------------------------------------------------------ the app
@pytest.fixture(scope="module")
def loaded():  # type: ignore[no-untyped-def]
    from semantic_pullbacks.models import wrap
    from small_methods import small_net

    return wrap(small_net(classes=3), domain=(-1.0, 1.0), input_size=32, class_names=("a", "b", "c"), name="tiny")


def test_app_read_image_without_a_path_is_an_upload_error(loaded):
    from semantic_pullbacks.app.logic import read_image

    with pytest.raises(ImageLoadError, match="the upload is missing"):
        read_image(None, loaded)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.zeros(3, 32, 32, dtype=torch.uint8), "floating-point tensor"),
        (torch.zeros(3, 32, 32).index_fill_(1, torch.tensor([3]), float("nan")), "NaN or infinite pixels"),
    ],
)
def test_app_tensors_are_checked(loaded, x, message):
    from semantic_pullbacks.app.logic import ExplainRequest, classify, explain

    with pytest.raises(InvalidInputError, match=message):
        classify(loaded, x)
    with pytest.raises(InvalidInputError, match=message):
        explain(loaded, x, ExplainRequest(methods=["Gradient"]))


@pytest.mark.parametrize(
    ("request_kwargs", "message"),
    [
        ({"alpha": "20"}, "α \\(step size\\) must be a positive number, got '20'"),
        ({"temperatures": {"relu": "0.6"}}, "temperature 'relu' must be a number >= 0, got '0.6'"),
        ({"temperatures": {"rleu": 0.1}}, "unknown temperature family 'rleu'"),
        ({"temperatures": {"norm": "no"}}, "'norm' is a switch"),
    ],
)
def test_app_request_values_are_checked(loaded, request_kwargs, message):
    from semantic_pullbacks.app.logic import ExplainRequest, explain

    with pytest.raises(InvalidInputError, match=message):
        explain(loaded, torch.zeros(3, 32, 32), ExplainRequest(methods=["Gradient"], **request_kwargs))
