"""Slows password guessing: a name or an address with repeated failures waits a while."""

from __future__ import annotations

MAX_FAILURES = 5
LOCK_SECONDS = 60.0
MAX_TRACKED = 10_000


class LoginThrottle:
    """Counts failed logins per key (user name, remote address)."""

    def __init__(self, *, clock, max_failures: int = MAX_FAILURES, lock_seconds: float = LOCK_SECONDS):
        self._clock = clock
        self.max_failures = max_failures
        self.lock_seconds = lock_seconds
        self._failures: dict[str, tuple[int, float]] = {}  # key -> (count, last failure)

    def wait_for(self, *keys: str) -> float:
        """Seconds until any of ``keys`` may try again (0 = now)."""
        now = self._clock.monotonic()
        wait = 0.0
        for key in keys:
            count, last = self._failures.get(key, (0, 0.0))
            if count >= self.max_failures:
                wait = max(wait, last + self.lock_seconds - now)
        return max(wait, 0.0)

    def failed(self, *keys: str) -> None:
        """One more failure for each key."""
        now = self._clock.monotonic()
        if len(self._failures) >= MAX_TRACKED:  # an address sweep must not grow memory
            self._failures.clear()
        for key in keys:
            count, last = self._failures.get(key, (0, 0.0))
            if now - last >= self.lock_seconds:
                count = 0
            self._failures[key] = (count + 1, now)

    def succeeded(self, *keys: str) -> None:
        """Forget the failures of ``keys``."""
        for key in keys:
            self._failures.pop(key, None)
