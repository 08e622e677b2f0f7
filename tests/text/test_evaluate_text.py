"""``evaluate``'s text mode on the embedded MiniLM: rows equal to a direct computation with the text package, resume
after an interruption, a 2-process torchrun job equal to one process, and typed errors for bad text data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from distributed_worker import torchrun
from semantic_pullbacks.errors import InvalidInputError, UnknownClassError
from semantic_pullbacks.evaluation import evaluate
from semantic_pullbacks.evaluation.store import ResultsStore
from semantic_pullbacks.text import TextExplainer, TextModel, load_text_model
from semantic_pullbacks.text.dataset import read_texts
from semantic_pullbacks.text.metrics import removal_token, sequence_pointing_game, sufficiency

REVIEWS = [
    ("r1", "Great food and kind staff.", "positive"),
    ("r2", "Cold soup, rude waiters.", "negative"),
    ("r3", "A lovely quiet hotel.", "positive"),
    ("r4", "The room was dirty.", "negative"),
]
DESCRIPTIONS = ["This review is positive.", "This review is negative."]
METHODS = ["SoftPullback", "Gradient"]


@pytest.fixture
def reviews(tmp_path: Path) -> Path:
    path = tmp_path / "reviews.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t, "label": lab}) + "\n" for i, t, lab in REVIEWS[:2]))
    return path


def _run(texts, out, model=None, **kwargs):  # type: ignore[no-untyped-def]
    settings = {"methods": METHODS, "template": "This review is {}.", "classes": ["positive", "negative"],
                "n_pairs": 2, "progress": False, "on_error": "raise"}  # fmt: skip
    return evaluate(model, texts=texts, out=out, **{**settings, **kwargs})


def _direct(text: str, target: int, method: str) -> tuple[list[float], object]:
    """Relevance of ``text`` for description ``target`` through TextExplainer, and its score function."""
    tm = load_text_model()
    explainer = TextExplainer(tm, method=method)
    enc = tm.encode([text])
    target_fn = explainer.target_for(enc, DESCRIPTIONS[target], None, DESCRIPTIONS, None)
    (row,) = explainer.explain_encoded(enc, [target_fn])
    fm = tm.forward_module

    def score_fn(ids, mask):  # type: ignore[no-untyped-def]
        return target_fn(fm(tm.embed(ids), mask))

    return list(row[0].relevance), (enc, score_fn, row[0])


def test_text_rows_equal_a_direct_computation_and_a_resumed_run(reviews, tmp_path):
    reference = _run(reviews, None)
    # 2 texts x 2 methods x 3 removal metrics, 2 joined pairs x 2 methods x the pointing game
    assert len(reference.rows) == 2 * 2 * 3 + 2 * 2 == reference.computed_rows
    assert reference.metrics == ["comprehensiveness", "sufficiency", "deletion_abc", "pointing_game"]
    scores = {r.key: r.score for r in reference.rows}

    # a text's row: its label's description explained, e . pullback per token, special tokens kept, [MASK] put in
    relevance, (enc, score_fn, _) = _direct(REVIEWS[1][1], 1, "SoftPullback")
    expected = sufficiency(score_fn, enc.input_ids, enc.attention_mask, torch.tensor([relevance]), enc.special,
                           removal_token(load_text_model().tokenizer))  # fmt: skip
    assert scores[("r2", "SoftPullback", "sufficiency")] == pytest.approx(float(expected[0]), rel=1e-4, abs=1e-6)
    # a pair's row: the two texts joined, the target's segment found by character offsets
    (pair_id, target, _, (ids, target_first)) = reference.items["pointing"][0]
    texts = {i: t for i, t, _ in REVIEWS}
    joined = f"{texts[ids[0]]} {texts[ids[1]]}"
    relevance, (_, _, result) = _direct(joined, target, "Gradient")
    boundary = len(texts[ids[0]])
    segment = torch.tensor([[(a < boundary) == target_first and b > a for a, b in result.offsets]])
    share = sequence_pointing_game(torch.tensor([relevance]), segment, torch.tensor([result.special]))
    assert scores[(pair_id, "Gradient", "pointing_game")] == pytest.approx(float(share[0]), rel=1e-4)

    out = tmp_path / "run"
    stored = []

    def stop_after_five(row):  # type: ignore[no-untyped-def]
        stored.append(row)
        if len(stored) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(reviews, out, on_row=stop_after_five)
    assert len(ResultsStore.attach(out, {}).rows()) == 5
    resumed = _run(reviews, out)
    assert resumed.computed_rows == len(reference.rows) - 5
    assert [(r.key, r.target, r.score) for r in resumed.rows] == [(r.key, r.target, r.score) for r in reference.rows]
    summary = (out / "summary.md").read_text()
    assert "2 texts" in summary and "paired, same texts" in summary
    assert "| SoftPullback | Gradient | sufficiency ↓" in summary
    assert "zero-shot accuracy of all-MiniLM-L6-v2 on the 2 labelled texts" in summary
    config = json.loads((out / "config.json").read_text())["settings"]
    assert config["modality"] == "text" and config["model"]["descriptions"] == DESCRIPTIONS
    reviews.write_text(reviews.read_text().replace("kind staff", "kind staf"))  # an edited text is recomputed
    edited = _run(reviews, out)
    assert edited.computed_rows == 2 * 3 + 2 * 2  # r1's removal rows, and both pairs (each holds r1)
    assert {r.key: r.score for r in edited.rows} == {r.key: r.score for r in _run(reviews, None).rows}


def test_text_evaluate_under_torchrun_equals_one_process(tmp_path):
    from semantic_pullbacks.cli import main

    path = tmp_path / "reviews.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *[(t, lab) for _, t, lab in REVIEWS]])
    args = ["evaluate", "--texts", str(path), "--methods", "SoftPullback,Gradient", "--metrics",
            "sufficiency,pointing_game", "--n-pairs", "2", "--threads", "1", "--quiet", "--no-chart"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    done, _ = torchrun(2, "-m", "semantic_pullbacks", *args, "--out", str(tmp_path / "two"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on 2 processes" in done.stderr
    one, two = ((tmp_path / n / "scores.csv").read_text().splitlines() for n in ("one", "two"))
    assert len(one) == 1 + 4 * 2 + 2 * 2

    def strip_seconds(lines):  # type: ignore[no-untyped-def]
        return [line.rsplit(",", 1)[0] for line in lines]

    assert strip_seconds(one) == strip_seconds(two)
    parts = sorted((tmp_path / "two" / "parts").iterdir())
    assert len(parts) == 2 and all(len(p.read_text().splitlines()) > 1 for p in parts)  # both ranks did work


def _tiny(auto: str, model_type: str, **kw):  # type: ignore[no-untyped-def]
    import transformers

    torch.manual_seed(0)
    base = dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, num_hidden_layers=2, vocab_size=30522)
    config = transformers.AutoConfig.for_model(model_type, **{**base, **kw})
    return getattr(transformers, auto).from_config(config).eval()


def test_a_classifier_explains_its_own_labels_and_a_language_model_takes_no_classes(reviews):
    tokenizer = load_text_model().tokenizer
    model = _tiny("AutoModelForSequenceClassification", "bert", num_labels=2, id2label={0: "NEGATIVE", 1: "Positive"})
    classifier = TextModel.wrap(model, tokenizer, name="tiny-bert")
    result = evaluate(classifier, texts=reviews, methods=["Gradient"], metrics=["sufficiency"], progress=False)
    assert [(r.item, r.label, r.target) for r in result.rows] == [("r1", 1, 1), ("r2", 0, 0)]  # names, any case
    assert result.config["model"]["classes"] == ["NEGATIVE", "Positive"]
    with pytest.raises(InvalidInputError, match="classifier with its own labels: NEGATIVE, Positive"):
        evaluate(classifier, texts=reviews, classes=["a", "b"], progress=False)
    lm = TextModel.wrap(_tiny("AutoModelForCausalLM", "llama", num_key_value_heads=2), tokenizer, name="tiny-llama")
    with pytest.raises(InvalidInputError, match="a language model has none"):  # scored per token, not per class
        evaluate(lm, texts=reviews, classes=["a", "b"], progress=False)


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("content", "kwargs", "error", "message"),
    [
        (None, {}, InvalidInputError, "does not exist"),
        ('{"text": "fine", "label": "positive"}\n{not json\n', {}, InvalidInputError, "line 2 is not valid JSON"),
        ("", {}, InvalidInputError, "holds no texts"),
        ('{"text": "ok", "label": "neutral"}\n', {}, UnknownClassError, "unknown label 'neutral'"),
        ('{"text": "ok"}\n', {"metrics": ["infidelity"]}, InvalidInputError, "unknown metric 'infidelity' for texts"),
        ('{"text": "ok"}\n', {"n_images": 2}, InvalidInputError, "n_images= cannot be used in a text run"),
        ('{"text": "ok"}\n', {"model": torch.nn.Linear(2, 2)}, InvalidInputError, "got Linear"),
    ],
    ids=["missing", "corrupt", "empty", "unknown-label", "image-metric", "image-option", "not-a-text-model"],
)
def test_bad_text_data_fails_with_a_typed_error(tmp_path, content, kwargs, error, message):
    path = tmp_path / "texts.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(error, match=message):
        _run(path, None, **kwargs)


def test_cli_refuses_options_of_the_other_modality(tmp_path, capsys):
    from semantic_pullbacks.cli import main

    assert main(["evaluate", "--texts", str(tmp_path / "nowhere.csv"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["evaluate", "--texts", "examples", "--n-images", "3", "--out", str(tmp_path)]) == 2
    assert "--n-images cannot be used with --texts" in capsys.readouterr().err
    assert main(["evaluate", "--classes", "a,b", "--out", str(tmp_path)]) == 2
    assert "--classes are for text benchmarks" in capsys.readouterr().err


def test_files_and_dataset_folders_are_read(tmp_path):
    (tmp_path / "a.tsv").write_text("sentence\tlabel\tidx\nnice\t1\t7\nbad\t0\t8\n")
    found = read_texts(tmp_path / "a.tsv")
    assert [(t.id, t.text, t.label) for t in found.texts] == [("7", "nice", "1"), ("8", "bad", "0")]
    assert found.class_indices(["neg", "pos"]) == [1, 0]
    (tmp_path / "b.txt").write_text("one\n\ntwo\n")
    assert [(t.id, t.label) for t in read_texts(tmp_path / "b.txt").texts] == [("b-00001", None), ("b-00002", None)]
    # a dataset repository: splits by file name, class names from the dataset card, -1 = unlabelled
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "train-00000-of-00001.jsonl").write_text('{"text": "x", "label": 0}\n')
    (repo / "data" / "test-00000-of-00001.jsonl").write_text('{"text": "y", "label": 1}\n{"text": "z", "label": -1}\n')
    (repo / "README.md").write_text(
        "---\ndataset_info:\n  features:\n  - name: text\n    dtype: string\n  - name: label\n    dtype:\n"
        "      class_label:\n        names:\n          '0': neg\n          '1': pos\n---\n# a card\n"
    )
    with pytest.raises(InvalidInputError, match="splits test, train: choose one"):
        read_texts(repo)
    test = read_texts(repo, split="test")
    assert test.classes == ("neg", "pos") and test.class_indices(test.classes) == [1, None]
    with pytest.raises(InvalidInputError, match="no text column"):
        (tmp_path / "c.csv").write_text("body,label\nhello,pos\n")
        read_texts(tmp_path / "c.csv")


# ------------------------------------------------------------------------------------------------ review fixes
EMOTIONS = ["sadness", "joy", "love", "anger", "fear", "surprise"]  # the data's order (dair-ai/emotion)
MODEL_EMOTIONS = {0: "anger", 1: "fear", 2: "Joy", 3: "love", 4: "sadness", 5: "surprise"}  # a model's own order


def _card(names: list[str]) -> str:
    listed = "".join(f"          '{i}': {n}\n" for i, n in enumerate(names))
    return (
        "---\ndataset_info:\n  features:\n  - name: text\n    dtype: string\n  - name: label\n    dtype:\n"
        f"      class_label:\n        names:\n{listed}---\n"
    )


def _emotion_classifier(id2label=MODEL_EMOTIONS):  # type: ignore[no-untyped-def]
    model = _tiny("AutoModelForSequenceClassification", "bert", num_labels=len(id2label), id2label=id2label)
    return TextModel.wrap(model, load_text_model().tokenizer, name="tiny-emotion")


def test_a_classifier_reads_index_labels_through_the_datas_class_names(tmp_path):
    data = tmp_path / "emotion"
    data.mkdir()
    (data / "README.md").write_text(_card(EMOTIONS))
    (data / "train.jsonl").write_text('{"id": "s", "text": "I miss her.", "label": 0}\n'
                                      '{"id": "j", "text": "What a day!", "label": 1}\n')  # fmt: skip
    result = evaluate(_emotion_classifier(), texts=data, methods=["Gradient"], metrics=["sufficiency"], progress=False)
    # label 0 is the data's 'sadness', the model's index 4 (not its index 0, 'anger'); 'joy' matches 'Joy'
    assert [(r.item, r.label, r.target) for r in result.rows] == [("s", 4, 4), ("j", 2, 2)]
    assert not any("model's indices" in n for n in result.notes)
    without_love = {k: v for k, v in MODEL_EMOTIONS.items() if v != "love"}
    (data / "train.jsonl").write_text('{"text": "Be mine.", "label": 2}\n')
    with pytest.raises(UnknownClassError, match=r"'love'.*tiny-emotion.*anger, fear, Joy, sadness, surprise"):
        evaluate(_emotion_classifier(dict(enumerate(without_love.values()))), texts=data, progress=False)
    # data that names no classes: the indices are the model's, and the run says so
    (data / "README.md").unlink()
    result = evaluate(_emotion_classifier(), texts=data, methods=["Gradient"], metrics=["sufficiency"], progress=False)
    assert [r.label for r in result.rows] == [2]
    assert any("taken as indices into the labels of tiny-emotion" in n for n in result.notes)


@pytest.mark.parametrize("target_first", [True, False])
def test_a_long_pair_keeps_both_segments_within_the_models_length(target_first):
    from semantic_pullbacks.evaluation.items import Item
    from semantic_pullbacks.evaluation.texts import POINTING, TextDecoder, _Pair

    tokenizer = load_text_model().tokenizer
    texts = ("good " * 30, "awful " * 30)
    inputs = TextDecoder(tokenizer, 16)(Item("pair", None, 0, POINTING, _Pair(("a", "b"), texts, target_first)))
    # 16 tokens: [CLS], 7 of each text (its share of the 14 left), [SEP]
    tokens = tokenizer.convert_ids_to_tokens(inputs.x[0].tolist())
    assert tokens == ["[CLS]", *["good"] * 7, *["awful"] * 7, "[SEP]"]
    inside = [False, *[target_first] * 7, *[not target_first] * 7, False]
    assert inputs.extra["segment"][0].tolist() == inside
    # a short text leaves its unused share to the other
    short = TextDecoder(tokenizer, 16)(Item("pair", None, 0, POINTING, _Pair(("a", "b"), ("fine", texts[1]), True)))
    assert tokenizer.convert_ids_to_tokens(short.x[0].tolist()) == ["[CLS]", "fine", *["awful"] * 13, "[SEP]"]


def test_a_saved_datasets_metadata_files_are_not_read_as_texts(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "x", "label": 1}\n')
    for meta in ("dataset_info.json", "state.json", "dataset_dict.json"):
        (tmp_path / meta).write_text(json.dumps({"features": {"label": {"names": ["neg", "pos"]}}}))
    found = read_texts(tmp_path)
    assert [(t.text, t.label) for t in found.texts] == [("x", 1)] and found.classes == ("neg", "pos")


def test_repeated_ids_get_unused_suffixes(tmp_path):
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"id": i, "text": i}) + "\n" for i in ["r", "r", "r~1"]))
    assert [t.id for t in read_texts(tmp_path / "t.jsonl").texts] == ["r", "r~2", "r~1"]


def test_columns_are_the_union_over_all_records(tmp_path):
    rows = [{"text": "a"}, {"text": "b", "label": "pos", "id": "k"}]
    (tmp_path / "t.json").write_text(json.dumps(rows))
    assert [(t.id, t.label) for t in read_texts(tmp_path / "t.json").texts] == [("t-00001", None), ("k", "pos")]


def test_a_text_whose_id_is_a_pairs_is_refused(reviews):
    reviews.write_text(reviews.read_text().replace('"r1"', '"pair-0000"'))
    with pytest.raises(InvalidInputError, match="two items have the id 'pair-0000'"):
        _run(reviews, None, methods=["Gradient"], metrics=["pointing_game"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": 5}, "classes must be"),
        ({"classes": ["positive", 2]}, "classes must be"),
        ({"template": "{} vs {}"}, "exactly one '{}'"),
        ({"template": "{{}}"}, "exactly one '{}'"),
        ({"template": "This is {name}."}, "exactly one '{}'"),
        ({"template": "This is {."}, "exactly one '{}'"),
    ],
    ids=["int", "not-names", "two-fields", "escaped", "named", "malformed"],
)
def test_bad_classes_and_templates_are_refused_before_the_model_runs(reviews, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        _run(reviews, None, **kwargs)


def test_a_pairs_label_is_its_texts_label_never_a_prediction(tmp_path):
    path = tmp_path / "mixed.jsonl"
    rows = [{"id": i, "text": t, **({"label": lab} if i in ("r1", "r2") else {})} for i, t, lab in REVIEWS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = _run(path, None, methods=["Gradient"], metrics=["pointing_game"], n_pairs=8)
    labelled = {"r1": 0, "r2": 1}
    pairs = result.items["pointing"]
    chosen = [ids[0] if first else ids[1] for _, _, _, (ids, first) in pairs]
    assert {"r3", "r4"} & set(chosen) and {"r1", "r2"} & set(chosen)  # both kinds drawn
    assert [r[2] for r in pairs] == [c in labelled for c in chosen]
    by_item = {r.item: r.label for r in result.rows}
    assert [by_item[r[0]] for r in pairs] == [labelled.get(c, -1) for c in chosen]  # -1: unlabelled


def test_a_device_without_an_index_is_the_current_one():
    from semantic_pullbacks.evaluation.texts import _same_device

    current = torch.cuda.current_device() if torch.cuda.is_available() else 0
    assert _same_device(torch.device("cuda", current), "cuda") and _same_device("cpu", torch.device("cpu:0"))
    assert not _same_device(torch.device("cuda", current + 1), "cuda") and not _same_device("cpu", "cuda")
