"""The rules, grouped by op family. Importing this package registers them all."""

from . import activations, attention, gating, normalization, pooling, rebuild

__all__ = ["activations", "attention", "gating", "normalization", "pooling", "rebuild"]
