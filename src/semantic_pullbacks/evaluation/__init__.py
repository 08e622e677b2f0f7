"""Benchmark explanation methods with the paper's metrics: one call, one table with confidence intervals.

>>> from semantic_pullbacks.evaluation import evaluate
>>> result = evaluate(methods=["SoftPullback", "Gradient"], out="runs/bench")   # doctest: +SKIP
>>> result = evaluate(texts="examples", out="runs/text")                         # doctest: +SKIP
>>> print(result.markdown())                                                     # doctest: +SKIP

The pipeline (:mod:`.runner`): :mod:`.plan` (items × methods × metrics and their settings) → :mod:`.shard`
(which rank computes what) → :mod:`.compute` (explain, score; seeds from :mod:`.seeds`) → :mod:`.store` (each
rank's rows, resumable) → :mod:`.result` (statistics, Markdown) → :mod:`.report` (files, chart), on one process
or a torchrun job (:mod:`.world`, :mod:`.job`). What depends on the kind of input is a modality (:mod:`.modality`):
:mod:`.images` (image and mosaic items; :mod:`.dataset` finds the images, :mod:`.devkit` reads ImageNet's labels)
and :mod:`.texts` (texts and joined pairs; :mod:`semantic_pullbacks.text.dataset` reads the files); :mod:`.items`
decodes items in DataLoader workers. Settings: :mod:`.specs` (methods and ablations), the presets (``fast``/``paper``,
from :mod:`semantic_pullbacks.metrics.presets`); :mod:`.statistics` (bootstrap).
"""

from semantic_pullbacks.evaluation.dataset import EvalImage, find_images
from semantic_pullbacks.evaluation.modality import Modality, resolve_metrics
from semantic_pullbacks.evaluation.result import EvaluationResult
from semantic_pullbacks.evaluation.runner import evaluate
from semantic_pullbacks.evaluation.specs import ABLATION_METHODS, MethodSpec, ablation_specs, parse_ablation
from semantic_pullbacks.evaluation.statistics import (
    PairedDifference,
    Summary,
    bootstrap_ci,
    paired_difference,
    summarise,
)
from semantic_pullbacks.evaluation.store import ResultsStore, Row
from semantic_pullbacks.evaluation.world import World
from semantic_pullbacks.metrics.presets import DEFAULT_METRICS, PRESETS, Preset, get_preset

__all__ = [
    "ABLATION_METHODS",
    "DEFAULT_METRICS",
    "PRESETS",
    "EvalImage",
    "EvaluationResult",
    "MethodSpec",
    "Modality",
    "PairedDifference",
    "Preset",
    "ResultsStore",
    "Row",
    "Summary",
    "World",
    "ablation_specs",
    "bootstrap_ci",
    "evaluate",
    "find_images",
    "get_preset",
    "paired_difference",
    "parse_ablation",
    "resolve_metrics",
    "summarise",
]
