"""The suite's one small CNN, and every method with few samples and steps, for tests that check where a method
fails and what it agrees with rather than the quality of its maps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from semantic_pullbacks.methods import METHODS, Explainer

FAST: dict[str, dict[str, Any]] = {
    "PullbackAscent": {"steps": 2}, "GradientAscent": {"steps": 2},
    "SmoothPullback": {"nt_samples": 2}, "SmoothGrad": {"nt_samples": 2},
    "FusionPullback": {"model_samples": 2, "nt_samples": 1}, "FusionGrad": {"model_samples": 2, "nt_samples": 1},
    "IntegratedPullbacks": {"n_steps": 3}, "IntegratedGradients": {"n_steps": 3},
    "PullbackShap": {"n_samples": 2}, "GradientShap": {"n_samples": 2},
}  # fmt: skip

#: Captum's notes on the hooks its methods set and on inputs it made differentiable: expected, not news.
CAPTUM_NOTES = ("Setting forward, backward hooks", "Setting backward hooks", "Input Tensor")


def ignoring_captum_notes(test: Callable[..., Any]) -> Callable[..., Any]:
    for note in CAPTUM_NOTES:
        test = pytest.mark.filterwarnings(f"ignore:{note}:UserWarning")(test)
    return test


def small_explainer(method: str, model: Any, **settings: Any) -> Explainer:
    """``method`` on ``model`` with few samples and steps; seeded, so a map and its reference see the same noise."""
    cls = METHODS[method]
    settings = {**FAST.get(method, {}), **settings}
    if cls.stochastic:
        settings.setdefault("seed", 0)
    return cls(model, **settings)


def small_net(seed: int = 0, dtype: torch.dtype = torch.float32, *, channels: int = 3, classes: int = 5) -> nn.Module:
    """The suite's small CNN. Conv-BN-ReLU, max pooling, GELU: the rule families a CNN meets. Eval mode, real BN
    statistics; any input of at least 2x2 pixels. Layers: 0 and 4 convolutions, 1 BN, 8 the linear head."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(channels, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 6, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, classes),
    )  # fmt: skip
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.3, 0.3)
        model[1].running_var.uniform_(0.5, 2.0)
    return model.to(dtype).eval()
