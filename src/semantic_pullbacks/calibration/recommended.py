"""Recommended settings per model family, each shipped with the evidence it rests on.

Lookup is by model name (``efficientnet_lite0``, ``torchvision:resnet50``, ``timm:pvt_v2_b1``...): an exact
file first, then the first family pattern that matches. Families the paper measured (ResNet, VGG, PVT) carry its
temperatures and its reported numbers; the embedded EfficientNet-Lite family carries temperatures calibrated
here, with the images, metric and scores recorded in its file.
"""

from __future__ import annotations

import fnmatch
import json
from importlib import resources

from .settings import Settings

__all__ = ["recommended_settings", "recommended_table"]

#: (glob over the model name without its "library:" prefix, settings file) - first match wins
FAMILIES: tuple[tuple[str, str], ...] = (
    ("efficientnet_lite*", "efficientnet_lite.json"),
    ("efficientnet-lite*", "efficientnet_lite.json"),
    ("resnet*", "paper_cnn.json"),
    ("wide_resnet*", "paper_cnn.json"),
    ("vgg*", "paper_cnn.json"),
    ("pvt_v2*", "paper_pvt.json"),
)


def _read(filename: str) -> Settings:
    text = resources.files("semantic_pullbacks").joinpath("data", "settings", filename).read_text(encoding="utf-8")
    return Settings.from_dict(json.loads(text), source=f"bundled settings {filename}")


def recommended_settings(model_name: str) -> Settings:
    """Settings measured to work for ``model_name``'s family, or the paper defaults (with no evidence) if none."""
    bare = model_name.split(":", 1)[-1].lower()
    for pattern, filename in FAMILIES:
        if fnmatch.fnmatch(bare, pattern):
            return _read(filename)
    return Settings(model=None, evidence={"note": "no family-specific measurement; the paper's defaults"})


def recommended_table() -> list[tuple[str, Settings]]:
    """Every family with its settings, for documentation."""
    seen: dict[str, Settings] = {}
    rows = []
    for pattern, filename in FAMILIES:
        if filename not in seen:
            seen[filename] = _read(filename)
        rows.append((pattern, seen[filename]))
    return rows
