"""The web app's request logic, without a browser or Gradio: uploads, limits, settings, methods, timeouts."""

from __future__ import annotations

import argparse
import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image

from semantic_pullbacks.app import logic
from semantic_pullbacks.app.logic import ExplainRequest, Limits, ModelCache, RequestTimeoutError, explain, read_image
from semantic_pullbacks.engine import Temperatures
from semantic_pullbacks.errors import ImageLoadError, InvalidInputError
from semantic_pullbacks.examples import example_path
from semantic_pullbacks.methods import METHODS, PAIRS
from semantic_pullbacks.models import DEFAULT_MODEL, LoadedModel, wrap
from small_methods import small_net

SIZE = 16
CLASSES = ("cat", "dog", "teapot")


def _tiny() -> LoadedModel:
    """The suite's small CNN as a loaded model: every method runs in milliseconds, so the logic is what is tested."""
    net = small_net(classes=len(CLASSES))
    net.requires_grad_(False)
    return wrap(net, domain=(-1.0, 1.0), input_size=SIZE, class_names=CLASSES, name="tiny")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One PyTorch thread: on shared CI cores, more threads only contend (and these models are small)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return _tiny()


@pytest.fixture()
def x() -> torch.Tensor:
    return torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1


def _png(path, size=(40, 30), mode="RGB") -> None:
    Image.new(mode, size, 128).save(path, format="PNG")


# ---------------------------------------------------------------------------------------------- uploads


def test_read_image_gives_the_model_input(tiny, tmp_path):
    path = tmp_path / "photo.png"
    _png(path)
    x = read_image(path, tiny)
    assert x.shape == (3, SIZE, SIZE) and x.dtype == torch.float32
    assert -1.0 <= float(x.min()) <= float(x.max()) <= 1.0


@pytest.mark.parametrize(("fmt", "name"), [("PNG", "photo.jpg"), ("JPEG", "photo.txt"), ("WEBP", "photo")])
def test_read_image_trusts_content_not_the_file_name(tiny, tmp_path, fmt, name):
    """A real image behind a misleading name (or none) is decoded by its content. Reference: a uniform colour,
    which must arrive as that colour mapped to the model's domain [-1, 1] (lossy formats within a grey level)."""
    colour = (50, 120, 200)
    Image.new("RGB", (20, 20), colour).save(
        tmp_path / name, format=fmt, **({"lossless": True} if fmt == "WEBP" else {})
    )
    x = read_image(tmp_path / name, tiny)
    expected = (torch.tensor(colour, dtype=torch.float32) / 255 * 2 - 1)[:, None, None].expand(3, SIZE, SIZE)
    torch.testing.assert_close(x, expected, rtol=0, atol=0 if fmt != "JPEG" else 2 * 2 / 255)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is not an image at all", "not a supported image"),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 30, "corrupt or truncated"),  # a PNG signature, then nothing valid
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not a supported image"),  # EPS runs Ghostscript
        (b"", "not a supported image"),
    ],
    ids=["text", "fake-png", "eps", "empty"],
)
def test_read_image_rejects_what_is_not_a_supported_image(tiny, tmp_path, content, message):
    path = tmp_path / "upload.png"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match=message) as info:
        read_image(path, tiny)
    assert str(tmp_path) not in str(info.value)  # server paths are none of the visitor's business


def test_read_image_rejects_a_truncated_file_with_a_clear_message(tiny, tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match="corrupt or truncated") as info:
        read_image(path, tiny)
    assert str(tmp_path) not in str(info.value)


def test_read_image_refuses_too_many_pixels_before_decoding(tiny, tmp_path):
    path = tmp_path / "big.png"
    _png(path, size=(100, 100))
    with pytest.raises(ImageLoadError, match="10,000 pixels"):
        read_image(path, tiny, Limits(max_pixels=5_000))


def test_read_image_of_a_missing_upload(tiny, tmp_path):
    with pytest.raises(ImageLoadError, match="missing"):
        read_image(tmp_path / "gone.png", tiny)


@pytest.mark.parametrize(
    "kwargs", [{"max_pixels": 0}, {"timeout_s": 0}, {"timeout_s": float("nan")}, {"max_methods": 0}]
)
def test_limits_reject_nonsense(kwargs):
    with pytest.raises(InvalidInputError):
        Limits(**kwargs)


# ---------------------------------------------------------------------------------------------- settings


def test_controls_at_paper_defaults_are_the_paper_temperatures():
    assert logic.temperatures_from_controls(logic.paper_temperatures()) == Temperatures()


def test_controls_switch_families_and_zero_means_hard():
    controls = {**logic.paper_temperatures(), "relu": 0.0, "norm": False}
    temperatures = logic.temperatures_from_controls(controls)
    assert temperatures.relu == 0.0
    assert temperatures.norm is None
    assert temperatures.gate is not None


def test_controls_reject_negative_temperatures():
    with pytest.raises(InvalidInputError, match="relu"):
        logic.temperatures_from_controls({"relu": -0.1})


def test_method_picker_lists_every_method_pullbacks_first():
    choices = logic.method_choices()
    assert sorted(choices) == sorted(METHODS)
    assert choices[: len(PAIRS)] == list(PAIRS)
    assert choices[0] == "SoftPullback"


def test_class_choices_disambiguate_repeated_names(tiny):
    assert logic.class_choices(tiny) == [("cat (0)", 0), ("dog (1)", 1), ("teapot (2)", 2)]


# ---------------------------------------------------------------------------------------------- explaining


def test_explain_soft_pullback_defaults_to_top1_and_returns_display_panels(tiny, x):
    result = explain(tiny, x, ExplainRequest())
    top1 = logic.classify(tiny, x, 1)[0]
    assert (result.target, result.target_name) == (top1.index, top1.name)
    assert [p.method for p in result.panels] == ["SoftPullback"]
    panel = result.panels[0]
    for picture in (result.image, panel.signed, panel.overlay, panel.counterfactual):
        assert picture.shape == (SIZE, SIZE, 3) and picture.dtype == np.uint8
    assert 0.0 <= panel.prob_before <= 1.0 and 0.0 <= panel.prob_after <= 1.0
    assert len(result.top) == len(CLASSES)


def test_one_step_along_a_pullback_raises_the_target_probability(tiny, x):
    panel = explain(tiny, x, ExplainRequest(target="teapot", alpha=2.0)).panels[0]
    assert panel.prob_after > panel.prob_before


def test_pullback_ascent_shows_its_own_counterfactual(tiny, x):
    request = ExplainRequest(target=1, methods=["PullbackAscent"], steps=3, alpha=2.0)
    panel = explain(tiny, x, request).panels[0]
    assert "K=3" in panel.counterfactual_note
    assert panel.prob_after > panel.prob_before


def test_several_methods_one_panel_each_in_order_with_progress(tiny, x):
    calls: list[tuple[float, str]] = []
    methods = ["soft-pullback", "Gradient", "GradientAscent", "IntegratedPullbacks", "SmoothGrad", "SoftPullback"]
    request = ExplainRequest(target=0, methods=methods)
    result = explain(tiny, x, request, progress=lambda f, text: calls.append((f, text)))
    names = ["SoftPullback", "Gradient", "GradientAscent", "IntegratedPullbacks", "SmoothGrad"]
    assert [p.method for p in result.panels] == names  # names normalised, duplicates dropped
    assert [f for f, _ in calls] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert "SoftPullback (1/5)" in calls[0][1]


@pytest.mark.filterwarnings("ignore::UserWarning")  # Captum announces its hooks
def test_every_method_in_the_picker_runs(tiny, x):
    for name in logic.method_choices():
        request = ExplainRequest(target=2, methods=[name], steps=2)
        (panel,) = explain(tiny, x, request, limits=Limits(max_methods=1)).panels
        assert panel.method == name


def test_soft_and_hard_temperatures_give_different_maps(tiny, x):
    soft = explain(tiny, x, ExplainRequest(target=0)).panels[0].signed
    hard_controls = {**logic.paper_temperatures(), "relu": 0.0, "maxpool": 0.0}
    hard = explain(tiny, x, ExplainRequest(target=0, temperatures=hard_controls)).panels[0].signed
    assert not np.array_equal(soft, hard)


@pytest.mark.parametrize(
    ("request_kwargs", "message"),
    [
        ({"methods": []}, "at least one method"),
        ({"methods": ["NoSuchMethod"]}, "unknown method"),
        ({"methods": ["SoftPullback", "Gradient", "SmoothGrad"]}, "at most 2"),
        ({"steps": 0}, "K"),
        ({"steps": 2.5}, "K"),
        ({"alpha": 0.0}, "α"),
        ({"alpha": float("inf")}, "α"),
        ({"target": "no such class"}, "class"),
    ],
)
def test_bad_requests_say_what_is_wrong(tiny, x, request_kwargs, message):
    with pytest.raises((InvalidInputError, KeyError), match=message):
        explain(tiny, x, ExplainRequest(**request_kwargs), limits=Limits(max_methods=2))


def test_explain_rejects_an_input_of_the_wrong_shape(tiny):
    with pytest.raises(InvalidInputError, match="shape"):
        explain(tiny, torch.zeros(3, SIZE + 1, SIZE), ExplainRequest())


def test_a_request_past_its_time_limit_stops_and_leaves_the_model_usable(tiny, x):
    reference = tiny.model(x[None]).clone()
    with pytest.raises(RequestTimeoutError, match="longer than"):
        explain(tiny, x, ExplainRequest(methods=["SmoothGrad"]), limits=Limits(timeout_s=1e-9))
    assert torch.equal(tiny.model(x[None]), reference)
    assert explain(tiny, x, ExplainRequest()).panels  # the next request runs normally


def test_result_figure_shows_each_methods_pictures_in_its_own_row(tiny, x):
    """Row r holds method r's input, signed map, overlay and counterfactual, exactly the arrays of the result, under
    titles naming the method; a counterfactual that lowers p(target) is titled as such, in red."""
    from semantic_pullbacks.visualize import figure_to_array

    result = explain(tiny, x, ExplainRequest(target=0, methods=["SoftPullback", "Gradient"]))
    raised, lowered = (
        dataclasses.replace(result.panels[0], prob_before=0.19, prob_after=0.98),
        dataclasses.replace(result.panels[1], prob_before=0.61, prob_after=0.49),
    )
    result = dataclasses.replace(result, panels=(raised, lowered))
    fig = logic.result_figure(result)
    rows = [fig.axes[4 * r : 4 * r + 4] for r in range(2)]
    assert len(fig.axes) == 8
    for row, panel in zip(rows, result.panels):
        for ax, picture in zip(row, (result.image, panel.signed, panel.overlay, panel.counterfactual)):
            np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), picture)
        assert [ax.get_title() for ax in row[:3]] == [
            "input",
            f"{panel.method} · signed map",
            f"{panel.method} · overlay",
        ]
    assert (rows[0][3].get_title(), rows[0][3].title.get_color()) == ("counterfactual · p 0.19 → 0.98", "black")
    assert (rows[1][3].get_title(), rows[1][3].title.get_color()) == (
        "p 0.61 → 0.49: lowered, not a counterfactual",
        "#b03a2e",
    )
    assert figure_to_array(fig).shape == (round((2.6 * 2 + 0.5) * 100), 1040, 3)


def test_the_embedded_model_explains_a_bundled_example():
    loaded = ModelCache().get(DEFAULT_MODEL)
    x = read_image(example_path("chelsea"), loaded)
    result = explain(loaded, x, ExplainRequest())
    assert result.target_name == "Egyptian cat"
    assert result.panels[0].signed.shape == (224, 224, 3)


# ---------------------------------------------------------------------------------------------- models


def test_model_cache_loads_once_and_drops_the_least_recently_used():
    loads: list[str] = []

    def loader(name: str) -> LoadedModel:
        loads.append(name)
        return _tiny()

    cache = ModelCache(max_models=2, loader=loader)
    a = cache.get("a")
    assert cache.get("a") is a
    cache.get("b")
    cache.get("a")
    cache.get("c")  # evicts b, the least recently used
    assert "a" in cache and "c" in cache and "b" not in cache
    assert loads == ["a", "b", "c"]


def test_discovery_lists_only_models_with_local_weights(monkeypatch, tmp_path):
    hub = tmp_path / "torch"
    hf = tmp_path / "hf"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setattr(logic, "_hf_cache", lambda: hf)
    assert logic.discover_models() == [DEFAULT_MODEL]

    tvm = pytest.importorskip("torchvision.models")
    (hub / "checkpoints").mkdir(parents=True)
    url = tvm.get_model_weights("resnet18").DEFAULT.url
    (hub / "checkpoints" / url.rsplit("/", 1)[-1]).write_bytes(b"")
    snapshot = hf / "models--timm--not_a_timm_model.x" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(b"")
    models = logic.discover_models()
    assert models[0] == DEFAULT_MODEL
    assert "torchvision:resnet18" in models
    assert not any(m.startswith("timm:") for m in models)  # unknown architectures are not offered


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_app_options():
    from semantic_pullbacks.cli import app as app_cli

    parser = argparse.ArgumentParser()
    app_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["app"])
    assert (args.host, args.port, args.model, args.models) == ("127.0.0.1", 7860, None, None)
    assert args.func is app_cli.run
    args = parser.parse_args(["app", "--host", "0.0.0.0", "--port", "8000", "--model", "timm:x", "--models"])
    assert (args.host, args.port, args.model, args.models) == ("0.0.0.0", 8000, "timm:x", [])


def test_relative_sliders_and_presets():
    from semantic_pullbacks import Relative
    from semantic_pullbacks.app import ui
    from semantic_pullbacks.calibration import Settings, recommended_settings

    controls = {**logic.paper_temperatures(), "relu": 2.0, "maxpool": 0.0}
    temps = logic.temperatures_from_controls(controls, relative=True)
    assert temps.relu == Relative(2.0) and temps.maxpool == 0.0  # 0 stays the hard gate
    assert temps.attention == logic.paper_temperatures()["attention"]  # attention takes absolute values only
    config = ui.AppConfig(settings=Settings(Temperatures(relu=0.1)))
    assert ui.preset_settings(ui.PRESET_FILE, "efficientnet_lite0", config).temperatures.relu == 0.1
    assert ui.preset_settings(ui.PRESET_PAPER, "efficientnet_lite0", config).temperatures == Temperatures()
    recommended = ui.preset_settings(ui.PRESET_RECOMMENDED, "efficientnet_lite0", config).temperatures
    assert recommended == recommended_settings("efficientnet_lite0").temperatures != Temperatures()
    assert ui.preset_settings(ui.PRESET_CUSTOM, "efficientnet_lite0", config) is None


def test_preset_overrides_the_sliders(tiny, x):
    hard = Temperatures.hard()
    hard_controls = {**logic.paper_temperatures(), "relu": 0.0, "maxpool": 0.0, "gelu": 0.0}
    by_preset = explain(tiny, x, ExplainRequest(target=0, preset=hard)).panels[0].signed
    by_sliders = explain(tiny, x, ExplainRequest(target=0, temperatures=hard_controls)).panels[0].signed
    np.testing.assert_array_equal(by_preset, by_sliders)


def test_stepping_methods_use_the_presets_ascent_temperatures(tiny, x):
    from semantic_pullbacks.app import ui

    rec = ui.preset_settings(ui.PRESET_RECOMMENDED, "efficientnet_lite0", ui.AppConfig())
    assert rec is not None and rec.ascent.temperatures is not None
    request = dict(target=0, methods=["PullbackAscent"], steps=2, alpha=2.0, preset=Temperatures.hard())
    hard = explain(tiny, x, ExplainRequest(**request)).panels[0].signed
    own = explain(tiny, x, ExplainRequest(**request, ascent_preset=Temperatures())).panels[0].signed
    paper = explain(tiny, x, ExplainRequest(**{**request, "preset": Temperatures()})).panels[0].signed
    assert not np.array_equal(hard, own)
    np.testing.assert_array_equal(own, paper)


def test_an_ascent_that_lowers_the_probability_is_not_shown_as_a_counterfactual():
    """The clock photo pushed towards its top-1 "bubble" at the paper's temperatures: the bubble logit rises, but
    others rise faster and p(bubble) falls; the figure must say so rather than title it a counterfactual."""
    loaded = ModelCache().get(DEFAULT_MODEL)
    x = read_image(example_path("clock"), loaded)
    result = explain(loaded, x, ExplainRequest(target="bubble", methods=["PullbackAscent"], preset=Temperatures()))
    panel = result.panels[0]
    assert panel.prob_before == pytest.approx(0.44, abs=0.01) and panel.prob_after < 0.05
    assert not panel.raises_target
    assert panel.probability_note == f"p 0.44 → {panel.prob_after:.2f}: lowered, not a counterfactual"
    assert logic.result_figure(result).axes[3].get_title() == panel.probability_note  # no "counterfactual ·"
