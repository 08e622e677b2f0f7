"""Reading weight files from disk, shared by the model sources (never touches the network)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from semantic_pullbacks.errors import InvalidInputError, WeightsUnavailableError

RANDOM = "random"


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
