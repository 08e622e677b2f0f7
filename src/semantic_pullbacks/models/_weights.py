"""Weight files, shared by the model sources: reading them from disk, and fetching them on first use.

Like torchvision and timm, a pretrained model's weights are downloaded once, through those libraries' own caches
(the torch hub cache under ``TORCH_HOME``, the Hugging Face cache under ``HF_HOME``), and read from there ever
after. Offline (``offline=True``, the CLI's ``--offline``, ``SEMANTIC_PULLBACKS_OFFLINE=1`` or the hubs' own
``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``) nothing touches the network, and a missing file is an error that
says where to put it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from semantic_pullbacks.errors import InvalidInputError, SemanticPullbacksError, WeightsUnavailableError

RANDOM = "random"

#: environment variables that switch downloads off (Hugging Face's own two included, as its hub obeys them)
OFFLINE_VARIABLES = ("SEMANTIC_PULLBACKS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = {"1", "true", "yes", "on"}


def offline_reason(offline: bool = False) -> str | None:
    """Why downloads are off (``None`` when they are allowed)."""
    if offline:
        return "offline mode was asked for"
    for name in OFFLINE_VARIABLES:
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return f"{name}={os.environ[name]} is set"
    return None


def is_url(weights: object) -> bool:
    return isinstance(weights, str) and weights.strip().lower().startswith(("http://", "https://"))


def hub_checkpoint(url: str) -> Path:
    """Where the torch hub cache keeps the file downloaded from ``url`` (torchvision's and timm's cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def offline_error(model_name: str, what: str, reason: str, remedy: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"pretrained weights for {model_name!r} ({what}) are not in the local cache, and downloads are off "
        f"({reason}). Either run once with downloads on (unset it, or drop --offline) to fetch them into the "
        f"cache, or {remedy}, or pass weights='/path/to/checkpoint' (or weights='random' for an untrained model)"
    )


@contextlib.contextmanager
def fetching(model_name: str, source: str, remedy: str) -> Iterator[None]:
    """A download that fails (no network, proxy, HTTP error, corrupt file) becomes an error that says what to do."""
    try:
        yield
    except SemanticPullbacksError:
        raise
    except Exception as error:
        raise WeightsUnavailableError(
            f"could not download the pretrained weights for {model_name!r} from {source}: "
            f"{type(error).__name__}: {error}. Check the connection (proxies: HTTPS_PROXY), or {remedy}, or pass "
            "weights='/path/to/checkpoint'; set SEMANTIC_PULLBACKS_OFFLINE=1 to never try downloading"
        ) from error


def fetch_url(url: str, model_name: str, *, offline: bool = False) -> Path:
    """The torch hub cache's copy of ``url``, downloaded first if missing (checked against the hash in its name)."""
    cached = hub_checkpoint(url)
    if cached.is_file():
        return cached
    remedy = f"download {url} on a machine with internet and save it as {cached}"
    reason = offline_reason(offline)
    if reason is not None:
        raise offline_error(model_name, url, reason, remedy)
    match = torch.hub.HASH_REGEX.search(cached.name)  # torch hub's convention: name-<sha256 prefix>.pth
    with fetching(model_name, url, remedy):
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(cached), match.group(1) if match else None, progress=True)
    return cached


def is_random(weights: object) -> bool:
    """Whether the caller explicitly asked for randomly initialised weights."""
    return isinstance(weights, str) and weights.strip().lower() == RANDOM


def read_state_dict(path: str | os.PathLike[str], model_name: str) -> dict[str, torch.Tensor]:
    """Load a state dict from a ``.pth``/``.bin``/``.safetensors`` file, unwrapping common containers."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise WeightsUnavailableError(
            f"weights file {str(path)!r} for model {model_name!r} does not exist; "
            "pass weights= the path of a local checkpoint"
        )
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file), device="cpu")
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt file, pickled code refused by weights_only, ...
        raise WeightsUnavailableError(
            f"cannot read weights file {str(file)!r} for model {model_name!r}: {error}"
        ) from error
    for key in ("state_dict", "model", "model_state_dict", "state_dict_ema"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise WeightsUnavailableError(
            f"weights file {str(file)!r} holds a {type(state).__name__}, not a state dict of tensors"
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


def apply_state_dict(model: nn.Module, state: dict[str, torch.Tensor], model_name: str, origin: str) -> None:
    """Load ``state`` strictly, turning a mismatch into an error that says which keys disagree."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first_line = str(error).splitlines()[0]
        raise InvalidInputError(
            f"weights from {origin} do not fit model {model_name!r} ({first_line}); check that the file was "
            "trained for this architecture"
        ) from error
