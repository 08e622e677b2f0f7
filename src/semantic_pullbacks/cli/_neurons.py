"""``--neuron LAYER:CHANNEL`` for ``explain`` and ``counterfactuals``: a channel of an inner layer as the target.

The channel's mean over its positions is explained (its soft pullback) or accentuated (pullback ascent: the image
moved so that the channel fires more while staying close to the photo).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from ..errors import InvalidInputError
from ..methods import Explainer, Neuron, PullbackAscent, resolve_layer, target_value
from ..models import LoadedModel
from ..visualize import plot_counterfactual_grid, plot_explanation
from ._images import ImageBatch, ImageSource, iter_batches
from ._output import Output, slug

__all__ = ["accentuate_neurons", "explain_neurons", "parse_neurons"]


def parse_neurons(model: LoadedModel, specs: Sequence[str]) -> list[Neuron]:
    """``LAYER:CHANNEL`` arguments (comma-separated or repeated) as targets, the layer names checked up front."""
    neurons = []
    for spec in (part.strip() for text in specs for part in text.split(",") if part.strip()):
        layer, _, channel = spec.rpartition(":")
        if not layer or not channel.isdigit():
            raise InvalidInputError(
                f"--neuron {spec!r}: give LAYER:CHANNEL, e.g. _blocks.5:12 (list the layers with "
                "`semantic-pullbacks layers`)"
            )
        resolve_layer(model.model, layer)
        neurons.append(Neuron(layer, channel=int(channel)))
    return neurons


def explain_neurons(
    model: LoadedModel, explainer: Explainer, method: str, neurons: list[Neuron], sources: list[ImageSource],
    out: Output, batch_size: int, save_tensors: str | None = None,
) -> None:  # fmt: skip
    """One figure per image and neuron: the image, the channel's signed map, input ⊙ map and the overlay (and
    the raw map, with ``save_tensors``)."""
    for batch in iter_batches(model, sources, batch_size, out.fail):
        for neuron in neurons:
            attribute = lambda x, n=neuron: explainer.attribute(x, target=n)
            _each_image(batch, out, attribute, neuron, model, method, save_tensors)
        for _ in batch.sources:
            out.advance()


def _each_image(
    batch: ImageBatch, out: Output, attribute: Callable[[torch.Tensor], torch.Tensor], neuron: Neuron,
    model: LoadedModel, method: str, save_tensors: str | None,
) -> None:  # fmt: skip
    start = time.perf_counter()
    maps = attribute(batch.tensor)
    value = target_value(model.model, neuron, batch.tensor)
    name = f"{neuron.layer}:{neuron.channel}"
    out.say(f"{method} of {name} on {len(batch.sources)} image(s) in {time.perf_counter() - start:.2f} s")
    for i, source in enumerate(batch.sources):
        label = f"{name} (mean {float(value[i]):.3g})"
        fig = plot_explanation(
            batch.tensor[i], maps[i], model.domain, image_title=source.name, class_name=label, method=method
        )
        out.figure(fig, f"{source.name}_{method}_{slug(name)}")
        if save_tensors:
            out.tensor(maps[i], f"{source.name}_{method}_{slug(name)}", save_tensors)


def accentuate_neurons(
    model: LoadedModel, ascent: PullbackAscent, method: str, neurons: list[Neuron], sources: list[ImageSource],
    out: Output, batch_size: int,
) -> None:  # fmt: skip
    """Per image, the photo accentuated towards each neuron, with the neuron's value before and after."""
    names = [f"{n.layer}:{n.channel}" for n in neurons]
    for batch in iter_batches(model, sources, batch_size, out.fail):
        x = batch.tensor
        results = [ascent.run(x, target=n) for n in neurons]
        changed = torch.stack([r.counterfactual for r in results], 1)
        for i, source in enumerate(batch.sources):
            notes = [f"{float(r.scores[0, i]):.3g} → {target_value(model.model, n, r.counterfactual)[i]:.3g}"
                     for r, n in zip(results, neurons)]  # fmt: skip
            out.say(f"{source.label}: " + ", ".join(f"{n}: {note}" for n, note in zip(names, notes)))
            fig = plot_counterfactual_grid(
                x[i : i + 1], changed[i : i + 1], [names], model.domain,
                image_titles=[source.name], notes=[notes], method=f"{method}: accentuated channels",
            )  # fmt: skip
            out.figure(fig, f"{source.name}_{method}_accentuation")
            out.advance()
