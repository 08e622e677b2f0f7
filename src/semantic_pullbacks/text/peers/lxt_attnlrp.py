"""LXT's AttnLRP in its efficient mode, ``LXT-AttnLRP``: LRP for transformers as a modified gradient.

LXT patches the modules of a Hugging Face modeling file (its normalisations, MLP gates, attention functions;
for BERT, the whole file) so that ``embeddings * grad`` of the patched model is the AttnLRP relevance. The patches
are global, so here they hold only while one explanation runs, under a lock, and every patched attribute is put
back afterwards: other methods in the same process see the model as it was. Where LXT replaces the model's classes
(BERT), existing instances keep the old ones, so the explanation runs on a private copy built from the patched
classes with the caller's weights.

LXT 2.1 imports ``transformers.modeling_attn_mask_utils``, which transformers 5 removed: it runs in the
environment of ``benchmarks/envs/text-peers`` (transformers < 5).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import types
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ...errors import UnsupportedModelError
from ...methods.targets import objective, select_output
from ..model import EmbeddingsForward
from .base import TextPeer

__all__ = ["AttnLRP", "lxt_patches", "patch_map_for"]

_LOCK = threading.RLock()  # the patches are process-wide
_MISSING = object()
_CLASS_ATTRIBUTES = ("forward", "original_forward")


def patch_map_for(model: nn.Module) -> dict[Any, Any]:
    """LXT's AttnLRP patch map for the modeling file ``model``'s class comes from."""
    from lxt.efficient.models import DEFAULT_MAP

    module = sys.modules.get(type(model).__module__)
    if module not in DEFAULT_MAP:
        known = ", ".join(m.__name__.rsplit(".", 1)[-1] for m in DEFAULT_MAP)
        raise UnsupportedModelError(
            f"LXT-AttnLRP has no patches for {type(model).__name__} ({type(model).__module__}); LXT covers: {known}"
        )
    return DEFAULT_MAP[module]


def _state(target: Any) -> dict[str, Any]:
    if isinstance(target, types.ModuleType):
        return dict(vars(target))
    return {name: target.__dict__.get(name, _MISSING) for name in _CLASS_ATTRIBUTES}


def _restore(target: Any, state: dict[str, Any]) -> None:
    if isinstance(target, types.ModuleType):
        for name in [n for n in vars(target) if n not in state]:
            delattr(target, name)
    for name, value in state.items():
        if value is _MISSING:
            if name in target.__dict__:
                delattr(target, name)
        elif target.__dict__.get(name, _MISSING) is not value:
            setattr(target, name, value)


@contextlib.contextmanager
def lxt_patches(patch_map: dict[Any, Any]) -> Iterator[None]:
    """LXT's patches applied for the duration of the block, then every patched attribute restored."""
    from lxt.efficient import monkey_patch

    with _LOCK:
        saved = [(target, _state(target)) for target in patch_map]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # LXT warns about targets it patched before
                monkey_patch(None, patch_map)
            yield
        finally:
            for target, state in saved:
                _restore(target, state)


class AttnLRP(TextPeer, name="LXT-AttnLRP"):
    """LXT's AttnLRP (efficient mode): relevance ``embeddings * grad`` of the patched model, signed."""

    requires = ("lxt.efficient",)

    def __init__(self, model: nn.Module, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self._copy: tuple[nn.Module, nn.Module] | None = None
        patch_map_for(self.hf_model)  # an unsupported architecture fails here, before any text is read

    def _bind(self, model: Any) -> None:
        super()._bind(model)
        self._copy = None

    def _attribute(self, x: torch.Tensor, target: Any, args: tuple[Any, ...], **kwargs: Any) -> torch.Tensor:
        self._no_options(kwargs)
        patches = patch_map_for(self.hf_model)
        with lxt_patches(patches):
            forward = EmbeddingsForward(self._patched_model(), self.model.kind)
            x = x.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                score = objective(select_output(forward(x, *args), self.output_selector), target, x.shape[0])
                (grad,) = torch.autograd.grad(score.sum(), x)
        return x.detach() * grad

    def _patched_model(self) -> nn.Module:
        """The caller's model where LXT patched its classes in place; else (LXT replaced the classes) a copy
        built from the patched classes, with the caller's weights, made once."""
        hf = self.hf_model
        module = sys.modules[type(hf).__module__]
        patched_class = getattr(module, type(hf).__name__)
        if patched_class is type(hf):
            return hf
        if self._copy is None or self._copy[0] is not hf:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                copy = patched_class(hf.config)
            copy.load_state_dict(hf.state_dict())
            copy.to(next(hf.parameters()).device, next(hf.parameters()).dtype).eval().requires_grad_(False)
            self._copy = (hf, copy)
        return self._copy[1]
