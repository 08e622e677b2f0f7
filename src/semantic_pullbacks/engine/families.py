"""Temperature families: the built-in ones, and those that registered rules read.

The engine's ground floor for names: the registry tells it which families its rules read, and temperatures ask it
which names are valid, so neither of the two has to import the other.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["FAMILIES", "known_families", "rules_read"]

#: Families the engine knows, each with the gates it softens.
FAMILIES: dict[str, str] = {
    "relu": "ReLU, LeakyReLU, PReLU, ReLU6/Hardtanh gates: grad * Phi(x/tau)",
    "gelu": "GELU (exact and tanh): grad * Phi(x/tau)",
    "silu": "SiLU/Swish, Hardswish, Mish and x*sigmoid(x): grad * g(x/tau)",
    "maxpool": "max pooling (1d/2d/3d, adaptive): gradient spread by softmax(window/tau)",
    "attention": "softmax attention: weights frozen, values reached through softmax(scores/tau)",
    "gate": "sigmoid/hardsigmoid gates multiplied onto a tensor (squeeze-excitation): gate frozen",
    "norm": "LayerNorm, GroupNorm, RMSNorm, InstanceNorm, batch-statistics BatchNorm: statistics frozen",
    "bounded": "tanh as a bounded activation (BERT pooler): grad * g(x/tau), the secant gate g(u) = tanh(u)/u",
}

#: The families the registered rules read, kept current by the registry.
_read_by_rules: set[str] = set()


def rules_read(families: Iterable[str]) -> None:
    """Record the families the registered rules now read (the registry calls this after every change)."""
    _read_by_rules.clear()
    _read_by_rules.update(families)


def known_families() -> list[str]:
    """The built-in families, then those of rules users registered (:func:`semantic_pullbacks.register_rule`)."""
    return [*FAMILIES, *sorted(_read_by_rules - set(FAMILIES))]
