"""Does the recommended ascent raise the target's probability? The check behind the settings' ``ascent`` entry.

    uv run python benchmarks/quality/check_ascent.py                     # the bundled photos
    uv run python benchmarks/quality/check_ascent.py --images my_photos/ # any folder of photos

Step sizes are chosen on the bundled photos with three targets each (top-1, top-2, a random class drawn with seed
0); the same steps are then checked on targets not used to choose them (top-3, top-5, random classes with seeds
1-3). Prints, per setting and target set, how many ascents raised ``p`` and the smallest ratio ``p_after / p``.
"""

from __future__ import annotations

import argparse
import time

import torch

from semantic_pullbacks.calibration import recommended_settings
from semantic_pullbacks.calibration.settings import temperatures_for
from semantic_pullbacks.cli._images import expand_images
from semantic_pullbacks.methods import PullbackAscent
from semantic_pullbacks.models import load

#: (steps, alpha) tried with the recommended ascent temperatures
GRID = ((5, 20.0), (5, 10.0), (10, 10.0), (10, 5.0))


def targets(probs: torch.Tensor, held_out: bool) -> dict[str, torch.Tensor]:
    n = probs.shape[0]
    draw = lambda seed: torch.randint(probs.shape[1], (n,), generator=torch.Generator().manual_seed(seed))
    ranked = probs.topk(5).indices
    if not held_out:
        return {"top-1": ranked[:, 0], "top-2": ranked[:, 1], "random (seed 0)": draw(0)}
    return {"top-3": ranked[:, 2], "top-5": ranked[:, 4], **{f"random (seed {s})": draw(s) for s in (1, 2, 3)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="examples")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load("efficientnet_lite0")
    x = torch.stack([model.preprocess.load(s.path) for s in expand_images([args.images])])
    with torch.no_grad():
        before = model.model(x).softmax(1)
    rec = recommended_settings(model.name)
    temps = temperatures_for("PullbackAscent", rec.temperatures, rec.ascent.temperatures)
    print(f"{x.shape[0]} photos; recommended: {rec.ascent.steps} steps of alpha {rec.ascent.alpha:g}")
    for steps, alpha in GRID:
        ascent = PullbackAscent(model.model, temps, steps=steps, alpha=alpha, clip="last")
        for held_out in (False, True):
            t0 = time.time()
            for name, target in targets(before, held_out).items():
                with torch.no_grad():
                    after = model.model(ascent.run(x, target).counterfactual).softmax(1)
                p0, p1 = before.gather(1, target[:, None])[:, 0], after.gather(1, target[:, None])[:, 0]
                print(
                    f"steps={steps} alpha={alpha:g} {'held-out' if held_out else 'chosen on'} {name}: "
                    f"{int((p1 > p0).sum())}/{len(p0)} raised p, smallest p_after/p {float((p1 / p0).min()):.3g}"
                    f" ({time.time() - t0:.0f} s)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
