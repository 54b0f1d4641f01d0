"""The worker's one retry policy: reconnecting to its region with capped exponential backoff.

Every failure to reach the region, or loss of an established stream, is retried forever: a
worker never gives up on its region, it only waits longer (up to ``cap``) between tries. Jitter
keeps a region's workers from reconnecting in lockstep after the region restarts.
"""

from __future__ import annotations

import random
from datetime import timedelta


class Backoff:
    """Delays that double from ``initial`` up to ``cap``, each drawn from its upper half."""

    def __init__(
        self,
        initial: timedelta = timedelta(milliseconds=100),
        cap: timedelta = timedelta(seconds=5),
        rng: random.Random | None = None,
    ) -> None:
        if initial <= timedelta(0) or cap < initial:
            raise ValueError(f"need 0 < initial <= cap, got initial={initial}, cap={cap}")
        self._initial = initial.total_seconds()
        self._cap = cap.total_seconds()
        self._rng = rng or random.Random()
        self.failures = 0

    def next_delay(self) -> float:
        """Seconds to wait before the next try; each call counts one more failure."""
        ceiling = min(self._cap, self._initial * 2 ** min(self.failures, 32))
        self.failures += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Start again from ``initial``: the last try succeeded."""
        self.failures = 0
