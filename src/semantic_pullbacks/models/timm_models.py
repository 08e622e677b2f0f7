"""timm classifiers by name, with weights from a local file or an existing Hugging Face / torch hub cache.

timm's own loader may reach out to the Hugging Face hub; we resolve the checkpoint file ourselves (only
looking at the cache, never downloading) and hand timm that file, so its key conversions still apply.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from semantic_pullbacks.errors import UnknownModelError, WeightsUnavailableError
from semantic_pullbacks.models._weights import is_random

__all__ = ["build_timm", "timm_is_model"]

_HF_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def timm_is_model(name: str) -> bool:
    """Whether timm (if installed) knows an architecture called ``name`` (optionally with a ``.tag``)."""
    try:
        import timm
    except ImportError:
        return False
    return bool(timm.is_model(name))


def _cached_file(cfg: dict[str, Any]) -> str | None:
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else list(_HF_FILES)
            for filename in names:
                found = try_to_load_from_cache(hub_id, filename)  # inspects the cache only
                if isinstance(found, str) and os.path.isfile(found):
                    return found
    url = cfg.get("url")
    if url:
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
        if candidate.is_file():
            return str(candidate)
    return None


def build_timm(name: str, weights: str | os.PathLike[str] | None) -> tuple[nn.Module, dict[str, Any], str]:
    """``(unnormalised model, data config, weights description)``; the data config holds timm's
    ``input_size``, ``mean``, ``std``, ``crop_pct`` and ``interpolation`` for the model."""
    try:
        import timm
        from timm.data import resolve_data_config
    except ImportError as error:
        raise UnknownModelError(f"model 'timm:{name}' needs timm: `pip install semantic-pullbacks[vision]`") from error
    if not timm.is_model(name):
        raise UnknownModelError(f"timm has no model named {name!r}; see timm.list_models('*pattern*')")

    probe = timm.create_model(name, pretrained=False)
    cfg = dict(getattr(probe, "pretrained_cfg", {}) or {})
    if is_random(weights):
        model, description = probe, "random"
    else:
        if weights is not None:
            path = os.fspath(weights)
            if not os.path.isfile(path):
                raise WeightsUnavailableError(
                    f"weights file {path!r} for model 'timm:{name}' does not exist; "
                    "pass weights= the path of a local checkpoint"
                )
        else:
            found = _cached_file(cfg)
            if found is None:
                hub_id = cfg.get("hf_hub_id")
                where = f"Hugging Face hub repo {hub_id!r}" if hub_id else cfg.get("url")
                raise WeightsUnavailableError(
                    f"pretrained weights for 'timm:{name}' are not in the local cache and this library never "
                    f"downloads. Fetch them once with internet (e.g. timm.create_model({name!r}, "
                    f"pretrained=True), from {where}), or pass weights='/path/to/checkpoint', or "
                    "weights='random' for an untrained model"
                )
            path = found
        # A local file overrides every other source, so timm never contacts the hub here.
        overlay = {"file": path, "source": "", "hf_hub_id": None, "url": None}
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
        description = path
    data_config = resolve_data_config({}, model=model)
    return model, data_config, description
