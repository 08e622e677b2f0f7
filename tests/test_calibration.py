"""Calibration and settings files: deterministic, within budget, strict about bad files."""

from __future__ import annotations

import json
import time

import pytest
import torch
from torch import nn

from semantic_pullbacks import InvalidInputError, Relative, Temperatures
from semantic_pullbacks.calibration import (
    Settings,
    active_families,
    calibrate,
    load_settings,
    recommended_settings,
    save_settings,
)
from semantic_pullbacks.cli import main


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()  # fmt: skip


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(1)
    return torch.rand(6, 3, 16, 16) * 2 - 1


CANDS = {"relu": (0.6, Relative(1.0), Relative(3.0)), "maxpool": (0.3, Relative(1.0))}


def test_active_families_follow_the_model(data):
    assert active_families(small_net(), data) == ["relu", "maxpool"]


def test_calibration_is_deterministic_and_reports_held_out(data):
    kw = dict(candidates=CANDS, budget_s=300, seed=3)
    a = calibrate(small_net(), data, **kw)
    b = calibrate(small_net(), data, **kw)
    assert a.settings.temperatures == b.settings.temperatures
    assert [t.score for t in a.trials] == [t.score for t in b.trials]
    assert set(a.calibration_indices).isdisjoint(a.report_indices)
    assert sorted(a.calibration_indices + a.report_indices) == list(range(6))
    assert set(a.report) == {"paper defaults", "calibrated"}
    best = min(t.score for t in a.trials)
    chosen = next(t for t in a.trials if t.temperatures == a.settings.temperatures)
    assert chosen.score == best
    assert "held-out" in a.markdown()
    c = calibrate(small_net(), data, **{**kw, "seed": 4})
    assert c.calibration_indices != a.calibration_indices or c.trials[0].score != a.trials[0].score


def test_calibration_respects_its_budget(data):
    t0 = time.monotonic()
    r = calibrate(small_net(), data, candidates=CANDS, budget_s=0.01)
    assert r.budget_exhausted
    assert len(r.trials) == 1  # only the starting point fits in the budget
    assert time.monotonic() - t0 < 120
    with pytest.raises(InvalidInputError, match="budget"):
        calibrate(small_net(), data, budget_s=0)
    with pytest.raises(InvalidInputError, match="at least 2 images"):
        calibrate(small_net(), data[:1])


def test_settings_round_trip_and_bad_files(tmp_path):
    s = Settings(Temperatures(relu=Relative(2.0), maxpool=None), model="m", evidence={"score": 0.3})
    path = save_settings(s, tmp_path / "s.json")
    assert load_settings(path) == s
    bad = {
        "typo.json": {"temperatures": {"relu": 0.5}, "ascnet": {}},
        "family.json": {"temperatures": {"relu": -1}},
        "value.json": {"temperatures": {"relu": "hot"}},
        "steps.json": {"temperatures": {}, "ascent": {"steps": 0}},
        "list.json": [1, 2],
    }
    for name, content in bad.items():
        (tmp_path / name).write_text(json.dumps(content))
        with pytest.raises(InvalidInputError, match=name):
            load_settings(tmp_path / name)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        load_settings(tmp_path / "broken.json")
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_settings(tmp_path / "missing.json")


def test_recommended_settings_carry_evidence():
    lite = recommended_settings("efficientnet_lite0")
    assert lite.evidence and "held_out" in lite.evidence
    assert recommended_settings("torchvision:resnet50").temperatures == Temperatures()
    assert "arXiv" in recommended_settings("timm:resnet18").evidence["source"]
    assert recommended_settings("my_own_net").evidence


def test_cli_bad_settings_file_is_rejected(tmp_path, capsys):
    (tmp_path / "bad.json").write_text('{"temperatures": {"relu": "warm"}}')
    code = main(["explain", "example:chelsea", "--settings", str(tmp_path / "bad.json"), "--out", str(tmp_path)])
    assert code == 2
    assert "bad.json" in capsys.readouterr().err


def test_cli_starts_from_the_recommended_settings():
    import argparse

    from semantic_pullbacks.cli._common import settings_from_args

    ns = argparse.Namespace(model="efficientnet_lite0", settings=None, temperatures=None, steps=None, alpha=None)
    assert settings_from_args(ns).temperatures == recommended_settings("efficientnet_lite0").temperatures
    ns.paper_defaults = True
    assert settings_from_args(ns).temperatures == Temperatures()
    ns.temperatures = "relu=3*std"
    assert settings_from_args(ns).temperatures.relu == Relative(3.0)


def test_recommended_ascent_raises_the_target_on_every_bundled_photo():
    from semantic_pullbacks.calibration.settings import temperatures_for
    from semantic_pullbacks.examples import example_path, list_examples
    from semantic_pullbacks.methods import PullbackAscent
    from semantic_pullbacks.models import load

    model = load("efficientnet_lite0")
    rec = recommended_settings(model.name)
    examples = list_examples()
    x = torch.cat([model.load_image(example_path(e.name)) for e in examples])
    y = torch.tensor([e.expected_class for e in examples])
    temps = temperatures_for("PullbackAscent", rec.temperatures, rec.ascent.temperatures)
    result = PullbackAscent(model.model, temps, steps=rec.ascent.steps, alpha=rec.ascent.alpha, clip="last").run(x, y)
    assert (result.scores[-1] > result.scores[0]).all(), result.scores


def test_settings_files_carry_ascent_temperatures(tmp_path):
    from semantic_pullbacks.calibration import AscentSettings
    from semantic_pullbacks.calibration.settings import temperatures_for

    s = Settings(Temperatures(relu=Relative(3.0)), AscentSettings(5, 20.0, Temperatures()))
    loaded = load_settings(save_settings(s, tmp_path / "a.json"))
    assert loaded.ascent.temperatures == Temperatures()
    assert temperatures_for("PullbackAscent", loaded.temperatures, loaded.ascent.temperatures) == Temperatures()
    assert temperatures_for("SoftPullback", loaded.temperatures, loaded.ascent.temperatures).relu == Relative(3.0)
    (tmp_path / "b.json").write_text('{"temperatures": {}, "ascent": {"temperatures": 3}}')
    with pytest.raises(InvalidInputError, match=r"ascent\.temperatures"):
        load_settings(tmp_path / "b.json")


def test_cli_stepping_methods_get_the_ascent_temperatures():
    import argparse

    from semantic_pullbacks.cli._common import build_method, settings_from_args
    from semantic_pullbacks.models import load

    ns = argparse.Namespace(model="efficientnet_lite0", settings=None, temperatures=None, steps=None, alpha=None)
    settings = settings_from_args(ns)
    model = load("efficientnet_lite0")
    rec = recommended_settings("efficientnet_lite0")
    assert build_method("PullbackAscent", model, settings).temperatures == rec.ascent.temperatures
    assert build_method("SoftPullback", model, settings).temperatures == rec.temperatures
    ns.temperatures = "relu=0.4"  # explicit temperatures apply to every method
    assert build_method("PullbackAscent", model, settings_from_args(ns)).temperatures.relu == 0.4


def test_calibration_leaves_the_stepping_methods_their_temperatures(data):
    r = calibrate(small_net(), data, candidates={"relu": (Relative(3.0),)}, families=["relu"], budget_s=300)
    assert r.settings.ascent.temperatures == Temperatures()  # the starting (paper) temperatures
    r2 = calibrate(small_net(), data, families=["relu"], candidates={"relu": (0.6,)}, tune_ascent=True, budget_s=300)
    assert r2.settings.ascent.temperatures == Temperatures() and any(t.ascent for t in r2.trials)
    assert "(chosen)" in r2.markdown()
