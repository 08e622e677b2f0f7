"""Seeds of a benchmark's random draws, derived from what is being scored and never from where or when.

Every draw is seeded from the run's seed and names: a metric's perturbations from (image, metric), so every
method is scored on the same draws (a paired comparison); a stochastic method's noise from (image, method); its
re-explanations inside a metric from (image, method, metric). Nothing depends on the rank that computes a score,
the order of the work or which other images are processed with it, so a score is the same whatever the number
of processes, and a resumed run reproduces the scores it skipped.
"""

from __future__ import annotations

import hashlib

from semantic_pullbacks.errors import InvalidInputError

__all__ = ["MAX_SEED", "check_seed", "derive_seed"]

#: the largest seed a run takes: seeds are 0 to 2**63 - 1 (numpy's and torch's generators take those)
MAX_SEED = 2**63 - 1


def derive_seed(seed: int, *names: str) -> int:
    """A 63-bit seed for ``names`` under the run's ``seed``: ``derive_seed(0, "chelsea", "infidelity")``."""
    text = "\x1f".join([str(int(seed)), *names])
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big") >> 1


def check_seed(seed: object) -> int:
    """``seed`` if it is a whole number from 0 to :data:`MAX_SEED`, checked before any work: a negative seed would
    otherwise fail in the statistics, after every score was computed."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InvalidInputError(f"seed must be a whole number from 0 to 2**63 - 1, got {seed!r}")
    return seed
