"""The gateway process's own health: event-loop lag and bytes written to disk.

- Loop lag: a task asks to wake every ``interval`` and records how late it woke.
  A late wake-up is a stall every other task shared (a poll slot that slips, an
  alarm that waits), whatever caused it. Kept: the last ``window`` samples, for
  the p99 and the maximum /metrics shows, and a total count of late wake-ups.
- Disk writes: ``write_bytes`` of ``/proc/self/io``, the bytes this process caused
  to be written to storage (SQLite's WAL, its checkpoints, the alarm state, logs to
  a file): what wears an SD card. Sampled once a minute; the rate over the last
  hour (or since start, if shorter) is what ``bytes written per hour`` shows.

- Garbage-collector pauses: a full collection walks every container the process
  holds; with the config, the drivers and the imported modules that took ~300 ms at
  1,000 devices, a stall every second or so at 20,000 readings/s. Once the gateway is
  up, what startup built is moved out of the collector's sight (``gc.freeze``: it
  lives as long as the process anyway) and full collections come every few minutes
  instead of every second (the hot path makes no reference cycles: its garbage goes by
  reference counting). Undone when the probe stops.

Nothing here is on the hot path: one wake-up per ``interval``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import time
from typing import Any

IO_FILE = "/proc/self/io"
RATE_SAMPLE_EVERY = 60.0
RATE_WINDOW = 3600.0
# A wake-up this much later than asked counts as a stall in the total.
STALL_SECONDS = 0.020
# (allocations between young collections, young collections between middle ones,
# middle collections before a full one is considered): Python's default is (700, 10, 10);
# a full collection every ~100 middle ones instead of 10 (a second at 20,000 readings/s
# became minutes), the younger ones a little larger and rarer.
GC_THRESHOLDS = (2000, 10, 100)


@contextlib.contextmanager
def short_gc_pauses():
    """Freeze what exists now out of the collector's reach; collect the young less often."""
    gc.collect()
    gc.freeze()
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def write_bytes(io_file: str = IO_FILE) -> int | None:
    """Bytes this process caused to be written to storage so far (None off Linux)."""
    try:
        with open(io_file, "rb") as f:
            for line in f:
                if line.startswith(b"write_bytes:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class ProcessProbe:
    """Measures the event loop's lag and the process's disk writes while it runs."""

    def __init__(self, *, interval: float = 0.05, window: int = 1200):
        self.interval = interval
        self._lags: collections.deque[float] = collections.deque(maxlen=window)
        self.stalls = 0  # wake-ups later than STALL_SECONDS
        self.max_lag = 0.0  # since start
        self._io: collections.deque[tuple[float, int]] = collections.deque()
        first = write_bytes()
        if first is not None:
            self._io.append((time.monotonic(), first))

    async def run(self) -> None:
        """Sample until cancelled (with the startup heap frozen: short GC pauses)."""
        with short_gc_pauses():
            await self._sample()

    async def _sample(self) -> None:
        interval = self.interval
        loop = asyncio.get_running_loop()
        next_io = loop.time() + RATE_SAMPLE_EVERY
        while True:
            asked = loop.time()
            await asyncio.sleep(interval)
            now = loop.time()
            self.record(now - asked - interval)
            if now >= next_io:
                next_io = now + RATE_SAMPLE_EVERY
                self.sample_io()

    def record(self, lag: float) -> None:
        lag = max(0.0, lag)
        self._lags.append(lag)
        if lag > STALL_SECONDS:
            self.stalls += 1
        if lag > self.max_lag:
            self.max_lag = lag

    def sample_io(self) -> None:
        value = write_bytes()
        if value is None:
            return
        now = time.monotonic()
        self._io.append((now, value))
        while len(self._io) > 2 and self._io[1][0] <= now - RATE_WINDOW:
            self._io.popleft()

    def lag_quantile(self, q: float) -> float:
        """The ``q`` quantile of the recent lags (0 before the first sample)."""
        lags = sorted(self._lags)
        if not lags:
            return 0.0
        return lags[min(len(lags) - 1, int(q * len(lags)))]

    def bytes_per_hour(self) -> float | None:
        """Bytes written per hour over the last hour (since start if shorter)."""
        now_bytes = write_bytes()
        if now_bytes is None or not self._io:
            return None
        then, then_bytes = self._io[0]
        elapsed = time.monotonic() - then
        if elapsed <= 0:
            return None
        return (now_bytes - then_bytes) * 3600.0 / elapsed

    def stats(self) -> dict[str, Any]:
        """Numbers for /metrics: keys ending in ``_total`` only grow."""
        return {
            "event_loop_lag_p99_seconds": self.lag_quantile(0.99),
            "event_loop_lag_max_seconds": max(self._lags, default=0.0),
            "event_loop_stalls_total": self.stalls,
            "disk_write_bytes_total": write_bytes() or 0,
            "disk_write_bytes_per_hour": self.bytes_per_hour() or 0.0,
        }


def lock_holder(lock_path: str, locks_file: str = "/proc/locks") -> int | None:
    """The pid holding an flock on ``lock_path`` (the gateway, on its outbox), or None."""
    import os

    try:
        st = os.stat(lock_path)
        with open(locks_file) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5].lower() == want:
            try:
                return int(parts[4])
            except ValueError:
                return None
    return None


def process_writes(pid: int) -> dict[str, float] | None:
    """Bytes process ``pid`` wrote to storage since it started, and per hour on average
    (None if it cannot be read: gone, or another user's without the rights)."""
    import os

    try:
        total = write_bytes(f"/proc/{pid}/io")
        with open(f"/proc/{pid}/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if total is None:
        return None
    running = max(1.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    return {"pid": pid, "write_bytes": total, "running_seconds": running,
            "write_bytes_per_hour": total * 3600.0 / running}
