"""Which constructor settings a method gets from a settings file or a loaded model's recommended settings.

One mapping for every front end: the CLI, the web app and Python (``SoftPullback(loaded)``,
``loaded.explainer("PullbackAscent")``) all turn the same :func:`~semantic_pullbacks.calibration.recommended_settings`
into the same keyword arguments, so a map made in a script equals the one the CLI draws.
"""

from __future__ import annotations

import abc
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..calibration.settings import Settings
    from ..engine import Temperatures
    from ..models.loaded import LoadedModel
    from .base import Explainer

__all__ = ["AcceptsLoadedModels", "method_settings", "settings_of"]


def method_settings(
    method: str | type[Explainer],
    temperatures: Temperatures,
    *,
    ascent_temperatures: Temperatures | None = None,
    steps: int = 5,
    alpha: float | None = 20.0,
    domain: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """The keyword arguments ``method``'s constructor accepts among: its temperatures (the ascent's own for the
    stepping methods, when given), ascent ``steps`` and ``alpha``, and the input ``domain``."""
    from ..calibration.settings import STEPPING_METHODS, temperatures_for
    from . import accepted_settings, get_method

    cls = get_method(method) if isinstance(method, str) else method
    stepping = next((k.__name__ for k in cls.__mro__ if k.__name__ in STEPPING_METHODS), cls.__name__)
    offered: dict[str, Any] = {
        "temperatures": temperatures_for(stepping, temperatures, ascent_temperatures),
        "steps": steps,
        "alpha": alpha,
    }
    if domain is not None:
        offered["domain"] = domain
    accepted = accepted_settings(cls)
    return {k: v for k, v in offered.items() if k in accepted}


def settings_of(method: str | type[Explainer], settings: Settings, *, domain: tuple[float, float] | None = None):  # type: ignore[no-untyped-def]
    """:func:`method_settings` from a :class:`~semantic_pullbacks.calibration.Settings` (a file, or recommended)."""
    a = settings.ascent
    return method_settings(
        method, settings.temperatures, ascent_temperatures=a.temperatures, steps=a.steps, alpha=a.alpha, domain=domain
    )


def _loaded(model: Any) -> LoadedModel | None:
    from ..models.loaded import LoadedModel

    return model if isinstance(model, LoadedModel) else None


class AcceptsLoadedModels(abc.ABCMeta):
    """Lets every explainer take a :class:`~semantic_pullbacks.models.LoadedModel` in place of its module.

    An ``ABCMeta`` so that explainers can be abstract and users can mix in ``abc.ABC`` (two unrelated metaclasses
    would make such a class definition fail).

    ``SoftPullback(loaded)`` explains ``loaded.model`` with the settings recommended for its family and its input
    domain, exactly as the CLI and the app do; any setting passed explicitly wins. Done at construction, before
    ``__init__``, so every method (a user's subclass too) gets it without code of its own.
    """

    def __call__(cls, model: Any = None, *args: Any, **kwargs: Any) -> Any:
        loaded = _loaded(model)
        if loaded is not None:
            from ..calibration import recommended_settings

            given = _given_names(cls, args, kwargs)
            defaults = settings_of(cls, recommended_settings(loaded.name), domain=loaded.domain)
            kwargs = {**{k: v for k, v in defaults.items() if k not in given}, **kwargs}
            model = loaded.model
        return super().__call__(model, *args, **kwargs)


def _given_names(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> set[str]:
    """Constructor parameters the caller set, positionally or by keyword."""
    try:
        bound = inspect.signature(cls.__init__).bind_partial(None, None, *args, **kwargs)  # type: ignore[misc]
    except TypeError:
        return set(kwargs)  # the constructor itself will report the mistake
    return set(bound.arguments) | set(kwargs)
