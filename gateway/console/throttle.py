"""Slows password guessing: per account and per client address, with growing delays.

Every attempt is counted *before* its password is checked (``begin``), so a burst
of parallel attempts cannot slip past while the first ones are still being
hashed: the sixth of 300 simultaneous guesses is refused as surely as the sixth
of 300 sequential ones, and while a key's last free tries are still being
checked, no more are let through. A key's first ``free`` failures cost nothing; after that
each further attempt must wait ``base_delay * 2**k`` seconds after the last
failure (capped). There is no hard lock: a guard whose name someone is guessing
at still gets a try every few minutes, and a reverse proxy's address shared by
every guard (when ``http.trusted_proxies`` is not set) only slows, never locks,
them all.

The tables are bounded without ever being cleared: when one is full, entries
with nothing left to wait for go first, then those with the fewest failures, so
sweeping many names or addresses cannot wipe the count of the account under attack.
"""

from __future__ import annotations

from dataclasses import dataclass

ACCOUNT_FREE = 5
# Several guards may share one address (a NAT, or a proxy not listed as trusted).
ADDRESS_FREE = 20
BASE_DELAY = 1.0
MAX_DELAY = 300.0
# A key with no failure for this long starts again from zero.
FORGET_AFTER = 3600.0
MAX_TRACKED = 10_000


@dataclass(slots=True)
class _Count:
    failures: int  # including attempts still being checked
    last: float
    checking: int = 0  # attempts counted whose password is still being checked


class _Table:
    """Failure counts for one kind of key, bounded."""

    def __init__(self, *, free: int, base_delay: float, max_delay: float, max_tracked: int):
        self.free = free
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_tracked = max_tracked
        self.counts: dict[str, _Count] = {}

    def delay(self, failures: int) -> float:
        """How long after the last failure the next attempt must wait."""
        if failures < self.free:
            return 0.0
        return min(self.base_delay * 2 ** min(failures - self.free, 32), self.max_delay)

    def wait_for(self, key: str, now: float) -> float:
        entry = self.counts.get(key)
        if entry is None:
            return 0.0
        if now - entry.last >= FORGET_AFTER and not entry.checking:
            del self.counts[key]
            return 0.0
        delay = self.delay(entry.failures)
        if delay and entry.checking:  # out of free tries: the delay starts when those end
            return delay
        return max(entry.last + delay - now, 0.0)

    def begin(self, key: str, now: float) -> None:
        entry = self.counts.get(key)
        if entry is None:
            if len(self.counts) >= self.max_tracked:
                self._make_room(now)
            self.counts[key] = _Count(failures=1, last=now, checking=1)
            return
        entry.failures += 1
        entry.checking += 1
        entry.last = now

    def failed(self, key: str, now: float) -> None:
        """The attempt's password was wrong: it stays counted, the delay runs from now."""
        entry = self.counts.get(key)
        if entry is None:
            return
        entry.checking = max(entry.checking - 1, 0)
        entry.last = now

    def withdraw(self, key: str) -> None:
        """The attempt does not count after all (right password, or never checked)."""
        entry = self.counts.get(key)
        if entry is None:
            return
        entry.checking = max(entry.checking - 1, 0)
        entry.failures = max(entry.failures - 1, 0)

    def _make_room(self, now: float) -> None:
        # Entries that have nothing left to wait for first (under ``free`` failures there
        # is no delay; a second's grace spares a burst in progress); then the least failed tenth.
        idle = [k for k, c in self.counts.items()
                if not c.checking and c.failures < self.free and now - c.last >= 1.0]
        for key in idle:
            del self.counts[key]
        if len(self.counts) >= self.max_tracked:
            by_failures = sorted((k for k, c in self.counts.items() if not c.checking),
                                 key=lambda k: (self.counts[k].failures, self.counts[k].last))
            for key in by_failures[:max(1, self.max_tracked // 10)]:
                del self.counts[key]


class LoginThrottle:
    """Counts login attempts per account (user name) and per client address."""

    def __init__(self, *, clock, account_free: int = ACCOUNT_FREE, address_free: int = ADDRESS_FREE,
                 base_delay: float = BASE_DELAY, max_delay: float = MAX_DELAY,
                 max_tracked: int = MAX_TRACKED):
        self._clock = clock
        self.accounts = _Table(free=account_free, base_delay=base_delay, max_delay=max_delay,
                               max_tracked=max_tracked)
        self.addresses = _Table(free=address_free, base_delay=base_delay, max_delay=max_delay,
                                max_tracked=max_tracked)

    def wait_for(self, *, account: str, address: str) -> float:
        """Seconds until this account may be tried from this address (0 = now)."""
        now = self._clock.monotonic()
        return max(self.accounts.wait_for(account, now), self.addresses.wait_for(address, now))

    def begin(self, *, account: str, address: str) -> float:
        """Start an attempt: 0, and the attempt counted as a failure until ``failed``,
        ``succeeded`` or ``not_checked`` ends it; or the seconds to wait (nothing counted)."""
        wait = self.wait_for(account=account, address=address)
        if wait > 0:
            return wait
        now = self._clock.monotonic()
        self.accounts.begin(account, now)
        self.addresses.begin(address, now)
        return 0.0

    def failed(self, *, account: str, address: str) -> None:
        """The password was wrong: the attempt stays counted; the delay runs from now."""
        now = self._clock.monotonic()
        self.accounts.failed(account, now)
        self.addresses.failed(address, now)

    def succeeded(self, *, account: str, address: str) -> None:
        """The password was right: the account starts afresh; this attempt is not held
        against the address."""
        self.accounts.counts.pop(account, None)
        self.addresses.withdraw(address)

    def not_checked(self, *, account: str, address: str) -> None:
        """The attempt was counted but its password never checked (the server was busy)."""
        self.accounts.withdraw(account)
        self.addresses.withdraw(address)
