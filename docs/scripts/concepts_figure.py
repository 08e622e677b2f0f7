"""Draws docs/figures/gates.png, the Concepts page's figure: the ReLU gate, hard and softened at three temperatures,
beside the soft max-pool weights of one window. Run: uv run python docs/scripts/concepts_figure.py"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

OUT = Path(__file__).resolve().parents[1] / "figures" / "gates.png"


def main() -> None:
    x = torch.linspace(-3, 3, 601)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.step(x, (x > 0).float(), where="mid", color="black", label="gradient: step (τ = 0)")
    for tau in (0.3, 0.6, 1.5):
        left.plot(x, 0.5 * (1 + torch.erf(x / (tau * 2**0.5))), label=f"soft gate Φ(x/τ), τ = {tau}")
    left.set(title="ReLU: how much of the incoming gradient passes", xlabel="pre-activation x", ylabel="gate")
    left.legend(fontsize=7)
    window = torch.tensor([0.2, 1.0, 0.9, -0.4])
    positions = torch.arange(4)
    right.bar(positions - 0.2, (window == window.max()).float(), width=0.2, color="black", label="gradient: argmax")
    for shift, tau in zip((0.0, 0.2), (0.3, 1.0)):
        right.bar(positions + shift, torch.softmax(window / tau, 0), width=0.2, label=f"softmax(window/τ), τ = {tau}")
    right.set(title="max-pool: where the gradient goes", xlabel="position in a window of values 0.2, 1.0, 0.9, -0.4")
    right.legend(fontsize=7)
    fig.tight_layout()
    OUT.parent.mkdir(exist_ok=True)
    fig.savefig(OUT, dpi=110)


if __name__ == "__main__":
    main()
