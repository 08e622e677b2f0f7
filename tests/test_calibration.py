"""Calibration and settings files: deterministic, within budget, strict about bad files."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from semantic_pullbacks import InvalidInputError, Relative, Temperatures
from semantic_pullbacks.calibration import (
    DEFAULT_CRITERIA,
    Criterion,
    Settings,
    active_families,
    calibrate,
    grid,
    judge,
    load_settings,
    recommended_settings,
    save_settings,
)
from semantic_pullbacks.cli import main


def small_net() -> nn.Module:
    # not small_methods.small_net: ReLU and max pooling only, the two families the candidates below search
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()  # fmt: skip


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(1)
    return torch.rand(6, 3, 16, 16) * 2 - 1, torch.arange(6) % 4


CANDS = {"relu": (0.6, Relative(3.0)), "maxpool": (0.3, Relative(1.0))}
#: cheap metric settings for the tests (the search and the report take the same keys)
FAST = {"max_sensitivity": {"nr_samples": 2}, "monotonicity_correlation": {"nr_samples": 1}}


@pytest.fixture(scope="module")
def result(data):
    x, y = data
    return calibrate(small_net(), x, y, candidates=CANDS, folds=3, metric_settings=FAST,
                     report_metric_settings=FAST, seed=3)  # fmt: skip


def test_active_families_follow_the_model(data):
    assert active_families(small_net(), data[0]) == ["relu", "maxpool"]


def test_grid_tries_every_combination():
    configs = grid({"relu": (0.6, Relative(1.0)), "maxpool": (0.3, None)})
    expected = [(0.6, 0.3), (0.6, None), (Relative(1.0), 0.3), (Relative(1.0), None)]
    assert [(c.relu, c.maxpool) for c in configs] == expected


def test_each_fold_is_chosen_without_its_held_out_images(result):
    assert len(result.candidates) == 4 and all(c.verdict is not None for c in result.candidates)
    tests = [f.test for f in result.folds]
    assert sorted(i for t in tests for i in t) == list(range(6))  # the folds partition the images
    table = result.table
    for fold in result.folds:
        assert set(fold.train).isdisjoint(fold.test) and len(fold.train) + len(fold.test) == 6
        # the choice is the best configuration judged on the training images alone
        grad = table.scores(None, fold.train)
        ranks = [judge(DEFAULT_CRITERIA, table.scores(c.temperatures, fold.train), grad, table.higher_is_better).rank()
                 for c in result.candidates]  # fmt: skip
        assert fold.train_verdict.rank() == min(ranks)
        assert any(c.temperatures == fold.chosen for c in result.candidates)
        # its held-out verdict is measured with the report's metrics on the held-out images
        report = result.report_table
        expected = judge(DEFAULT_CRITERIA, report.scores(fold.chosen, fold.test), report.scores(None, fold.test),
                         report.higher_is_better)  # fmt: skip
        assert fold.test_verdict == expected
    text = result.markdown()
    assert "Held-out folds" in text and "paper defaults" in text and "(chosen)" in text
    assert result.settings.evidence["held_out_pooled"].keys() == {c.metric for c in DEFAULT_CRITERIA}


def test_calibration_is_deterministic(result, data):
    x, y = data
    few = [c.temperatures for c in result.candidates[:2]]
    again = calibrate(small_net(), x, y, candidates=few, folds=3, metric_settings=FAST,
                      report_metric_settings=FAST, seed=3)  # fmt: skip
    assert [c.verdict for c in again.candidates] == [c.verdict for c in result.candidates[:2]]
    assert [f.test for f in again.folds] == [f.test for f in result.folds]


def test_a_scored_image_does_not_depend_on_the_others_asked_for(result):
    table, temps = result.table, result.candidates[1].temperatures
    together = table.scores(temps, [0, 1, 2])
    fresh = type(table)(table.model, table.inputs, table.targets, table.metrics, seed=table.seed)
    alone = fresh.per_image(temps, [1])
    for name, scores in alone.items():
        assert scores[0].item() == pytest.approx(together[name][1].item(), nan_ok=True), name


def test_calibration_respects_its_budget_and_refuses_bad_arguments(data):
    x, y = data
    t0 = time.monotonic()
    r = calibrate(small_net(), x, y, candidates=CANDS, budget_s=0.01, metric_settings=FAST, report_metric_settings=FAST)
    assert r.budget_exhausted
    assert sum(c.verdict is not None for c in r.candidates) == 1  # only the first fits in the budget
    assert "time budget reached" in r.markdown()
    assert time.monotonic() - t0 < 120
    with pytest.raises(InvalidInputError, match="budget"):
        calibrate(small_net(), x, budget_s=0)
    with pytest.raises(InvalidInputError, match="at least 3 images"):
        calibrate(small_net(), x[:2], folds=3)
    with pytest.raises(InvalidInputError, match="folds"):
        calibrate(small_net(), x, folds=1)
    with pytest.raises(InvalidInputError, match="no candidate temperatures"):
        calibrate(small_net(), x, families=["gate"])
    for targets in (y[:-1], y.float(), [10**6] * len(y)):  # short, not indices, out of range: named up front
        with pytest.raises(InvalidInputError, match="targets"):
            calibrate(small_net(), x, targets, candidates=CANDS, metric_settings=FAST, report_metric_settings=FAST)


def test_a_criterion_takes_the_true_median_and_ignores_ratios_to_zero():
    """An even count takes the mean of the two middle values (torch.median's lower one leans towards passing)."""
    ratio = Criterion("infidelity", "ratio", 0.3)
    grad = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])
    sp = torch.tensor([0.1, 0.25, 0.45, 0.6, 0.0])
    assert ratio.value(sp, grad, higher_is_better=False) == pytest.approx(0.35)
    shortfall = Criterion("monotonicity_correlation", "shortfall", 0.0)
    assert shortfall.value(torch.tensor([0.0, 0.0]), torch.tensor([0.1, 0.3]), higher_is_better=True) == pytest.approx(
        0.2
    )


def test_objective_judges_each_metric_against_the_gradient():
    criteria = (
        Criterion("infidelity", "ratio", 0.3),
        Criterion("faithfulness_correlation", "shortfall", 0.02),
        Criterion("random_logit", "shortfall", 0.05),
        Criterion("top_layer_randomisation", "absolute", 0.5),
    )
    nan = float("nan")
    sp = {
        "infidelity": torch.tensor([1.0, 2.0, 3.0, nan]),
        "faithfulness_correlation": torch.tensor([0.5, 0.2, 0.1, 0.3]),
        "random_logit": torch.tensor([0.1, 0.0, 0.2, 0.3]),
        "top_layer_randomisation": torch.tensor([0.2, 0.4, 0.3, 0.6]),
    }
    grad = {
        "infidelity": torch.tensor([10.0, 4.0, 12.0, 1.0]),
        "faithfulness_correlation": torch.tensor([0.4, 0.3, 0.1, 0.2]),
        "random_logit": torch.tensor([0.0, 0.0, 0.0, 0.0]),
    }
    higher = {"infidelity": False, "faithfulness_correlation": True, "random_logit": False,
              "top_layer_randomisation": False}  # fmt: skip
    v = judge(criteria, sp, grad, higher)
    # ratios 0.1, 0.5, 0.25 (the NaN image left out): median 0.25; shortfalls g - s = -0.1, 0.1, 0, -0.1: median
    # -0.05 (the mean of the two middle values of an even count); random logit s - g: 0.1, 0, 0.2, 0.3 -> 0.15;
    # absolute: 0.2, 0.4, 0.3, 0.6 -> 0.35
    assert v.values == pytest.approx(
        {"infidelity": 0.25, "faithfulness_correlation": -0.05, "random_logit": 0.15, "top_layer_randomisation": 0.35}
    )
    assert not v.feasible and v.violation == pytest.approx((0.15 - 0.05) / 0.1)
    assert v.loss == pytest.approx(math.log(0.25) - 0.05 + 0.15 + 0.35)
    relaxed = judge((*criteria[:2], Criterion("random_logit", "shortfall", 0.2), criteria[3]), sp, grad, higher)
    assert relaxed.feasible and relaxed.rank() < v.rank()
    with pytest.raises(InvalidInputError, match="bound"):
        Criterion("infidelity", "ratio", 0.0)
    with pytest.raises(InvalidInputError, match="compare"):
        Criterion("infidelity", "quotient", 1.0)  # type: ignore[arg-type]


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
    assert len(lite.evidence["folds"]) == 3 and "held_out_pooled" in lite.evidence
    assert all(v.split(":")[0] in ("met", "unmet") for v in lite.evidence["issue_14_targets_held_out"].values())
    # the shipped temperatures are the ones the recorded calibration run chose, not edited by hand
    run = json.loads((Path(__file__).parents[1] / "benchmarks/quality/results/settings.json").read_text())
    assert lite.temperatures == Temperatures.coerce(run["temperatures"])
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


def test_recommended_ascent_raises_the_probability_on_every_bundled_photo():
    """Counterfactuals that work: on every bundled photo, pushing towards the top-1 class, the second one and a
    seeded random class raises that class's *probability* (not only its logit), clipped as the CLI shows it."""
    from semantic_pullbacks.calibration.settings import temperatures_for
    from semantic_pullbacks.examples import example_path, list_examples
    from semantic_pullbacks.methods import PullbackAscent
    from semantic_pullbacks.models import load

    model = load("efficientnet_lite0")
    rec = recommended_settings(model.name)
    x = torch.cat([model.load_image(example_path(e.name)) for e in list_examples()])
    with torch.no_grad():
        before = model.model(x).softmax(1)
    random = torch.randint(1000, (x.shape[0],), generator=torch.Generator().manual_seed(0))
    temps = temperatures_for("PullbackAscent", rec.temperatures, rec.ascent.temperatures)
    ascent = PullbackAscent(model.model, temps, steps=rec.ascent.steps, alpha=rec.ascent.alpha, clip="last")
    for name, target in (("top-1", before.argmax(1)), ("top-2", before.topk(2).indices[:, 1]), ("random", random)):
        counterfactual = ascent.run(x, target).counterfactual
        with torch.no_grad():
            after = model.model(counterfactual).softmax(1)
        p0, p1 = before.gather(1, target[:, None]), after.gather(1, target[:, None])
        assert (p1 > p0).all(), (name, torch.cat([p0, p1], 1))


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


def test_calibration_carries_the_starting_ascent_settings(data):
    from semantic_pullbacks.calibration import AscentSettings

    x, y = data
    start = Settings(Temperatures(), AscentSettings(3, 10.0, Temperatures(relu=0.4)), model="net")
    r = calibrate(small_net(), x, y, candidates=[Temperatures(relu=Relative(3.0))], start=start, metric_settings=FAST,
                  report_metric_settings=FAST)  # fmt: skip
    assert r.settings.temperatures.relu == Relative(3.0)
    assert r.settings.ascent == start.ascent and r.settings.model == "net"
