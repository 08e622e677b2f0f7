"""The Gradio page: layout and event wiring only; every decision about a request is in :mod:`.logic`.

Offline by construction: analytics and Hugging Face telemetry are switched off before Gradio is imported, the
theme uses the fonts Gradio ships (no Google Fonts), server-side rendering, PWA and MCP are off, and the browser
test checks that the page makes no request to any other host.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr

from semantic_pullbacks.calibration import Settings, recommended_settings
from semantic_pullbacks.errors import ImageLoadError, SemanticPullbacksError
from semantic_pullbacks.examples import list_examples
from semantic_pullbacks.models import DEFAULT_MODEL, LoadedModel
from semantic_pullbacks.visualize import save_figure

from . import logic, neuron
from .text_tab import with_text_tab

__all__ = ["AppConfig", "build_app", "launch"]

log = logging.getLogger(__name__)

#: Methods that take several seconds to a minute on a CPU: the user is told before they start.
SLOW_METHODS = frozenset(
    {"SmoothPullback", "SmoothGrad", "FusionPullback", "FusionGrad", "IntegratedPullbacks", "IntegratedGradients"}
    | {"PullbackShap", "GradientShap", "GuidedPullbackCam", "GuidedGradCam"}
)
_FAMILY_LABELS = {
    "relu": "τ ReLU",
    "gelu": "τ GELU",
    "silu": "τ SiLU / Swish",
    "maxpool": "τ max-pool",
    "attention": "τ attention",
    "gate": "freeze sigmoid gates (squeeze-excitation)",
    "norm": "freeze normalisation statistics",
}
_CSS = """
#title h1 { margin-bottom: 0.2rem; }
footer { display: none !important; }
"""


@dataclass(frozen=True)
class AppConfig:
    """How the app is served: which models may be chosen, limits per request, queue size, upload size."""

    model: str = DEFAULT_MODEL
    models: Sequence[str] = ()
    limits: logic.Limits = field(default_factory=logic.Limits)
    max_file_size: str = "10mb"
    queue_size: int = 16
    figure_dir: Path | None = None
    #: a settings file's contents (``--settings``), offered as a temperature preset and used by default
    settings: Settings | None = None


PRESET_RECOMMENDED = "Recommended for the model"
PRESET_FILE = "Settings file"
PRESET_PAPER = "Paper defaults"
PRESET_CUSTOM = "Custom (sliders below)"


def preset_settings(preset: str, model_name: str, config: AppConfig) -> Settings | None:
    """The settings a preset stands for; ``None`` for the custom sliders."""
    if preset == PRESET_FILE and config.settings is not None:
        return config.settings
    if preset == PRESET_PAPER:
        return Settings()
    if preset == PRESET_RECOMMENDED:
        return recommended_settings(model_name)
    return None


def _pass_path_through(image: gr.Image) -> gr.Image:
    """Make ``image`` hand the handler the uploaded file's path without opening it.

    Plain ``gr.Image`` decodes uploads with PIL before our code runs, so a corrupt or hostile file would fail with
    Gradio's generic error (or be decoded without our pixel limit and format list); :func:`logic.read_image` does
    that checking instead. Gradio has already confirmed the path lies in its upload folder. (An instance override,
    not a subclass: Gradio writes a ``.pyi`` stub next to the module of every component subclass.)
    """

    def preprocess(payload: Any) -> str | None:
        if payload is None:
            return None
        if getattr(payload, "path", None) is None:
            raise gr.Error("The image did not arrive as an upload; please upload the file again.")
        return str(payload.path)

    image.preprocess = preprocess  # type: ignore[method-assign]
    return image


class _Figures:
    """A small ring of PNG files for the download button (Gradio copies each into its own cache when shown)."""

    def __init__(self, folder: Path | None, slots: int = 8) -> None:
        if folder is None:
            folder = Path(tempfile.mkdtemp(prefix="semantic-pullbacks-app-"))
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
        self.folder = folder
        self._slots = itertools.cycle(range(slots))

    def save(self, result: logic.ExplainResult) -> str:
        return self.save_figure(logic.result_figure(result), result.target_name)

    def save_figure(self, figure: Any, title: str) -> str:
        name = "".join(c if c.isalnum() else "_" for c in title.lower()).strip("_") or "target"
        slot = self.folder / str(next(self._slots))
        if slot.exists():
            shutil.rmtree(slot)
        return str(save_figure(figure, slot / f"semantic_pullbacks_{name}.png"))


def _user_error(error: Exception) -> gr.Error:
    """Our errors carry messages written for people; anything else is logged and shown without internals."""
    if isinstance(error, SemanticPullbacksError):
        return gr.Error(str(error), title="Cannot explain this")
    log.exception("unexpected error in the app")
    return gr.Error(f"Something went wrong ({type(error).__name__}); the app is still running, please try again.")


class _Handlers:
    """What the page's events do: each turns the widgets' values into a :mod:`.logic` request and its answer back
    into widget updates; errors become messages for people."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.cache = logic.ModelCache()
        self.figures = _Figures(config.figure_dir)
        self.default_model = self.cache.get(config.model)  # fail at start, not on the first visitor, if it cannot load

    def load_model(self, name: str) -> LoadedModel:
        try:
            return self.cache.get(name)
        except Exception as error:
            raise _user_error(error) from error

    def on_image(self, path: str | None, model_name: str) -> tuple[Any, Any, Any]:
        if not path:
            return None, gr.update(), None
        loaded = self.load_model(model_name)
        try:
            x = logic.read_image(path, loaded, self.config.limits)
        except ImageLoadError as error:  # a warning, not an error: the stale results must still be cleared
            gr.Warning(str(error), title="Cannot use this file")
            return None, gr.update(value=None), None
        top = logic.classify(loaded, x, 5)
        return {p.name: p.prob for p in top}, gr.update(value=top[0].index), None

    def on_model(self, model_name: str, path: str | None) -> tuple[Any, Any, Any]:
        loaded = self.load_model(model_name)
        choices = logic.class_choices(loaded)
        if not path:
            return None, gr.update(choices=choices, value=None), None
        try:
            top = logic.classify(loaded, logic.read_image(path, loaded, self.config.limits), 5)
        except Exception as error:
            raise _user_error(error) from error
        return {p.name: p.prob for p in top}, gr.update(choices=choices, value=top[0].index), None

    def on_explain(
        self,
        path: str | None,
        model_name: str,
        target: int | None,
        methods: list[str],
        steps: float,
        alpha: float,
        preset: str,
        relative: bool,
        *temperatures: Any,
        progress: gr.Progress = gr.Progress(),  # noqa: B008  (Gradio detects progress by this default)
    ) -> tuple[Any, Any, Any]:
        if not path:
            raise gr.Error("Upload an image or pick one of the examples first.")
        slow = sorted(SLOW_METHODS & set(methods or ()))
        if slow:
            gr.Info(f"{', '.join(slow)} run the model many times: expect several seconds to a minute on a CPU.")
        request = self._request(model_name, target, methods, steps, alpha, preset, relative, temperatures)
        loaded = self.load_model(model_name)
        try:
            x = logic.read_image(path, loaded, self.config.limits)
            result = logic.explain(
                loaded, x, request, limits=self.config.limits, progress=lambda f, text: progress(f, desc=text)
            )
            png = self.figures.save(result)
        except Exception as error:
            raise _user_error(error) from error
        return png, gr.update(value=png, interactive=True), _summary(result)

    def on_neuron(self, path: str | None, model_name: str, layer: str | None, channel: float | None) -> tuple[Any, Any]:
        """Neuron mode: the channel's activation on the photo, its soft pullback and its accentuation."""
        if not path:
            raise gr.Error("Upload an image or pick one of the examples first.")
        loaded = self.load_model(model_name)
        try:
            x = logic.read_image(path, loaded, self.config.limits)
            result = neuron.explain_neuron(loaded, x, layer or "", channel)
            png = self.figures.save_figure(neuron.neuron_figure(result), f"{result.layer}_{result.channel}")
        except Exception as error:
            raise _user_error(error) from error
        return png, result.summary()

    def on_neuron_model(self, model_name: str) -> Any:
        layers = neuron.neuron_layers(self.load_model(model_name))
        return gr.update(choices=layers, value=layers[len(layers) // 2] if layers else None)

    def _request(
        self,
        model_name: str,
        target: int | None,
        methods: list[str],
        steps: float,
        alpha: float,
        preset: str,
        relative: bool,
        temperatures: Sequence[Any],
    ) -> logic.ExplainRequest:
        families = (*logic.SLIDER_FAMILIES, *logic.FREEZE_FAMILIES)
        chosen = preset_settings(preset, model_name, self.config)
        return logic.ExplainRequest(
            target=None if target is None else int(target),
            methods=tuple(methods or ()),
            temperatures=dict(zip(families, temperatures)),
            steps=int(steps),
            alpha=float(alpha),
            relative=bool(relative),
            preset=chosen.temperatures if chosen is not None else None,
            ascent_preset=chosen.ascent.temperatures if chosen is not None else None,
        )


def _summary(result: logic.ExplainResult) -> str:
    """The target, the model and each method's time; an image that lowers p(target) is flagged, so it cannot pass
    for a counterfactual."""
    timing = ", ".join(f"{p.method} {p.seconds:.1f} s" for p in result.panels)
    summary = f"**{result.target_name}** ({result.target}) explained on `{result.model}` — {timing}"
    for p in result.panels:
        if not p.raises_target:
            summary += f"\n\n⚠ {p.method}: {p.probability_note} for {result.target_name}."
    return summary


@dataclass(frozen=True)
class _Inputs:
    image: gr.Image
    model: gr.Dropdown
    target: gr.Dropdown
    methods: gr.Dropdown
    run: gr.Button


@dataclass(frozen=True)
class _SettingsPanel:
    steps: gr.Slider
    alpha: gr.Slider
    preset: gr.Radio
    relative: gr.Checkbox
    sliders: list[gr.Slider]
    switches: list[gr.Checkbox]
    reset: gr.Button

    def components(self) -> list[Any]:
        """In the order :meth:`_Handlers.on_explain` takes them after the method list, and ``reset`` sets them."""
        return [self.steps, self.alpha, self.preset, self.relative, *self.sliders, *self.switches]


@dataclass(frozen=True)
class _Results:
    top5: gr.Label
    figure: gr.Image
    summary: gr.Markdown
    download: gr.DownloadButton


def _input_panel(config: AppConfig, default_model: LoadedModel) -> _Inputs:
    """The image (upload or bundled example), the model, the target class, the methods and the Explain button."""
    image = _pass_path_through(
        gr.Image(
            label="Image (JPEG, PNG, WebP, GIF, BMP, TIFF)",
            type="filepath",
            sources=["upload", "clipboard"],
            height=300,
            elem_id="image",
        )
    )
    examples = list_examples()
    gr.Examples(
        examples=[[str(e.path)] for e in examples],
        inputs=[image],
        example_labels=[e.title for e in examples],
        label="Bundled examples",
        examples_per_page=len(examples),
    )
    model_names = list(dict.fromkeys([config.model, *config.models]))
    model = gr.Dropdown(choices=model_names, value=config.model, label="Model", elem_id="model", filterable=True)
    target = gr.Dropdown(
        choices=logic.class_choices(default_model),
        value=None,
        label="Target class (type to search; defaults to the top-1 class)",
        filterable=True,
        elem_id="target",
    )
    methods = gr.Dropdown(
        choices=logic.method_choices(),
        value=list(logic.DEFAULT_METHODS),
        multiselect=True,
        max_choices=config.limits.max_methods,
        label="Methods (pullbacks first, then their gradient baselines)",
        elem_id="methods",
    )
    run = gr.Button("Explain", variant="primary", elem_id="explain")
    return _Inputs(image, model, target, methods, run)


def _settings_panel(config: AppConfig, start: Settings, defaults: dict[str, Any]) -> _SettingsPanel:
    """Ascent steps and size, the temperature preset, and the custom temperature sliders (folded away)."""
    with gr.Accordion("Ascent and temperatures", open=False):
        steps = gr.Slider(1, 20, value=start.ascent.steps, step=1, label="K (ascent steps)")
        alpha = gr.Slider(1, 60, value=start.ascent.alpha or 20, step=1, label="α (step size, L2 norm per step)")
        presets = [PRESET_RECOMMENDED, PRESET_PAPER, PRESET_CUSTOM]
        if config.settings is not None:
            presets.insert(0, PRESET_FILE)
        preset = gr.Radio(presets, value=presets[0], label="Temperatures", elem_id="preset")
        relative = gr.Checkbox(
            value=False, label="Custom sliders are multiples of each layer's std (scale-aware; attention absolute)"
        )
        sliders = [
            gr.Slider(0.0, 3.0, value=defaults[f], step=0.05, label=_FAMILY_LABELS[f]) for f in logic.SLIDER_FAMILIES
        ]
        switches = [gr.Checkbox(value=bool(defaults[f]), label=_FAMILY_LABELS[f]) for f in logic.FREEZE_FAMILIES]
        reset = gr.Button("Paper defaults", size="sm")
    return _SettingsPanel(steps, alpha, preset, relative, sliders, switches, reset)


@dataclass(frozen=True)
class _NeuronPanel:
    layer: gr.Dropdown
    channel: gr.Number
    run: gr.Button
    figure: gr.Image
    summary: gr.Markdown


def _neuron_panel(default_model: LoadedModel) -> _NeuronPanel:
    """Target mode "neuron": a layer and a channel of it instead of a class, for the image chosen above."""
    with gr.Accordion("Target mode: neuron (a channel of an inner layer)", open=False, elem_id="neuron-mode"):
        layers = neuron.neuron_layers(default_model)
        layer = gr.Dropdown(
            choices=layers, value=layers[len(layers) // 2] if layers else None, label="Layer", elem_id="neuron-layer"
        )
        channel = gr.Number(value=0, precision=0, minimum=0, label="Channel", elem_id="neuron-channel")
        run = gr.Button("Explain neuron", elem_id="explain-neuron")
        figure = gr.Image(
            type="filepath", format="png", interactive=False, show_label=False, buttons=[], elem_id="neuron-results"
        )
        summary = gr.Markdown(elem_id="neuron-summary")
    return _NeuronPanel(layer, channel, run, figure, summary)


def _results_panel() -> _Results:
    """The model's top-5, the figure of the explanation, its summary and the download button."""
    top5 = gr.Label(num_top_classes=5, label="Model's top-5", show_heading=False, elem_id="top5")
    figure = gr.Image(
        label="Input · signed map · overlay · counterfactual",
        type="filepath",
        format="png",
        interactive=False,
        show_label=False,
        buttons=[],
        elem_id="results",
    )
    summary = gr.Markdown(elem_id="summary")
    download = gr.DownloadButton("Download figure (PNG)", interactive=False, elem_id="download")
    return _Results(top5, figure, summary, download)


def _wire(
    handlers: _Handlers, inputs: _Inputs, settings: _SettingsPanel, results: _Results, defaults: dict[str, Any]
) -> None:
    """The events: a new image or model re-classifies, Explain explains, the reset button restores the paper's
    settings. Model work runs one request at a time."""
    heavy = {"concurrency_id": "model", "concurrency_limit": 1}
    cleared = [results.top5, inputs.target, results.figure]
    inputs.image.change(handlers.on_image, [inputs.image, inputs.model], cleared, **heavy)
    inputs.model.change(handlers.on_model, [inputs.model, inputs.image], cleared, **heavy)
    inputs.run.click(
        handlers.on_explain,
        [inputs.image, inputs.model, inputs.target, inputs.methods, *settings.components()],
        [results.figure, results.download, results.summary],
        **heavy,
    )
    paper = [
        5,
        20,
        PRESET_PAPER,
        False,
        *(defaults[f] for f in logic.SLIDER_FAMILIES),
        *(defaults[f] for f in logic.FREEZE_FAMILIES),
    ]
    settings.reset.click(lambda: paper, None, settings.components(), queue=False)


def _wire_neurons(handlers: _Handlers, inputs: _Inputs, panel: _NeuronPanel) -> None:
    heavy = {"concurrency_id": "model", "concurrency_limit": 1}
    inputs.model.change(handlers.on_neuron_model, [inputs.model], [panel.layer], **heavy)
    panel.run.click(
        handlers.on_neuron, [inputs.image, inputs.model, panel.layer, panel.channel], [panel.figure, panel.summary],
        **heavy,
    )  # fmt: skip


def build_app(config: AppConfig | None = None) -> gr.Blocks:
    """The page: inputs and settings on the left, top-5 and results on the right; the Text tab beside it."""
    config = config or AppConfig()
    handlers = _Handlers(config)
    defaults = logic.paper_temperatures()
    start = config.settings or recommended_settings(config.model)
    with gr.Blocks(title="Semantic Pullbacks", analytics_enabled=False, delete_cache=(1800, 3600)) as demo:
        gr.Markdown(
            "# Semantic Pullbacks\n"
            "See what an image classifier looks at: the *soft pullback* keeps the forward pass exact and softens "
            "only the gates in the backward pass (arXiv 2507.22832). Upload an image, pick a class and methods, "
            "and compare maps and counterfactuals. Everything runs locally.",
            elem_id="title",
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=320):
                inputs = _input_panel(config, handlers.default_model)
                settings = _settings_panel(config, start, defaults)
                neurons = _neuron_panel(handlers.default_model)
            with gr.Column(scale=7, min_width=480):
                results = _results_panel()
        _wire(handlers, inputs, settings, results, defaults)
        _wire_neurons(handlers, inputs, neurons)
    demo = with_text_tab(demo, _user_error)
    demo.queue(default_concurrency_limit=1, max_size=config.queue_size)
    return demo


def launch(
    config: AppConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    block: bool = True,
    on_ready: Callable[[str], None] | None = None,
) -> gr.Blocks:
    """Build and serve the app on ``host:port``; with ``block=False`` return once it is serving."""
    config = config or AppConfig()
    demo = build_app(config)
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=True,
        max_file_size=config.max_file_size,
        allowed_paths=[],
        show_error=False,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        enable_monitoring=False,
        quiet=True,
        footer_links=[],
        theme=gr.themes.Default(primary_hue="orange", secondary_hue="blue", neutral_hue="slate"),
        css=_CSS,
    )
    if on_ready is not None:
        on_ready(url)
    if block:
        demo.block_thread()
    return demo
