"""Injectable time, so rules with durations and windows are tested without sleeping."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """What every part that timestamps or measures needs: ``SystemClock`` or ``FakeClock``."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """Wall time for timestamps, monotonic time for durations."""

    __slots__ = ()

    def time(self) -> float:
        """Seconds since the epoch (UTC)."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps, for measuring durations."""
        return time.monotonic()


class FakeClock:
    """A clock that only moves when a test says so."""

    def __init__(self, start: float = 1_700_000_000.0):
        self._now = start

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self._now += seconds
