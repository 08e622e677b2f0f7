"""Input-normalisation wrapper: explain a model in a plain pixel domain instead of its normalised input space.

Attributions, counterfactual steps and metric perturbations are defined in the space the model is called in.
Wrapping a model trained on mean/std-normalised inputs lets all of them live in an interpretable domain
(``[0, 1]`` or ``[-1, 1]``, the paper's choice) while the network still sees exactly what it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from semantic_pullbacks.errors import InvalidInputError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "NormalizedModel"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class NormalizedModel(nn.Module):
    """Call ``model`` on ``((x - lo) / (hi - lo) - mean) / std`` for inputs ``x`` in ``domain = (lo, hi)``.

    The mapping is affine, so pullbacks through it are exact; attributions come out in ``domain`` units.

    >>> wrapped = NormalizedModel(resnet, IMAGENET_MEAN, IMAGENET_STD, domain=(-1.0, 1.0))
    >>> wrapped(x)  # x in [-1, 1]  ==  resnet(torchvision Normalize(mean, std)((x + 1) / 2))
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        domain: Sequence[float] = (0.0, 1.0),
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise InvalidInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() != std_t.numel() or mean_t.numel() == 0:
            raise InvalidInputError(
                f"mean and std must have one value per channel and the same length, got {mean!r} and {std!r}"
            )
        if not bool((std_t > 0).all()):
            raise InvalidInputError(f"std must be positive, got {std!r}")
        if len(domain) != 2 or not float(domain[0]) < float(domain[1]):
            raise InvalidInputError(f"domain must be (lo, hi) with lo < hi, got {domain!r}")
        self.model = model
        self.domain: tuple[float, float] = (float(domain[0]), float(domain[1]))
        # Not persistent: the wrapper's state_dict stays the wrapped model's (under "model.").
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` from the domain to the wrapped model's normalised input space."""
        if x.ndim != 4 or x.shape[1] != self.mean.shape[1]:
            raise InvalidInputError(f"input must have shape (N, {self.mean.shape[1]}, H, W), got {tuple(x.shape)}")
        lo, hi = self.domain
        unit = x if (lo, hi) == (0.0, 1.0) else (x - lo) / (hi - lo)
        return (unit - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))

    def extra_repr(self) -> str:
        mean = tuple(round(v, 4) for v in self.mean.flatten().tolist())
        std = tuple(round(v, 4) for v in self.std.flatten().tolist())
        return f"domain={self.domain}, mean={mean}, std={std}"
