"""Evaluation runner: rows and reports written, statistics, resume after an interruption, settings checks,
input errors, ablation specs, and the ``evaluate`` command end to end.

Most tests use a tiny CNN on 32×32 images in an ImageFolder tree, so the whole file runs in seconds; the CLI
test runs the embedded model on two bundled photos with two cheap metrics.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from distributed_worker import tiny as tiny_wrapped
from distributed_worker import write_png
from semantic_pullbacks.engine import Temperatures
from semantic_pullbacks.errors import InvalidInputError, UnknownClassError
from semantic_pullbacks.evaluation import (
    MethodSpec,
    ablation_specs,
    bootstrap_ci,
    evaluate,
    find_images,
    paired_difference,
    parse_ablation,
    summarise,
)
from semantic_pullbacks.evaluation.runner import compose_mosaics
from semantic_pullbacks.evaluation.store import ResultsStore, read_part
from semantic_pullbacks.imagenet import imagenet_classes
from semantic_pullbacks.metrics import FaithfulnessCorrelation, make_mosaics

METHODS = ["SoftPullback", "Gradient"]
METRICS = ["faithfulness_correlation", "random_logit", "focus"]


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny():
    return tiny_wrapped()


def _run(tiny, image_folder: Path, out: Path | None, **kwargs):
    settings = {"methods": METHODS, "metrics": METRICS, "batch_size": 4, "progress": False, "on_error": "raise"}
    settings.update(kwargs)
    return evaluate(tiny, image_folder, out=out, **settings)


def _scores(rows) -> dict[tuple[str, str, str], float]:
    return {r.key: r.score for r in rows}


# ------------------------------------------------------------------------------------------------ statistics
def test_bootstrap_ci_is_seeded_and_contains_the_mean():
    values = np.random.default_rng(1).normal(2.0, 1.0, 40)
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)
    low, high = bootstrap_ci(values, seed=3)
    assert low < values.mean() < high
    assert high - low < 1.5  # about 4 standard errors of a mean of 40 unit-variance values


def test_summarise_leaves_nan_out_and_counts_it():
    s = summarise([1.0, 2.0, 3.0, float("nan")], seed=0)
    assert (s.n, s.n_nan, s.mean) == (3, 1, 2.0)
    assert s.std == pytest.approx(1.0)
    assert s.ci_low <= s.mean <= s.ci_high
    empty = summarise([float("nan")])
    assert empty.n == 0 and math.isnan(empty.mean)


def test_paired_difference_uses_only_images_both_scored():
    a = {"x": 1.0, "y": 2.0, "z": 3.0, "w": float("nan")}
    b = {"x": 2.0, "y": 4.0, "z": 6.0, "w": 1.0, "v": 9.0}
    d = paired_difference(a, b, method="SP", baseline="G", metric="m", higher_is_better=False, seed=0)
    assert d.n == 3
    assert d.mean_diff == pytest.approx(-2.0)
    assert d.ratio == pytest.approx(0.5)
    b["z"] = 30.0  # one image dominating the means moves the ratio of means, not the median ratio
    d2 = paired_difference(a, b, method="SP", baseline="G", metric="m", higher_is_better=False, seed=0)
    assert d2.ratio == pytest.approx(6 / 36) and d2.median_ratio == pytest.approx(0.5)
    assert d.ci_high < 0 and d.method_better is True  # lower is better and the whole CI is below 0


# ------------------------------------------------------------------------------------------------ runs
def test_rows_summary_and_files_are_written(tiny, image_folder: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = _run(tiny, image_folder, out)
    # 6 images x 2 methods x 2 metrics + 6 mosaics x 2 methods (focus)
    assert len(result.rows) == 6 * 2 * 2 + 6 * 2 == result.computed_rows
    with (out / "scores.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(result.rows)
    assert {r["metric"] for r in rows} == set(METRICS)
    assert {r["target"] for r in rows if r["metric"] != "focus"} == {"0", "3", "7"}  # labels from folder names
    summary = (out / "summary.md").read_text()
    assert "| SoftPullback |" in summary and "faithfulness_correlation ↑" in summary and "random_logit ↓" in summary
    assert "95% bootstrap" in summary and "| SoftPullback | Gradient |" in summary
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "summary.json").read_text())
    assert len(data["summaries"]) == 2 * 3
    for s in result.summaries.values():
        assert s.n == 6 and s.ci_low <= s.mean <= s.ci_high
    assert {d.metric for d in result.differences} == set(METRICS)
    assert result.uses_pullback == {"SoftPullback": True, "Gradient": False}  # the chart's colours


def _stored(out: Path):
    return ResultsStore.attach(out, {}).rows()


def test_resume_after_interrupt_matches_an_uninterrupted_run(tiny, image_folder, tmp_path, monkeypatch):
    reference = _run(tiny, image_folder, tmp_path / "ref")
    total = len(reference.rows)

    out = tmp_path / "interrupted"
    seen: list[str] = []

    def stop_after_five(row):
        seen.append(row.item)
        if len(seen) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(tiny, image_folder, out, on_row=stop_after_five)
    saved = _stored(out)
    assert len(saved) == 5  # finished rows are on disk, nothing more
    assert not (out / ".lock").exists()  # the folder is free again

    calls = []
    original = FaithfulnessCorrelation.__call__

    def counting(self, model, inputs, *args, **kwargs):
        calls.append(inputs.shape[0])
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(FaithfulnessCorrelation, "__call__", counting)
    resumed = _run(tiny, image_folder, out)
    assert resumed.computed_rows == total - len(saved)
    # faithfulness correlation runs once per (image, method): 6 x 2, less the ones already stored
    done = {(r.item, r.method) for r in saved if r.metric == "faithfulness_correlation"}
    assert len(done) >= 2 and len(calls) == 12 - len(done)
    assert _scores(resumed.rows) == _scores(reference.rows)
    assert [r.key for r in resumed.rows] == [r.key for r in reference.rows]  # the same order, too

    again = _run(tiny, image_folder, out)  # everything done: nothing to compute
    assert again.computed_rows == 0 and len(again.rows) == total


def test_torn_and_damaged_lines_are_never_read_as_scores(tiny, image_folder, tmp_path):
    out = tmp_path / "torn"
    first = _run(tiny, image_folder, out, metrics=["faithfulness_correlation"])
    (part,) = (out / "parts").glob("*.rank-0.jsonl")
    lines = part.read_text().splitlines(keepends=True)
    assert len(lines) == 1 + 12
    # a crash mid-write leaves half a row, whose score would parse as a (wrong) number; and a line damaged on disk
    values = json.loads(lines[3].rpartition(" ")[0])
    image, method, metric = values[0], values[3], values[4]
    damaged = lines[3].replace(json.dumps(values[5]), '"0.5"')
    assert damaged != lines[3]
    part.write_text("".join(lines[:3]) + damaged + "".join(lines[4:]) + lines[5][: lines[5].index(metric) + 12])
    rows, bad = read_part(part)
    assert bad == 1 and len(rows) == 11 and all(r.score != 0.5 for r in rows)
    resumed = _run(tiny, image_folder, out, metrics=["faithfulness_correlation"])
    assert resumed.computed_rows == 1
    assert _scores(resumed.rows) == _scores(first.rows)
    assert any("1 damaged lines" in n for n in resumed.notes)
    (new,) = set((out / "parts").glob("*.jsonl")) - {part}  # the resumed job wrote a part of its own
    assert [r.key for r in read_part(new)[0]] == [(image, method, metric)]


def test_changed_settings_are_refused_unless_forced(tiny, image_folder, tmp_path):
    out = tmp_path / "run"
    _run(tiny, image_folder, out, metrics=["faithfulness_correlation"])
    with pytest.raises(InvalidInputError, match=r"other settings \(changed: .*seed"):
        _run(tiny, image_folder, out, metrics=["faithfulness_correlation"], seed=1)
    with pytest.raises(InvalidInputError, match="methods"):
        _run(tiny, image_folder, out, metrics=["faithfulness_correlation"], methods=["Gradient"])
    result = _run(tiny, image_folder, out, metrics=["faithfulness_correlation"], seed=1, force=True)
    assert result.computed_rows == len(result.rows) == 12
    kept = list(out.glob("previous-*/scores.csv"))
    assert len(kept) == 1  # the old results were moved aside, not deleted


def test_in_memory_run_and_focus_needs_three_classes(tiny, image_folder, tmp_path):
    two_classes = tmp_path / "two"
    for cls in ("0", "3"):
        (two_classes / cls).mkdir(parents=True)
        write_png(two_classes / cls / "a.png", seed=int(cls))
    result = _run(tiny, two_classes, None, metrics=["random_logit", "focus"])
    assert result.out is None and result.files == {}
    assert result.metrics == ["random_logit"]
    assert any("focus skipped" in n and "3 distinct classes" in n for n in result.notes)
    assert "focus skipped" in result.markdown()


def test_unlabelled_folder_uses_top1(tiny, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(2):
        write_png(flat / f"{i}.png", seed=i)
    result = _run(tiny, flat, None, metrics=["faithfulness_correlation"], methods=["Gradient"])
    x = tiny.preprocess.load_batch(sorted(flat.iterdir()))
    top1 = tiny.model(x).argmax(1).tolist()
    assert [r.target for r in sorted(result.rows, key=lambda r: r.item)] == top1
    assert {r.label for r in result.rows} == {-1}


# ------------------------------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metrics": ["faithfulness"]}, "unknown metric 'faithfulness' for images; available:"),
        ({"methods": ["SoftPullbak"]}, "unknown method 'SoftPullbak'"),
        ({"methods": ["Gradient", "gradient"]}, "listed twice"),
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"workers": -1}, "workers must be an int >= 0"),
        ({"preset": "quick"}, "unknown preset 'quick'"),
        ({"ascent": {"stepz": 3}}, "unknown key 'stepz'"),
    ],
)
def test_bad_arguments_fail_clearly(tiny, image_folder, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        _run(tiny, image_folder, None, **kwargs)


def test_missing_empty_and_mislabelled_folders(tiny, tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        _run(tiny, tmp_path / "nowhere", None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="holds no images"):
        _run(tiny, tmp_path / "empty", None)
    (tmp_path / "bad" / "zebra").mkdir(parents=True)
    write_png(tmp_path / "bad" / "zebra" / "a.png", seed=0)
    with pytest.raises(UnknownClassError, match="'zebra' is not a class"):
        _run(tiny, tmp_path / "bad", None)


def test_imagenet_folder_names_resolve(tmp_path):
    for name in ("n01440764", "n01443537", "goldfish", "7"):
        (tmp_path / name).mkdir()
        write_png(tmp_path / name / "a.png", seed=0)
    found = find_images(tmp_path, imagenet_classes())
    assert {im.id.split("/")[0]: im.label for im in found} == {"n01440764": 0, "n01443537": 1, "goldfish": 1, "7": 7}
    assert len(find_images(tmp_path, imagenet_classes(), n_images=2)) == 2
    bundled = find_images("examples", imagenet_classes())
    assert [im.label for im in bundled][:2] == [285, 967]


def test_mosaics_match_make_mosaics():
    images = torch.rand(6, 3, 16, 16)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    ref = make_mosaics(images, labels, 4, seed=5)
    plan = make_mosaics(torch.zeros(6, 1, 2, 2), labels, 4, seed=5)  # the runner plans on stand-ins
    assert torch.equal(plan.sources, ref.sources) and torch.equal(plan.positions, ref.positions)
    mosaics = compose_mosaics(images[plan.sources.flatten()].reshape(4, 4, 3, 16, 16))
    assert torch.allclose(mosaics, ref.images)


# ------------------------------------------------------------------------------------------------ ablation
def test_a_method_spec_carries_its_class_and_refuses_an_unknown_name():
    from semantic_pullbacks.methods import PullbackAscent, SoftPullback

    assert MethodSpec("SP", "soft-pullback").method_class is SoftPullback
    assert [s.method_class for s in ablation_specs({"steps": [3]}, temperatures=Temperatures(), ascent={})] == [
        SoftPullback,
        PullbackAscent,
        PullbackAscent,
    ]
    with pytest.raises(InvalidInputError, match="unknown method 'NoSuchMethod'"):
        MethodSpec("mine", "NoSuchMethod")


def test_ablation_specs_vary_one_setting_at_a_time():
    sweeps = parse_ablation(["relu=0.3,0.6,none", "K=3,5", "alpha=10"])
    assert sweeps == {"relu": [0.3, 0.6, None], "steps": [3, 5], "alpha": [10.0]}
    specs = ablation_specs(sweeps, temperatures=Temperatures(), ascent={"steps": 5, "alpha": 20.0})
    labels = [s.label for s in specs]
    assert labels == [
        "SoftPullback",
        "SoftPullback[relu=0.3]",
        "SoftPullback[relu=none]",
        "PullbackAscent",
        "PullbackAscent[relu=0.3]",
        "PullbackAscent[relu=none]",
        "PullbackAscent[K=3]",
        "PullbackAscent[alpha=10]",
    ]
    spec = specs[labels.index("PullbackAscent[K=3]")]
    kwargs = spec.resolved(temperatures=Temperatures(), ascent={"steps": 5, "alpha": 20.0}, seed=0, domain=(-1, 1))
    assert kwargs["steps"] == 3 and kwargs["alpha"] == 20.0
    relu = specs[labels.index("SoftPullback[relu=none]")]
    kw = relu.resolved(temperatures=Temperatures(), ascent={}, seed=0, domain=(-1, 1))
    assert kw["temperatures"].relu is None and kw["temperatures"].maxpool == 0.3


def test_ablation_takes_temperatures_in_every_form_the_temperatures_option_takes():
    from semantic_pullbacks.engine import BySize, Relative

    sweeps = parse_ablation(["relu=0.3,3*std,2std", "maxpool=1*std;56:1.5*std,none"])  # as in the README
    assert sweeps == {"relu": [0.3, Relative(3.0), Relative(2.0)], "maxpool": [BySize.parse("1*std;56:1.5*std"), None]}
    specs = ablation_specs(sweeps, ["SoftPullback"], temperatures=Temperatures(relu=0.6), ascent={})
    assert [s.label for s in specs] == [
        "SoftPullback",
        "SoftPullback[relu=0.3]",
        "SoftPullback[relu=3*std]",
        "SoftPullback[relu=2*std]",
        "SoftPullback[maxpool=1*std;56:1.5*std]",
        "SoftPullback[maxpool=none]",
    ]
    kwargs = specs[2].resolved(temperatures=Temperatures(), ascent={}, seed=0, domain=(-1, 1))
    assert kwargs["temperatures"].relu == Relative(3.0)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("tau=0.3", "unknown parameter 'tau'"),
        ("K=2.5", "whole number"),
        ("relu", "PARAM="),
        ("relu=warm", "relu=warm: cannot read temperature 'warm'"),
        ("relu=-1", "non-negative"),
        ("attention=2*std", "attention"),
    ],
)
def test_bad_ablation_specs(item, message):
    with pytest.raises(InvalidInputError, match=message):
        parse_ablation([item])


def test_ablation_run_is_one_table(tiny, image_folder):
    specs = [
        MethodSpec.of("SoftPullback"),
        *ablation_specs({"relu": [0.1]}, ["SoftPullback"], temperatures=Temperatures(), ascent={})[1:],
    ]
    result = _run(tiny, image_folder, None, methods=specs, metrics=["faithfulness_correlation"])
    assert result.methods == ["SoftPullback", "SoftPullback[relu=0.1]"]
    assert "| SoftPullback[relu=0.1] |" in result.markdown()


def test_a_methods_own_settings_beat_the_presets(tiny, image_folder, tmp_path):
    """The fast preset samples SmoothPullback 4 times; a spec that asks for 6 gets 6 (and keeps the preset's
    batch size, which it did not set), its unlabelled twin gets the preset's 4."""
    specs = [
        MethodSpec.of("SmoothPullback"),
        MethodSpec("SmoothPullback-6", "SmoothPullback", {"nt_samples": 6}),
    ]
    out = tmp_path / "run"
    _run(tiny, image_folder, out, methods=specs, metrics=["faithfulness_correlation"], n_images=1, preset="fast")
    config = json.loads((out / "config.json").read_text())
    methods = {label: m["settings"] for label, m in config["settings"]["methods"].items()}
    assert methods["SmoothPullback-6"]["nt_samples"] == 6
    assert methods["SmoothPullback-6"]["nt_samples_batch_size"] == 4
    assert methods["SmoothPullback"]["nt_samples"] == 4


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_evaluate_end_to_end(tmp_path, capsys):
    from semantic_pullbacks.cli import main

    out = tmp_path / "cli"
    argv = [
        "evaluate", "--n-images", "2", "--methods", "SoftPullback,Gradient",
        "--metrics", "faithfulness_correlation,random_logit", "--out", str(out), "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "| SoftPullback |" in printed.out and "wrote" in printed.err
    with (out / "scores.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 2 * 2 * 2
    assert "| Gradient |" in (out / "summary.md").read_text()
    assert (out / "chart.png").stat().st_size > 1000
    assert json.loads((out / "config.json").read_text())["settings"]["preset"] == "fast"

    assert main([*argv, "--seed", "1"]) == 2  # other settings in the same folder: refused
    assert "other settings" in capsys.readouterr().err
    assert main(["evaluate", "--metrics", "nope", "--out", str(out)]) == 2
    assert "unknown metric 'nope'" in capsys.readouterr().err


def test_perturbation_outputs_are_shared_between_methods(tiny, image_folder):
    """Faithfulness correlation perturbs the same way for every method: a second method adds no forward pass."""
    calls = []
    hook = tiny.model.register_forward_hook(lambda *_: calls.append(1) if not torch.is_grad_enabled() else None)
    try:
        _run(tiny, image_folder, None, methods=["Gradient"], metrics=["faithfulness_correlation"])
        one = len(calls)
        calls.clear()
        _run(tiny, image_folder, None, methods=["Gradient", "SoftPullback"], metrics=["faithfulness_correlation"])
    finally:
        hook.remove()
    assert one > 0 and len(calls) == one


def test_a_failing_method_is_noted_and_the_others_still_scored(tiny, image_folder, monkeypatch):
    from semantic_pullbacks.methods import Gradient

    def boom(self, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(Gradient, "_attribute", boom)
    result = _run(tiny, image_folder, None, metrics=["faithfulness_correlation"], on_error="skip")
    assert {r.method for r in result.rows} == {"SoftPullback"}
    (note,) = [n for n in result.notes if n.startswith("Gradient skipped")]  # one note for every item it failed on
    assert f"skipped on {len({r.item for r in result.rows})} items (first " in note and note.endswith("boom")
    with pytest.raises(RuntimeError, match="boom"):
        _run(tiny, image_folder, None, metrics=["faithfulness_correlation"])


def test_one_writer_per_results_folder(tiny, image_folder, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "locked"
    out.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(str(other.pid))
        with pytest.raises(InvalidInputError, match=f"another evaluation \\(pid {other.pid}\\)"):
            _run(tiny, image_folder, out, metrics=["faithfulness_correlation"])
    finally:
        other.kill()
        other.wait()
    result = _run(tiny, image_folder, out, metrics=["faithfulness_correlation"])  # the stale lock is taken over
    assert result.computed_rows == 12
    assert not (out / ".lock").exists()
    assert (out / "summary.md").stat().st_mode & 0o044  # readable by others, like any file the user writes
