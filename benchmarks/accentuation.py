"""Feature accentuation on the embedded EfficientNet-Lite0: how often does pullback ascent raise the unit it targets?

    uv run python benchmarks/accentuation.py --triples 50 --seed 0

Draws random (layer, channel, photo) triples: a layer among the 16 MBConv blocks, a channel of it, one of the
bundled photos; runs PullbackAscent with the model's recommended ascent settings (clipped to the pixel range after
the last step, as figures show it) towards ``Neuron(layer, channel=c)`` (the channel's mean over positions) and
counts the triples where the channel's value after the ascent exceeds its value on the photo. Prints each triple,
the share raised, and how much stopping the forward pass at the layer saves (the same pullback with the whole
forward pass run, side by side in this run).
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from semantic_pullbacks import Neuron, PullbackAscent, SoftPullback
from semantic_pullbacks.examples import list_examples
from semantic_pullbacks.methods import layer_shapes, layer_targets, target_value
from semantic_pullbacks.models import load


def triples(model, n: int, seed: int) -> list[tuple[str, int, str]]:
    probe = torch.zeros(1, 3, model.input_size, model.input_size)
    channels = {i.name: i.shape[1] for i in layer_shapes(model.model, probe) if i.name.count(".") == 1 and
                i.name.startswith("_blocks.")}  # fmt: skip
    rng = random.Random(seed)
    photos = [e.name for e in list_examples()]
    return [(layer, rng.randrange(channels[layer]), rng.choice(photos)) for layer in rng.choices(sorted(channels), k=n)]


def accentuation(model, n: int, seed: int) -> float:
    ascent = PullbackAscent(model, clip="last")
    images = {e.name: model.load_image(e.path) for e in list_examples()}
    raised = 0
    for k, (layer, channel, photo) in enumerate(triples(model, n, seed)):
        neuron = Neuron(layer, channel=channel)
        x = images[photo]
        result = ascent.run(x, target=neuron)
        before, after = (float(target_value(model.model, neuron, v)[0]) for v in (x, result.counterfactual))
        raised += after > before
        print(f"{k:>3} {photo:<12} {layer:<10} channel {channel:>4}: {before:9.4g} -> {after:9.4g}")
    return raised / n


def early_stop_speed(model, repeats: int) -> None:
    """Seconds per SoftPullback of an early and a late block's channel, with the forward pass stopped at the layer
    and run in full (the layer's call count forgotten before each full pass)."""
    x = model.load_image(list_examples()[0].path)
    sp = SoftPullback(model)
    for layer in ("_blocks.3", "_blocks.12"):
        neuron = Neuron(layer, channel=0)
        sp.attribute(x, target=neuron)  # warm-up; counts the calls once
        times = {"stopped": [], "full": []}
        for _ in range(repeats):
            for mode in times:
                if mode == "full":
                    layer_targets._CALLED_ONCE.clear()
                start = time.perf_counter()
                sp.attribute(x, target=neuron)
                times[mode].append(time.perf_counter() - start)
        stopped, full = (sorted(t)[len(t) // 2] for t in times.values())
        print(f"SoftPullback of {layer}:0, median of {repeats}: stopped at the layer {stopped:.3f} s, full forward "
              f"{full:.3f} s (ratio {stopped / full:.2f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triples", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats of the early-stop comparison")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model = load("efficientnet_lite0")
    share = accentuation(model, args.triples, args.seed)
    print(f"accentuation raised the channel for {share:.0%} of {args.triples} random (layer, channel, photo) triples")
    early_stop_speed(model, args.repeats)


if __name__ == "__main__":
    main()
