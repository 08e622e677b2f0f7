"""The top-level package: every public name importable from it, cheaply, without the optional dependencies."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import semantic_pullbacks

OPTIONAL = ("captum", "torchvision", "timm", "matplotlib", "PIL", "gradio", "quantus", "huggingface_hub")

_CHILD = """
import json, sys, time
import torch
start = time.perf_counter()
import semantic_pullbacks
imported = time.perf_counter() - start
from semantic_pullbacks import (
    SoftPullback, PullbackAscent, DoublePullback, Gradient, GradientAscent, SmoothPullback, SmoothGrad,
    FusionPullback, FusionGrad, IntegratedPullbacks, IntegratedGradients, PullbackShap, GradientShap,
    PullbackDeepLift, DeepLift, GuidedPullbackCam, GuidedGradCam, load, recommended_settings,
)
names = time.perf_counter() - start
print(json.dumps({"import": imported, "names": names, "optional": [m for m in %r if m in sys.modules]}))
"""


def test_import_is_cheap_and_loads_no_optional_dependency():
    done = subprocess.run(
        [sys.executable, "-c", _CHILD % (OPTIONAL,)], capture_output=True, text=True, timeout=300, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["optional"] == []
    # beyond torch itself (imported first), the package and every method take well under a second
    assert result["import"] < 1.0 and result["names"] < 2.0, result


def test_every_public_name_is_importable_from_the_top_level():
    from semantic_pullbacks import methods, models

    for name in semantic_pullbacks.__all__:
        assert getattr(semantic_pullbacks, name) is not None, name
    assert set(methods.METHODS) <= set(semantic_pullbacks.__all__)
    assert semantic_pullbacks.SoftPullback is methods.SoftPullback
    assert semantic_pullbacks.load is models.load
    assert set(semantic_pullbacks.__all__) <= set(dir(semantic_pullbacks))
    assert semantic_pullbacks.metrics.Infidelity.name == "infidelity"  # subpackages on attribute access
    with pytest.raises(AttributeError, match="NoSuchThing"):
        semantic_pullbacks.NoSuchThing  # noqa: B018


def test_the_names_lent_to_the_top_level_are_each_subpackage_s_own_public_names():
    import importlib

    for module, names in semantic_pullbacks._LAZY_EXPORTS.items():
        public = set(importlib.import_module(module).__all__)
        assert set(names) <= public, (module, set(names) - public)
    from semantic_pullbacks import methods

    # every method, and everything methods offers but its registry of them, reaches the top level
    registry = {"METHODS", "PAIRS", "TargetType", "accepted_settings", "counterpart"}
    assert set(methods.__all__) - registry == set(semantic_pullbacks._LAZY_EXPORTS["semantic_pullbacks.methods"])
