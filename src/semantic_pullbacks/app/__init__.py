"""The web app: ``semantic-pullbacks app`` serves a local Gradio page to explain images interactively.

:mod:`.logic` holds what one request does (no web framework needed, unit-tested directly); :mod:`.ui` lays out
the page and is imported only when the app is built, so the library never needs Gradio otherwise.

>>> from semantic_pullbacks.app import launch     # doctest: +SKIP
>>> launch(port=7860)                             # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from .logic import ExplainRequest, ExplainResult, Limits, ModelCache, RequestTimeoutError, explain, read_image

__all__ = [
    "ExplainRequest",
    "ExplainResult",
    "Limits",
    "ModelCache",
    "RequestTimeoutError",
    "build_app",
    "explain",
    "launch",
    "read_image",
]


def build_app(*args: Any, **kwargs: Any) -> Any:
    """The Gradio ``Blocks`` of the app (see :func:`semantic_pullbacks.app.ui.build_app`)."""
    from .ui import build_app as build

    return build(*args, **kwargs)


def launch(*args: Any, **kwargs: Any) -> Any:
    """Build and serve the app (see :func:`semantic_pullbacks.app.ui.launch`)."""
    from .ui import launch as serve

    return serve(*args, **kwargs)
