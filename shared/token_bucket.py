"""A token bucket: the local dispatcher's max_dispatches_per_second, one bucket per queue."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class TokenBucket:
    """`rate` tokens a second, with a burst of the same size (at least one); an infinite rate
    grants whatever is asked."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.clock = clock
        self.updated = clock()

    def take(self, wanted: int) -> int:
        """Take up to `wanted` whole tokens; returns how many were granted."""
        if self.rate == math.inf:
            return wanted
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        granted = min(wanted, int(self.tokens))
        self.tokens -= granted
        return granted
