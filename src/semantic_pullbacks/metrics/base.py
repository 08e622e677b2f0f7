"""Everything a metric is written with, importable from one place, as it was before it got a module per concept.

The names live in :mod:`.template` (the :class:`Metric` base class and its :class:`Batch`), :mod:`.explainers`
(``explain_func`` and :func:`as_explainer`), :mod:`.quantus_call` (Quantus's call form), :mod:`.validation`
(argument checks), :mod:`.batched` (chunked model calls), :mod:`.statistics` (correlations, ranks) and
:mod:`.perturbations` (noise samplers). Code that imports them from here keeps working; the package's own
modules import each name from the module that owns it.
"""

from semantic_pullbacks.metrics.batched import ScoreStream, model_outputs, target_scores
from semantic_pullbacks.metrics.explainers import Explainer, as_explainer
from semantic_pullbacks.metrics.perturbations import NoiseSampler, uniform_sampler
from semantic_pullbacks.metrics.quantus_call import QUANTUS_KEYWORDS
from semantic_pullbacks.metrics.statistics import normalise_by_max, pearson, rank, spearman, with_nan
from semantic_pullbacks.metrics.template import (
    Batch,
    Category,
    Metric,
    ZeroAttributionPolicy,
    ZeroAttributionWarning,
)
from semantic_pullbacks.metrics.validation import check_attributions, check_inputs, check_targets

__all__ = [
    "QUANTUS_KEYWORDS",
    "Batch",
    "Category",
    "Explainer",
    "Metric",
    "NoiseSampler",
    "ScoreStream",
    "ZeroAttributionPolicy",
    "ZeroAttributionWarning",
    "as_explainer",
    "check_attributions",
    "check_inputs",
    "check_targets",
    "model_outputs",
    "normalise_by_max",
    "pearson",
    "rank",
    "spearman",
    "target_scores",
    "uniform_sampler",
    "with_nan",
]
