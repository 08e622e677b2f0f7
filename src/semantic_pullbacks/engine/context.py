"""What a rule handler may ask of the session it runs in: its temperatures, and the coverage report it feeds.

The ground floor that the registry (a handler's signature), the mode (which builds one per session) and every
rule share, so that none of them needs another's module for it.
"""

from __future__ import annotations

from .coverage import CoverageReport
from .temperatures import TemperatureLike, Temperatures

__all__ = ["PassContext"]


class PassContext:
    """What a rule handler may ask of the session it runs in."""

    __slots__ = ("coverage", "store_gates", "temperatures")

    def __init__(self, temperatures: Temperatures, coverage: CoverageReport, store_gates: bool = False) -> None:
        self.temperatures = temperatures
        self.coverage = coverage
        #: Several backward passes will share this graph: evaluate gates once in the forward and store them,
        #: rather than rebuilding them from saved inputs in every backward pass.
        self.store_gates = store_gates

    def temperature(self, family: str) -> TemperatureLike:
        return self.temperatures.get(family)

    def record(self, op: str, status: str) -> None:
        self.coverage.record(op, status)
