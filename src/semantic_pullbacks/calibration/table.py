"""Per-image metric scores of candidate temperatures and of the gradient, each computed once and then looked up.

Cross-validation judges the same configuration on many subsets of the images, so scores are computed per image,
once, and reused by every fold. Focus is the exception:
its mosaics mix images, so they are built from the subset asked for (a held-out photo never appears as a tile in
a mosaic used to fit). Metrics whose perturbed inputs do not depend on the explanation (infidelity,
faithfulness correlation) reuse the model's outputs across configurations through an exact, content-keyed memo.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..engine import Temperatures
from ..methods import Gradient, SoftPullback
from ..metrics import Metric, make_mosaics

__all__ = ["ScoreTable"]

#: metrics whose perturbed inputs are the same for every explanation
_SHAREABLE = ("infidelity", "faithfulness_correlation")


class _Memo(nn.Module):
    """The model's outputs memoised by the exact bytes of the input batch (equal bytes give equal outputs)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self._outputs: dict[tuple[Any, ...], Tensor] = {}

    def forward(self, x: Tensor) -> Tensor:
        data = x.detach().contiguous().cpu().numpy().tobytes()
        key = (tuple(x.shape), str(x.dtype), hashlib.blake2b(data, digest_size=16).digest())
        if key not in self._outputs:
            self._outputs[key] = self.model(x).detach()
        return self._outputs[key]


def _key(temperatures: Temperatures | None) -> str:
    return "gradient" if temperatures is None else repr(sorted(temperatures.to_dict().items()))


class ScoreTable:
    """Scores of SoftPullback at any temperatures (``None``: the gradient) on ``inputs``, per image and metric.

    ``metrics`` maps names to configured metric instances; ``focus``, if present, is scored on 2×2 mosaics built
    from the subset asked for (one per image of the subset, seeded). ``progress`` receives one line per
    configuration computed.
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: Tensor,
        targets: Tensor,
        metrics: Mapping[str, Metric],
        *,
        seed: int = 0,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.model, self.inputs, self.targets = model, inputs, targets
        self.metrics = dict(metrics)
        self.seed = seed
        self.progress = progress or (lambda _msg: None)
        self.higher_is_better = {name: m.higher_is_better for name, m in self.metrics.items()}
        self._memo = _Memo(model)
        self._per_image: dict[str, dict[int, dict[str, float]]] = {}
        self._focus: dict[tuple[str, tuple[int, ...]], Tensor] = {}
        self.seconds = 0.0

    def _method(self, model: nn.Module, temperatures: Temperatures | None) -> Any:
        return Gradient(model) if temperatures is None else SoftPullback(model, temperatures)

    def _explainer(self, temperatures: Temperatures | None) -> Callable[[Any, Tensor, Tensor], Tensor]:
        built = self._method(self.model, temperatures)

        def explain(model: Any, x: Tensor, t: Tensor) -> Tensor:
            method = built if model is self.model or model is self._memo else self._method(model, temperatures)
            return method.attribute(x, target=t)

        return explain

    def per_image(self, temperatures: Temperatures | None, images: Sequence[int]) -> dict[str, Tensor]:
        """Every metric but Focus on each of ``images``: ``{metric: (len(images),)}``.

        Each image is scored alone, so its noise draws (and so its scores) do not depend on which other images a
        caller asks for at the same time.
        """
        key = _key(temperatures)
        done = self._per_image.setdefault(key, {})
        missing = [i for i in images if i not in done]
        if missing:
            start = time.perf_counter()
            explain = self._explainer(temperatures)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for i in missing:
                    x, y = self.inputs[i : i + 1], self.targets[i : i + 1]
                    attributions = explain(self.model, x, y)
                    done[i] = {
                        name: float(
                            metric(
                                self._memo if name in _SHAREABLE else self.model,
                                x,
                                y,
                                attributions=attributions,
                                explain_func=explain,
                            )[0]
                        )
                        for name, metric in self.metrics.items()
                        if name != "focus"
                    }
            seconds = time.perf_counter() - start
            self.seconds += seconds
            label = "gradient" if temperatures is None else temperatures.to_dict()
            self.progress(f"{label}: {len(missing)} images, {seconds:.0f} s")
        names = [n for n in self.metrics if n != "focus"]
        return {n: torch.tensor([done[i][n] for i in images], dtype=torch.float64) for n in names}

    def focus(self, temperatures: Temperatures | None, subset: Sequence[int]) -> Tensor:
        """Focus on one mosaic per image of ``subset``, built from ``subset`` alone (NaN if it has < 3 classes)."""
        rows = tuple(sorted(subset))
        key = (_key(temperatures), rows)
        if key not in self._focus:
            index = torch.tensor(rows, dtype=torch.long)
            labels = self.targets[index.to(self.targets.device)]
            if labels.unique().numel() < 3:
                self._focus[key] = torch.full((len(rows),), float("nan"))
            else:
                mosaics = make_mosaics(self.inputs[index.to(self.inputs.device)], labels, len(rows), seed=self.seed)
                explain = self._explainer(temperatures)
                a = explain(self.model, mosaics.images, mosaics.targets)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    score = self.metrics["focus"](
                        self.model, mosaics.images, mosaics.targets, attributions=a, positions=mosaics.positions
                    )
                self._focus[key] = score.detach().cpu().double()
        return self._focus[key]

    def records(self) -> list[dict[str, Any]]:
        """Every score computed so far as plain rows (configuration, image or mosaic subset, metric, score)."""
        rows: list[dict[str, Any]] = []
        for key, images in self._per_image.items():
            for i, scores in sorted(images.items()):
                rows += [{"config": key, "image": i, "metric": n, "score": v} for n, v in scores.items()]
        for (key, subset), scores in self._focus.items():
            rows += [
                {"config": key, "mosaics_of": list(subset), "mosaic": j, "metric": "focus", "score": float(v)}
                for j, v in enumerate(scores.tolist())
            ]
        return rows

    def scores(self, temperatures: Temperatures | None, subset: Sequence[int]) -> dict[str, Tensor]:
        """``{metric: scores}`` of ``subset``: per image, and per mosaic built from the subset for Focus."""
        out = self.per_image(temperatures, sorted(subset))
        if "focus" in self.metrics:
            out["focus"] = self.focus(temperatures, subset)
        return out
