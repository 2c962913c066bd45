"""The machinery every upstream sink gets: a bounded buffer, batching, retries, counts.

A sink only speaks its protocol (``write(lines)``, raising SinkRetryable or
SinkRejected); this runner decides when to write, how much, what to do on
failure, and counts it all.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Protocol

from gateway.backoff import Backoff
from gateway.errors import SinkRejected, SinkRetryable

log = logging.getLogger(__name__)


class Sink(Protocol):
    name: str

    async def write(self, lines: list[str]) -> None: ...

    async def close(self) -> None: ...


class SinkRunner:
    """Feeds one sink from its own bounded buffer of encoded lines.

    Overflow drops the oldest lines (counted in ``dropped``): memory stays
    bounded through a long outage. Alarms never pass through here.
    """

    def __init__(self, sink: Sink, *, batch_size: int, flush_interval: float,
                 max_buffered: int, clock):
        self.sink = sink
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._buffer: deque[str] = deque()
        self._max = max_buffered
        self._clock = clock
        self._ready = asyncio.Event()
        self._popped = 0  # lines ever removed from the head, to track the batch under way
        self.written = 0
        self.dropped = 0
        self.rejected = 0
        self.errors = 0
        self.last_success: float | None = None
        self.last_error: str | None = None

    @property
    def buffered(self) -> int:
        """Lines waiting to be written."""
        return len(self._buffer)

    def offer(self, lines: list[str]) -> None:
        """Queue lines for the sink, dropping the oldest past the bound."""
        buf = self._buffer
        buf.extend(lines)
        excess = len(buf) - self._max
        if excess > 0:
            for _ in range(excess):
                buf.popleft()
            self._popped += excess
            if not self.dropped:
                log.error("%s: buffer full (%d lines), dropping the oldest", self.sink.name, self._max)
            self.dropped += excess
        if len(buf) >= self.batch_size:
            self._ready.set()

    async def run(self) -> None:
        """Write batches until cancelled."""
        backoff = Backoff(initial=0.5, cap=30.0)
        failing = False
        while True:
            if len(self._buffer) < self.batch_size:
                try:
                    async with asyncio.timeout(self.flush_interval):
                        await self._ready.wait()
                except TimeoutError:
                    pass
            self._ready.clear()
            if not self._buffer:
                continue
            try:
                await self.write_batch()
            except SinkRetryable as exc:
                self.errors += 1
                self.last_error = str(exc)
                if not failing:
                    log.error("%s: write failed, will retry: %s", self.sink.name, exc)
                failing = True
                delay = backoff.next_delay()
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, 300.0))
                await asyncio.sleep(delay)
                continue
            if failing:
                log.info("%s: writing again, %d lines waiting", self.sink.name, len(self._buffer))
            failing = False
            backoff.reset()

    async def write_batch(self) -> int:
        """Write the oldest batch; on success remove it. Returns lines written."""
        n = min(self.batch_size, len(self._buffer))
        batch = [self._buffer[i] for i in range(n)]
        head = self._popped
        try:
            await self.sink.write(batch)
        except SinkRejected as exc:
            self.rejected += n
            self.last_error = str(exc)
            log.error("%s: batch of %d lines rejected, skipped: %s", self.sink.name, n, exc)
        else:
            self.written += n
            self.last_success = self._clock.time()
        # Overflow may have dropped part of this batch from the head meanwhile.
        remaining = max(0, n - (self._popped - head))
        for _ in range(remaining):
            self._buffer.popleft()
        self._popped += remaining
        return n

    async def flush(self) -> None:
        """Write everything buffered now (used at shutdown); stops at the first error."""
        while self._buffer:
            await self.write_batch()
