"""How an explainer takes a model that knows its own settings (a loaded model) in place of a bare module.

Methods never look settings up themselves: the model brings them, through the small protocol below. So methods
need neither the calibration that measured the settings nor the models package that loads them.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from torch import nn

__all__ = ["AcceptsLoadedModels", "ModelWithSettings"]


@runtime_checkable
class ModelWithSettings(Protocol):
    """A module bundled with the constructor settings recommended for it, per method.

    :class:`~semantic_pullbacks.models.LoadedModel` is one: its family's calibrated temperatures and ascent, and
    its input domain.
    """

    @property
    def model(self) -> nn.Module: ...

    def method_settings(self, method: type[Any]) -> Mapping[str, Any]: ...


class AcceptsLoadedModels(abc.ABCMeta):
    """Lets every explainer take a :class:`ModelWithSettings` (a loaded model) in place of its module.

    An ``ABCMeta`` so that explainers can be abstract and users can mix in ``abc.ABC`` (two unrelated metaclasses
    would make such a class definition fail).

    ``SoftPullback(loaded)`` explains ``loaded.model`` with the settings the model recommends for the method,
    exactly as the CLI and the app do; any setting passed explicitly wins. Done at construction, before
    ``__init__``, so every method (a user's subclass too) gets it without code of its own.
    """

    def __call__(cls, model: Any = None, *args: Any, **kwargs: Any) -> Any:
        if isinstance(model, ModelWithSettings):
            given = _given_names(cls, args, kwargs)
            defaults = model.method_settings(cls)
            kwargs = {**{k: v for k, v in defaults.items() if k not in given}, **kwargs}
            model = model.model
        return super().__call__(model, *args, **kwargs)


def _given_names(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> set[str]:
    """Constructor parameters the caller set, positionally or by keyword."""
    try:
        bound = inspect.signature(cls.__init__).bind_partial(None, None, *args, **kwargs)  # type: ignore[misc]
    except TypeError:
        return set(kwargs)  # the constructor itself will report the mistake
    return set(bound.arguments) | set(kwargs)
