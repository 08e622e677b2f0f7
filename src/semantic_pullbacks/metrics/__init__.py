"""Evaluation metrics of the paper as batched torch functions.

Each metric is a class: settings in ``__init__`` (paper defaults), data in ``__call__(model, inputs, targets,
attributions=None, explain_func=None, ...)`` returning one score per sample, and metadata ``name``,
``higher_is_better`` and ``category``. Each also takes Quantus's call form (``model=, x_batch=, y_batch=,
a_batch=, explain_func=, explain_func_kwargs=``, numpy arrays) and then returns what Quantus returns. Example::

    from semantic_pullbacks.metrics import Infidelity, as_explainer
    scores = Infidelity()(model, x, y, explain_func=as_explainer(captum.attr.Saliency(model)))
    scores = Infidelity()(model=model, x_batch=x_np, y_batch=y_np, a_batch=a_np)   # a list, as Quantus's
"""

from semantic_pullbacks.metrics.aliasing import Aliasing, period2_share
from semantic_pullbacks.metrics.explainers import Explainer, as_explainer
from semantic_pullbacks.metrics.faithfulness import (
    FaithfulnessCorrelation,
    FaithfulnessEstimate,
    Infidelity,
    MonotonicityCorrelation,
)
from semantic_pullbacks.metrics.localisation import Focus, Mosaics, make_mosaics
from semantic_pullbacks.metrics.perturbations import NoiseSampler, uniform_sampler
from semantic_pullbacks.metrics.randomisation import ModelParameterRandomisation, RandomLogit, TopLayerRandomisation
from semantic_pullbacks.metrics.registry import PAPER_SUITE, get_metric, list_metrics, paper_suite
from semantic_pullbacks.metrics.robustness import MaxSensitivity
from semantic_pullbacks.metrics.template import Batch, Metric, ZeroAttributionWarning

__all__ = [
    "PAPER_SUITE",
    "Aliasing",
    "Batch",
    "Explainer",
    "FaithfulnessCorrelation",
    "FaithfulnessEstimate",
    "Focus",
    "Infidelity",
    "MaxSensitivity",
    "Metric",
    "ModelParameterRandomisation",
    "MonotonicityCorrelation",
    "Mosaics",
    "NoiseSampler",
    "RandomLogit",
    "TopLayerRandomisation",
    "ZeroAttributionWarning",
    "as_explainer",
    "get_metric",
    "list_metrics",
    "make_mosaics",
    "paper_suite",
    "period2_share",
    "uniform_sampler",
]
