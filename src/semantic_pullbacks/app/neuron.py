"""The app's neuron mode: pick a layer and a channel, see where it fires on the photo, its soft pullback and its
accentuation. Plain functions, like :mod:`.logic`, so unit tests call them without a browser.

>>> result = explain_neuron(loaded, x, "_blocks.5", 12)     # doctest: +SKIP
>>> result.top                                              # the layer's most active channels on the photo
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from semantic_pullbacks.errors import InvalidInputError
from semantic_pullbacks.images import to_display
from semantic_pullbacks.methods import Neuron, PullbackAscent, SoftPullback, layer_output, layer_shapes, target_value
from semantic_pullbacks.models import LoadedModel
from semantic_pullbacks.visualize import heatmap_rgb, overlay_rgb, robust_vmax

__all__ = ["NeuronResult", "explain_neuron", "neuron_figure", "neuron_layers"]

#: how many of the layer's most active channels are listed
TOP_CHANNELS = 5


@dataclass(frozen=True)
class NeuronResult:
    """What the neuron mode shows (uint8 ``H×W×3`` pictures) and the channel's mean before and after the ascent."""

    layer: str
    channel: int
    image: np.ndarray
    activation: np.ndarray
    signed: np.ndarray
    overlay: np.ndarray
    accentuated: np.ndarray
    before: float
    after: float
    top: list[tuple[int, float]]
    seconds: float

    def summary(self) -> str:
        top = ", ".join(f"{c} ({v:.3g})" for c, v in self.top)
        return (
            f"**{self.layer}:{self.channel}** — mean {self.before:.3g} on the photo, {self.after:.3g} after "
            f"accentuation ({self.seconds:.1f} s). Most active channels of `{self.layer}` here: {top}"
        )


def neuron_layers(loaded: LoadedModel) -> list[str]:
    """Layers a channel can be picked from: names of at most two parts (``_blocks.5``), run once per forward
    pass, with a ``(1, C, H, W)`` output."""
    probe = torch.zeros(1, 3, loaded.input_size, loaded.input_size, device=loaded.device)
    return [
        info.name
        for info in layer_shapes(loaded.model, probe)
        if info.calls == 1 and info.shape is not None and len(info.shape) == 4 and info.name.count(".") <= 1
    ]


def explain_neuron(loaded: LoadedModel, x: torch.Tensor, layer: str, channel: int) -> NeuronResult:
    """Channel ``channel`` of ``layer`` on the ``(3, H, W)`` photo ``x``: its activation map, its soft pullback and
    its accentuation (pullback ascent with the model's recommended settings, clipped to the pixel range)."""
    if not layer:
        raise InvalidInputError("pick a layer for the neuron")
    if channel is None or int(channel) != channel or channel < 0:
        raise InvalidInputError(f"the channel must be an integer >= 0, got {channel!r}")
    start = time.perf_counter()
    batch = x[None].to(loaded.device)
    neuron = Neuron(layer, channel=int(channel))
    activation = _activation(loaded, batch, layer)
    if neuron.channel >= activation.shape[0]:
        raise InvalidInputError(
            f"layer {layer} has {activation.shape[0]} channels (0..{activation.shape[0] - 1}); pick one of them"
        )
    attribution = SoftPullback(loaded).attribute(batch, target=neuron)[0]
    accentuated = PullbackAscent(loaded, clip="last").run(batch, target=neuron).counterfactual
    limit = robust_vmax(attribution.sum(0))
    means = activation.flatten(1).mean(1)
    top = means.topk(min(TOP_CHANNELS, means.numel()))
    return NeuronResult(
        layer=layer,
        channel=neuron.channel,
        image=to_display(batch[0], loaded.domain, dtype="uint8"),
        activation=_activation_overlay(batch[0], activation[neuron.channel], loaded),
        signed=heatmap_rgb(attribution, vmax=limit),
        overlay=overlay_rgb(batch[0], attribution, loaded.domain, vmax=limit),
        accentuated=to_display(accentuated[0], loaded.domain, dtype="uint8"),
        before=float(means[neuron.channel]),
        after=float(target_value(loaded.model, neuron, accentuated)[0]),
        top=[(int(c), float(v)) for v, c in zip(top.values, top.indices)],
        seconds=time.perf_counter() - start,
    )


def _activation(loaded: LoadedModel, batch: torch.Tensor, layer: str) -> torch.Tensor:
    """The layer's output ``(C, h, w)`` on the photo."""
    return layer_output(loaded.model, layer, batch)[0]


def _activation_overlay(image: torch.Tensor, channel_map: torch.Tensor, loaded: LoadedModel) -> np.ndarray:
    """Where the channel fires: its map, upsampled to the photo, positive part in red over the greyscale photo."""
    size = image.shape[-2:]
    up = torch.nn.functional.interpolate(channel_map[None, None], size=size, mode="bilinear", align_corners=False)
    return overlay_rgb(image, up[0].clamp_min(0).expand(3, -1, -1) / 3, loaded.domain)


def neuron_figure(result: NeuronResult):  # -> matplotlib.figure.Figure
    """The four pictures in one row, for the page and the download."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.4, 3.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    titles = ("where it fires", "SP map (red raises it)", "SP overlay", f"accentuated: {result.after:.3g}")
    for ax, picture, title in zip(
        fig.subplots(1, 4), (result.activation, result.signed, result.overlay, result.accentuated), titles
    ):
        ax.imshow(picture)
        ax.set_title(title, fontsize=10, pad=4)
        ax.set_axis_off()
    fig.suptitle(f"channel {result.channel} of {result.layer} · mean {result.before:.3g} on the photo", fontsize=11)
    return fig
