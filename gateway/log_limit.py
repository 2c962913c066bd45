"""How often a recurring error is logged: the first time, then at most once a period.

"Once per device, ever" keeps a log quiet, but a second incident a week later is then
invisible. ``LogLimit`` logs the first occurrence for a key, holds back repeats, and
lets one through again once ``every`` seconds have passed since the last one logged,
saying how many were held back meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

# Ten minutes: a fault that repeats every poll shows about six times an hour, and one
# that comes back after a quiet spell shows at once.
DEFAULT_EVERY = 600.0


class LogLimit:
    """Per key: whether to log this occurrence, and how many were held back before it."""

    __slots__ = ("every", "_clock", "_last", "_held")

    def __init__(self, every: float = DEFAULT_EVERY, *, clock: Callable[[], float] = time.monotonic):
        self.every = every
        self._clock = clock
        self._last: dict[Hashable, float] = {}  # key -> when it was last logged
        self._held: dict[Hashable, int] = {}  # key -> occurrences not logged since

    def allow(self, key: Hashable) -> int | None:
        """None: do not log this one. Otherwise log it; the number is how many occurrences
        were held back since the last one logged (0 the first time)."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)


def held_note(held: int) -> str:
    """A suffix for the log line: how many were not logged before it."""
    return f" ({held} more since the last report)" if held else ""
