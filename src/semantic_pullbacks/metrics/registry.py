"""A small registry of the metrics, reached only through functions, plus the paper's evaluation suite."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from semantic_pullbacks.errors import InvalidInputError
from semantic_pullbacks.metrics.aliasing import Aliasing
from semantic_pullbacks.metrics.faithfulness import (
    FaithfulnessCorrelation,
    FaithfulnessEstimate,
    Infidelity,
    MonotonicityCorrelation,
)
from semantic_pullbacks.metrics.localisation import Focus
from semantic_pullbacks.metrics.randomisation import ModelParameterRandomisation, RandomLogit, TopLayerRandomisation
from semantic_pullbacks.metrics.robustness import MaxSensitivity
from semantic_pullbacks.metrics.template import Metric

__all__ = ["PAPER_SUITE", "get_metric", "list_metrics", "paper_suite"]

_METRICS: dict[str, type[Metric]] = {
    cls.name: cls
    for cls in (
        Infidelity,
        FaithfulnessCorrelation,
        FaithfulnessEstimate,
        MonotonicityCorrelation,
        MaxSensitivity,
        RandomLogit,
        ModelParameterRandomisation,
        Focus,
        Aliasing,
        TopLayerRandomisation,
    )
}


def list_metrics(pattern: str = "*") -> list[str]:
    """Names of the registered metrics matching a shell-style ``pattern`` (e.g. ``"faithfulness_*"``),
    sorted.
    """
    return sorted(n for n in _METRICS if fnmatch.fnmatchcase(n, pattern))


def get_metric(name: str, **kwargs: Any) -> Metric:
    """A new instance of the metric called ``name``, with ``kwargs`` passed to its constructor."""
    try:
        cls = _METRICS[name]
    except KeyError:
        raise InvalidInputError(f"unknown metric {name!r}; available: {', '.join(list_metrics())}") from None
    return cls(**kwargs)


def paper_suite(input_size: int = 224, **common: Any) -> Mapping[str, Metric]:
    """The paper's evaluation table for square inputs of ``input_size``.

    Sizes scale with the input: patches of 1/2 and 1/4 of the side for infidelity, 1/4 for faithfulness
    correlation, steps of ``(side/4)²`` features. ``common`` (e.g. ``batch_size``, ``seed``) goes to every
    metric.
    Focus must be called on mosaics (see :func:`make_mosaics`).
    """
    half, quarter = max(1, input_size // 2), max(1, input_size // 4)
    step = max(1, quarter * quarter)
    return MappingProxyType(
        {
            "infidelity": Infidelity(patch_sizes=(half, quarter), n_draws=5, **common),
            "faithfulness_correlation": FaithfulnessCorrelation(patch_size=quarter, **common),
            "faithfulness_estimate": FaithfulnessEstimate(features_in_step=step, **common),
            "monotonicity_correlation": MonotonicityCorrelation(features_in_step=step, nr_samples=10, **common),
            "max_sensitivity": MaxSensitivity(nr_samples=10, radius=0.02, **common),
            "random_logit": RandomLogit(**common),
            "focus": Focus(**common),
        }
    )


PAPER_SUITE: Mapping[str, Metric] = paper_suite(224)
"""Default instances for 224×224 inputs. Metrics keep no state between calls, so sharing them is safe."""
