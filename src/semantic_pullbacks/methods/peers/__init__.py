"""The methods people compare SP with, run through this library: Zennit's LRP composites, pytorch-grad-cam's CAMs
and Captum's LRP, each with the library's Captum-style interface.

>>> from semantic_pullbacks.methods.peers import get_peer
>>> attr = get_peer("Zennit-EpsilonPlusFlat")(model).attribute(x, target=285)   # doctest: +SKIP

Each needs its package, installed by the ``peers`` extra (``pip install 'semantic-pullbacks[peers]'``); without it,
building the method raises :class:`~semantic_pullbacks.errors.MissingDependencyError` naming the extra. Importing
this package imports none of them. :func:`semantic_pullbacks.methods.get_method` (and so ``evaluate --methods``,
``compare --methods``) finds the peers by their table names, separators ignored (``zennit_epsilonplusflat``).

A new peer is a :class:`PeerExplainer` subclass in a module of its own here, named with the class keyword
(``class AttnLRP(PeerExplainer, name="LXT-AttnLRP")``), its modules in ``requires``, its package in the ``peers``
extra (or, where its pins clash with ours, a documented environment of its own), and an entry in :data:`PEERS`.
"""

from __future__ import annotations

import importlib.util

from ...errors import InvalidInputError
from .base import EXTRA, PeerExplainer
from .cams import GradCAM, HiResCAM, LayerCAM
from .captum_lrp import CaptumLRP
from .zennit_lrp import ZennitBetaSmooth, ZennitEpsilonPlusFlat, beta_matching

#: table name -> peer method (images)
PEERS: dict[str, type[PeerExplainer]] = {
    cls.__name__: cls for cls in (ZennitEpsilonPlusFlat, ZennitBetaSmooth, GradCAM, HiResCAM, LayerCAM, CaptumLRP)
}


def installed_peers() -> list[str]:
    """The peers whose packages are importable here."""
    return [name for name, cls in PEERS.items() if all(importlib.util.find_spec(m) is not None for m in cls.requires)]


def get_peer(name: str) -> type[PeerExplainer]:
    """A peer by its table name, case and separators (``-``, ``_``, spaces) ignored."""
    key = normalised(name)
    for known, cls in PEERS.items():
        if normalised(known) == key:
            return cls
    raise InvalidInputError(f"unknown peer method {name!r}; available: {', '.join(PEERS)}")


def normalised(name: str) -> str:
    return "".join(c for c in name if c not in "-_ ").lower()


__all__ = [
    "EXTRA",
    "PEERS",
    "CaptumLRP",
    "GradCAM",
    "HiResCAM",
    "LayerCAM",
    "PeerExplainer",
    "ZennitBetaSmooth",
    "ZennitEpsilonPlusFlat",
    "beta_matching",
    "get_peer",
    "installed_peers",
]
