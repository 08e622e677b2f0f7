"""A loaded model brings its family's recommended settings to Python, exactly as the CLI and the app use them."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from semantic_pullbacks import DoublePullback, GradientShap, PullbackAscent, SoftPullback, load, recommended_settings
from semantic_pullbacks.cli import main
from semantic_pullbacks.engine import Temperatures
from semantic_pullbacks.examples import example_path

CAT = 285
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lite0():
    return load()


def test_soft_pullback_of_a_loaded_model_is_the_map_the_cli_draws(lite0, tmp_path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            ["explain", "example:chelsea", "--target", str(CAT), "--save-tensors", "pt", "--out", f"{tmp_path}"]
        )
    assert code == 0, out.getvalue()
    (saved,) = tmp_path.glob("chelsea_SoftPullback_285-*.pt")
    x = lite0.load_image(example_path("chelsea"))

    ours = SoftPullback(lite0).attribute(x, target=CAT)
    torch.testing.assert_close(ours[0], torch.load(saved), rtol=1e-5, atol=1e-7)
    # the recommended settings matter: the paper's temperatures give another map
    paper = SoftPullback(lite0.model).attribute(x, target=CAT)
    assert torch.nn.functional.cosine_similarity(ours.flatten(), paper.flatten(), dim=0) < 0.99
    assert lite0.explainer("SoftPullback").temperatures == SoftPullback(lite0).temperatures


def test_every_front_end_configures_methods_the_same_way(lite0):
    from semantic_pullbacks.app.logic import ExplainRequest, _make
    from semantic_pullbacks.cli import build_parser
    from semantic_pullbacks.cli._common import build_method, settings_from_args

    recommended = recommended_settings(lite0.name)
    assert recommended.temperatures != Temperatures()  # Lite0's own, not the paper's
    request = ExplainRequest(preset=recommended.temperatures, ascent_preset=recommended.ascent.temperatures)
    for name in ("SoftPullback", "PullbackAscent", "DoublePullback", "IntegratedPullbacks"):
        args = build_parser().parse_args(["explain", "example:chelsea", "--method", name])
        cli = build_method(name, lite0, settings_from_args(args))
        app = _make(name, lite0.model, recommended.temperatures, request, lite0)
        ours = type(cli)(lite0)
        for setting in ("temperatures", "steps", "alpha", "domain"):
            assert getattr(ours, setting, None) == getattr(cli, setting, None), (name, setting)
            if setting != "alpha":  # the app's slider has its own default for alpha
                assert getattr(ours, setting, None) == getattr(app, setting, None), (name, setting)
    # the stepping methods get the settings' ascent temperatures
    assert PullbackAscent(lite0).temperatures == recommended.ascent.temperatures
    assert DoublePullback(lite0).temperatures == recommended.ascent.temperatures != recommended.temperatures


def test_explicit_settings_win_over_the_recommended_ones(lite0, tmp_path):
    assert SoftPullback(lite0, {"relu": 0.5}).temperatures.relu == 0.5
    assert SoftPullback(lite0, temperatures=Temperatures()).temperatures == Temperatures()
    assert PullbackAscent(lite0, steps=2, clip="last").steps == 2
    assert GradientShap(lite0, n_samples=3).settings["domain"] == lite0.domain
    assert SoftPullback(lite0).model is lite0.model

    unit = load(domain=(0.0, 1.0))
    assert PullbackAscent(unit).domain == (0.0, 1.0)  # clipping follows the loaded model's input domain

    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"temperatures": {"relu": 0.25}, "ascent": {"steps": 2, "alpha": 5}}))
    assert lite0.explainer("SoftPullback", settings=path).temperatures.relu == 0.25
    ascent = lite0.explainer("PullbackAscent", settings=path, alpha=7.0)
    assert (ascent.steps, ascent.alpha, ascent.temperatures.relu) == (2, 7.0, 0.25)


def test_a_users_abstract_explainer_mixes_in_abc(lite0):
    """``class Mine(Explainer, abc.ABC)`` is an ordinary thing to write; it must define, stay abstract until its
    abstract methods exist, and take a loaded model like every explainer."""
    import abc

    from semantic_pullbacks.methods import Explainer, SoftPullback

    class Scaled(SoftPullback, abc.ABC):
        @abc.abstractmethod
        def factor(self) -> float: ...

        def attribute(self, inputs, target=None, **kwargs):
            return self.factor() * super().attribute(inputs, target=target, **kwargs)

    with pytest.raises(TypeError, match="abstract"):
        Scaled(lite0)

    class Doubled(Scaled):
        def factor(self) -> float:
            return 2.0

    x = lite0.load_image(example_path("chelsea"))
    torch.testing.assert_close(
        Doubled(lite0).attribute(x, target=285), 2 * SoftPullback(lite0).attribute(x, target=285)
    )
    assert issubclass(Doubled, Explainer)


def test_any_model_that_recommends_settings_is_taken_through_the_protocol():
    """Methods know no LoadedModel: whatever holds a module and answers ``method_settings`` brings its settings."""
    from semantic_pullbacks.methods.model_settings import ModelWithSettings

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    asked = []

    class Recommends:
        model = net

        def method_settings(self, method):
            asked.append(method)
            return {"temperatures": Temperatures(relu=0.25), **({"steps": 3} if method is PullbackAscent else {})}

    source = Recommends()
    assert isinstance(source, ModelWithSettings) and not isinstance(net, ModelWithSettings)
    sp = SoftPullback(source)
    assert (sp.model, sp.temperatures.relu, asked) == (net, 0.25, [SoftPullback])
    assert PullbackAscent(source).steps == 3
    ascent = PullbackAscent(source, steps=2)
    assert (ascent.steps, ascent.temperatures.relu) == (2, 0.25)  # the explicit setting wins
    x = torch.randn(2, 3, 2, 2)
    torch.testing.assert_close(sp.attribute(x, target=1), SoftPullback(net, {"relu": 0.25}).attribute(x, target=1))
