"""The rules, grouped by op family. Importing this package registers them all.

The last four layer over ops the earlier ones own (``mul``, ``add``, activations), so their order matters: see
:func:`._expr.chain_rule`.
"""

from . import activations, attention, gating, normalization, pooling, rebuild  # noqa: I001  (order matters)
from . import glu, bounded, composites, reductions

__all__ = [
    "activations",
    "attention",
    "bounded",
    "composites",
    "gating",
    "glu",
    "normalization",
    "pooling",
    "rebuild",
    "reductions",
]
