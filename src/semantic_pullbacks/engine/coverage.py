"""Coverage report: which nonlinear ops a pass met, and what the engine did with each."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["NO_RULE", "ORDINARY", "SOFTENED", "CoverageReport"]

SOFTENED = "softened"  # the soft adjoint replaced the gradient
ORDINARY = "ordinary"  # a rule exists but its family is off (temperature None) or the call is not a gate
NO_RULE = "no rule"  # nonlinear, and the engine has no rule for it: ordinary gradient


@dataclass
class CoverageReport:
    """Counts per (op, status). Accumulates over every forward pass run inside one ``pullback_mode``."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    def record(self, op: str, status: str, n: int = 1) -> None:
        self.counts[(op, status)] += n

    def reclassify(self, op: str, old: str, new: str) -> None:
        """Move one count, e.g. a softmax first seen as ordinary that turned out to weight an attention."""
        if self.counts[(op, old)] > 0:
            self.counts[(op, old)] -= 1
            if self.counts[(op, old)] == 0:
                del self.counts[(op, old)]
        self.counts[(op, new)] += 1

    def ops(self, status: str | None = None) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (op, st), n in self.counts.items():
            if status is None or st == status:
                out[op] += n
        return dict(sorted(out.items()))

    @property
    def met(self) -> dict[str, int]:
        return self.ops()

    @property
    def softened(self) -> dict[str, int]:
        return self.ops(SOFTENED)

    @property
    def ordinary(self) -> dict[str, int]:
        return self.ops(ORDINARY)

    @property
    def unhandled(self) -> dict[str, int]:
        return self.ops(NO_RULE)

    def clear(self) -> None:
        self.counts.clear()

    def warn_unhandled(self) -> None:
        if self.unhandled:
            names = ", ".join(f"{op} x{n}" for op, n in self.unhandled.items())
            warnings.warn(
                f"pullback_mode met nonlinear ops it has no rule for; they kept their ordinary gradient: {names}. "
                "Register a rule with semantic_pullbacks.register_rule if they act as gates.",
                stacklevel=3,
            )

    def __str__(self) -> str:
        if not self.counts:
            return "CoverageReport: no nonlinear ops met (was the forward pass run inside the mode, with grad?)"
        rows = [("op", "met", SOFTENED, ORDINARY, NO_RULE)]
        for op, n in self.met.items():
            rows.append((op, str(n), *(str(self.counts.get((op, s), 0) or "") for s in (SOFTENED, ORDINARY, NO_RULE))))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)

    def __repr__(self) -> str:
        return f"CoverageReport(softened={self.softened}, ordinary={self.ordinary}, unhandled={self.unhandled})"
