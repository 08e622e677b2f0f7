"""Seeds of a benchmark's random draws, derived from what is being scored and never from where or when.

Every draw is seeded from the run's seed and names: a metric's perturbations from (image, metric), so every
method is scored on the same draws (a paired comparison); a stochastic method's noise from (image, method); its
re-explanations inside a metric from (image, method, metric). Nothing depends on the rank that computes a score,
the order of the work or which other images are processed with it, so a score is the same whatever the number
of processes, and a resumed run reproduces the scores it skipped.
"""

from __future__ import annotations

import hashlib

__all__ = ["derive_seed"]


def derive_seed(seed: int, *names: str) -> int:
    """A 63-bit seed for ``names`` under the run's ``seed``: ``derive_seed(0, "chelsea", "infidelity")``."""
    text = "\x1f".join([str(int(seed)), *names])
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big") >> 1
