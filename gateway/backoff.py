"""Capped exponential backoff with full jitter, reset after a success."""

from __future__ import annotations

import random


class Backoff:
    """Delays for retrying: uniform in [0, min(cap, initial * 2**attempt)].

    Full jitter spreads the retries of many devices that failed together (a bus
    that lost power) instead of having them hammer the line in step.
    """

    def __init__(self, *, initial: float = 0.5, cap: float = 30.0, rng: random.Random | None = None):
        self.initial = initial
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The delay before the next try; each call widens the window."""
        ceiling = min(self.cap, self.initial * (2 ** self.attempt))
        self.attempt = min(self.attempt + 1, 32)
        return self._rng.uniform(0, ceiling)

    def reset(self) -> None:
        """Back to the shortest delays, after a success."""
        self.attempt = 0
