"""timm classifiers by name, with weights from the Hugging Face / torch hub cache, a local file or a URL.

We resolve the checkpoint file ourselves and hand timm that file, so its key conversions still apply: from the
cache when it is there (no network at all), else downloaded on first use the way timm does (``hf_hub_download``
into the Hugging Face cache, or the torch hub cache for weights published by URL). Offline,
:class:`WeightsUnavailableError` says what to do instead.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from semantic_pullbacks.errors import UnknownModelError, WeightsUnavailableError
from semantic_pullbacks.models._weights import (
    fetch_url,
    fetching,
    hub_checkpoint,
    is_random,
    is_url,
    offline_error,
    offline_reason,
)

__all__ = ["build_timm", "timm_is_model"]

_HF_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def timm_is_model(name: str) -> bool:
    """Whether timm (if installed) knows an architecture called ``name`` (optionally with a ``.tag``)."""
    try:
        import timm
    except ImportError:
        return False
    return bool(timm.is_model(name))


def _hub_files(cfg: dict[str, Any]) -> list[str]:
    return [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else list(_HF_FILES)


def _cached_file(cfg: dict[str, Any]) -> str | None:
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            for filename in _hub_files(cfg):
                found = try_to_load_from_cache(hub_id, filename)  # inspects the cache only
                if isinstance(found, str) and os.path.isfile(found):
                    return found
    url = cfg.get("url")
    if url:
        candidate = hub_checkpoint(url)
        if candidate.is_file():
            return str(candidate)
    return None


def _download(name: str, cfg: dict[str, Any], offline: bool) -> str:
    """Fetch the pretrained checkpoint as timm would: from the Hugging Face hub, else from its URL."""
    hub_id, url = cfg.get("hf_hub_id"), cfg.get("url")
    model = f"timm:{name}"
    where = f"Hugging Face hub repo {hub_id!r}" if hub_id else str(url)
    remedy = (
        f"fetch them where there is internet (timm.create_model({name!r}, pretrained=True), from {where}) and copy "
        "the Hugging Face cache (HF_HOME) or torch hub cache (TORCH_HOME) here"
    )
    reason = offline_reason(offline)
    if reason is not None:
        raise offline_error(model, where, reason, remedy)
    if hub_id:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        with fetching(model, where, remedy):
            for filename in _hub_files(cfg):
                try:
                    return hf_hub_download(hub_id, filename)
                except EntryNotFoundError as missing:  # the repo lacks this file: try the next name, as timm does
                    if isinstance(missing, LocalEntryNotFoundError):  # no connection, nothing cached
                        raise
                    continue
        raise WeightsUnavailableError(f"{where} has none of the files {', '.join(_hub_files(cfg))}; {remedy}")
    if url:
        return str(fetch_url(url, model, offline=offline))
    raise WeightsUnavailableError(f"timm publishes no pretrained weights for {name!r}; pass weights= a local file")


def build_timm(
    name: str, weights: str | os.PathLike[str] | None, *, offline: bool = False
) -> tuple[nn.Module, dict[str, Any], str]:
    """``(unnormalised model, data config, weights description)``; the data config holds timm's
    ``input_size``, ``mean``, ``std``, ``crop_pct`` and ``interpolation`` for the model. ``weights``: None (the
    pretrained default: cached, or downloaded on first use), ``"random"``, a checkpoint path or a URL."""
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
        if weights is None:
            path = _cached_file(cfg) or _download(name, cfg, offline)
        elif is_url(weights):
            path = str(fetch_url(str(weights), f"timm:{name}", offline=offline))
        else:
            path = os.fspath(weights)
            if not os.path.isfile(path):
                raise WeightsUnavailableError(
                    f"weights file {path!r} for model 'timm:{name}' does not exist; "
                    "pass weights= the path of a local checkpoint"
                )
        # A local file overrides every other source, so timm never contacts the hub here.
        overlay = {"file": path, "source": "", "hf_hub_id": None, "url": None}
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
        description = path
    data_config = resolve_data_config({}, model=model)
    return model, data_config, description
