"""Benchmark explanation methods with the paper's metrics: one call, one table with confidence intervals.

>>> from semantic_pullbacks.evaluation import evaluate
>>> result = evaluate(methods=["SoftPullback", "Gradient"], out="runs/bench")   # doctest: +SKIP
>>> print(result.markdown())                                                     # doctest: +SKIP

The pipeline (:mod:`.runner`): :mod:`.plan` (items × methods × metrics and their settings) → :mod:`.shard`
(which rank computes what) → :mod:`.compute` (explain, score; seeds from :mod:`.seeds`) → :mod:`.store` (each
rank's rows, resumable) → :mod:`.report` (Markdown, JSON, chart), on one process or a torchrun job
(:mod:`.world`, :mod:`.job`). Inputs: :mod:`.dataset` (which images; :mod:`.devkit` for ImageNet's labels),
:mod:`.images` (image and mosaic items), :mod:`.items` (decoding in DataLoader workers). Settings:
:mod:`.presets` (``fast``/``paper``), :mod:`.specs` (methods and ablations), :mod:`.statistics` (bootstrap).
"""

from semantic_pullbacks.evaluation.dataset import EvalImage, find_images
from semantic_pullbacks.evaluation.presets import DEFAULT_METRICS, PRESETS, Preset, get_preset
from semantic_pullbacks.evaluation.runner import EvaluationResult, evaluate
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

__all__ = [
    "ABLATION_METHODS",
    "DEFAULT_METRICS",
    "PRESETS",
    "EvalImage",
    "EvaluationResult",
    "MethodSpec",
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
    "summarise",
]
