"""The machinery every upstream sink gets: reading from the outbox, batching, retries, counts.

A sink only speaks its protocol: ``write(items)`` raising SinkRetryable or
SinkRejected. Its runner reads the rows after the sink's own cursor from the
durable outbox, in id order, a batch at a time; writes them; and moves the
cursor once the upstream confirmed them (HTTP 2xx, PUBACK). So each sink goes at
its own pace, and what one sink has not confirmed stays on disk for it.

- Retryable failures (network, 5xx, 429): exponential backoff with full jitter,
  capped at ``RETRY_CAP`` (5 s), so the sink is writing again within 5 s of its
  upstream's return. What keeps that from hammering a server that is down is the
  size of the retry, not its spacing: while failing, each attempt carries one row
  (the write is its own liveness probe: same path, same auth, a few hundred
  bytes), and full batches resume once it is taken. A separate health probe was
  not chosen: sinks would each need one (InfluxDB /health, an MQTT connect), and
  a probe that passes while the write path fails would only mislead. A
  ``Retry-After`` from the upstream is waited out (up to 5 minutes).
- Refusals (400, 413, 422): the batch is split in halves until the refused rows
  are alone; those go to the outbox's quarantine (counted and logged) and the
  rest is written, so one bad row neither blocks the queue nor takes its
  neighbours with it.
- New rows wake the runner (``notify``), and it sends them at once, before their
  commit (see gateway.outbox.writer): what arrives while a batch is out goes in the
  next one, so batches grow with the load and latency stays one round trip.
- A backlog (rows committed more than ``BACKLOG_FLUSHES`` flush intervals ago and
  still unsent: after an outage or a restart) drains at most ``drain_rate_multiple``
  times the live ingest rate (at least ``drain_min_rate`` rows/s); live rows are
  never paced. All in this task: alarms never go through here, and the pipeline
  never waits for it.
- A stop does not forget a write in flight. The write and what follows from it
  (quarantine, the cursor) run in a task of their own that the stop's cancellation
  does not reach: a write may complete although its caller was cancelled (a local
  file's append in a worker thread always does), and the shutdown's ``flush``
  would otherwise send that batch a second time. ``flush`` waits for it first (the
  gateway bounds the whole flush, so a stuck upstream cannot hold the stop), and
  ``close`` cancels one still running.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from gateway.backoff import Backoff
from gateway.errors import OutboxError, SinkError, SinkRejected, SinkRetryable

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 300.0
# The longest wait between attempts while the upstream fails (full jitter below it:
# on average one one-row attempt per 2.5 s).
RETRY_CAP = 5.0
# Rows in an attempt while the upstream is failing.
PROBE_ROWS = 1
# Unsent rows committed longer ago than this many flush intervals are a backlog.
BACKLOG_FLUSHES = 5
# At close, how long a cancelled write in flight gets to end (a sink that ignores its
# cancellation must not hold the stop).
CLOSE_WAIT = 1.0


class Sink(Protocol):
    name: str
    # What the sink takes from each outbox row: "line" (line protocol, the
    # default) or "doc" ((device, telemetry JSON) pairs).
    payload: str

    async def write(self, items: list[Any]) -> None: ...

    async def close(self) -> None: ...


class SinkRunner:
    """Feeds one sink from the outbox, after its own cursor."""

    def __init__(self, sink: Sink, *, outbox, batch_size: int, flush_interval: float, clock,
                 drain_rate_multiple: float | None = None, drain_min_rate: float = 500.0):
        self.sink = sink
        self.name = sink.name
        self.payload = getattr(sink, "payload", "line")
        self.outbox = outbox
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.drain_rate_multiple = drain_rate_multiple
        self.drain_min_rate = drain_min_rate
        self._clock = clock
        self._ready = asyncio.Event()
        self._backoff = Backoff(initial=0.5, cap=RETRY_CAP)
        self.cursor = 0  # the last row id the sink confirmed (persisted in the outbox)
        self.oldest_ts: float | None = None  # of the first row after the cursor (the writer keeps it)
        self.written = 0
        self.quarantined = 0
        self.dropped = 0
        self.errors = 0
        self.last_success: float | None = None
        self.last_error: str | None = None
        self.failing = False
        # The batch being written, when the task that started it was cancelled meanwhile.
        self._in_flight: asyncio.Task[int] | None = None
        outbox.attach(self)

    # -- the outbox writer's side ---------------------------------------------------------

    def start_at(self, cursor: int) -> None:
        """Where the sink's confirmed rows end, as the outbox knows it."""
        self.cursor = cursor

    def notify(self, head: int) -> None:
        """New rows came, up to id ``head``: they can go out now (before their commit)."""
        if head > self.cursor:
            self._ready.set()

    def lost(self, rows: int) -> None:
        """Count rows dropped (budget, full memory) before this sink got them."""
        self.dropped += rows

    @property
    def lag(self) -> int:
        """Rows after the cursor, committed or not (an upper bound: dropped ids are counted)."""
        return max(0, self.outbox.head - self.cursor)

    # -- the task --------------------------------------------------------------------------

    async def run(self) -> None:
        """Write batches until cancelled."""
        while True:
            if not self.lag:  # woken by new rows, not by a timer
                await self._ready.wait()
            self._ready.clear()
            if not self.lag:
                continue
            started = self._clock.monotonic()
            try:
                rows = await self.send_batch()
            except (SinkRetryable, OutboxError) as exc:
                self._failed(str(exc))
                await asyncio.sleep(self.retry_delay(exc))
                continue
            except Exception as exc:  # a bug in one sink must not stop the gateway
                self._failed(f"internal error: {exc!r}", bug=True)
                await asyncio.sleep(self.retry_delay(exc))
                continue
            if not rows:  # the ids after the cursor were dropped, or are not readable yet
                await self._ready.wait()  # (never a busy loop: the next add or commit wakes it)
                continue
            self._backoff.reset()
            await self._pace(rows, self._clock.monotonic() - started)

    def _failed(self, error: str, *, bug: bool = False) -> None:
        # Called in an except block: a bug's traceback is logged, once per outage.
        self.errors += 1
        self.last_error = error
        if not self.failing:
            log.error("%s: write failed, will retry: %s", self.name, error, exc_info=bug)
        self.failing = True

    def retry_delay(self, exc: Exception) -> float:
        """The wait before the next attempt: backoff with jitter, at least a Retry-After."""
        delay = self._backoff.next_delay()
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        return delay

    def drain_rate(self) -> float | None:
        """Rows/s a backlog may go out at now (None: no limit)."""
        if self.drain_rate_multiple is None:
            return None
        return max(self.drain_rate_multiple * self.outbox.live_rate, self.drain_min_rate)

    @property
    def draining(self) -> bool:
        """Whether the rows after the cursor are a backlog (paced) rather than live rows."""
        return self.cursor < self.outbox.committed_before(BACKLOG_FLUSHES * self.flush_interval)

    async def _pace(self, rows: int, took: float) -> None:
        # Only a backlog is paced: live rows (a burst included) go out as they come.
        rate = self.drain_rate()
        if rate is None or not self.draining:
            return
        wait = rows / rate - took
        if wait > 0:
            await asyncio.sleep(wait)

    async def send_batch(self) -> int:
        """Write the rows after the cursor, one batch (one row while the upstream is
        failing); return how many rows it consumed."""
        limit = PROBE_ROWS if self.failing else self.batch_size
        rows = await self.outbox.read(self.cursor, limit, self.payload)
        if not rows:
            return 0
        # Shielded: a cancellation leaves the delivery running, for flush() or close().
        delivery = asyncio.create_task(self._deliver(rows), name=f"sink[{self.name}].write")
        self._in_flight = delivery
        try:
            return await asyncio.shield(delivery)
        finally:
            if delivery.done():
                self._in_flight = None

    async def _deliver(self, rows: list[tuple]) -> int:
        """Write one batch read from the outbox; move the cursor past it once confirmed."""
        if self.payload == "line":
            ids = [r[0] for r in rows]
            items: list[Any] = [r[1] for r in rows]
        else:  # rows committed while no sink wanted JSON have none: nothing to send
            kept = [r for r in rows if r[2] is not None]
            ids = [r[0] for r in kept]
            items = [(r[1], r[2]) for r in kept]
        if items:
            refused = await self._write(ids, items)
            if self.failing:  # the upstream took a batch: say so before anything else waits
                log.info("%s: writing again, %d rows waiting", self.name, self.lag)
                self.failing = False
            if refused:
                await self._quarantine(refused, len(items))
            if self.failing:  # the one-row try got through: full batches from now on
                log.info("%s: writing again, %d rows waiting", self.name, self.lag)
                self.failing = False
            self._backoff.reset()
        # Confirmed: the cursor moves now, its copy on disk just after. Should that copy
        # lag (a crash in between), the rows go out again, which the upstream absorbs.
        self.cursor = rows[-1][0]
        self.last_success = self._clock.time()
        await self.outbox.advance(self.name, self.cursor)
        return len(rows)

    async def _write(self, ids: list[int], items: list[Any]) -> list[tuple[int, Any, SinkRejected]]:
        """Write, halving a refused batch until the refused rows are alone; return those."""
        try:
            await self.sink.write(items)
        except SinkRejected as exc:
            if len(items) == 1:
                return [(ids[0], items[0], exc)]
            mid = len(items) // 2
            return (await self._write(ids[:mid], items[:mid])
                    + await self._write(ids[mid:], items[mid:]))
        self.written += len(items)
        return []

    async def _quarantine(self, refused: list[tuple[int, Any, SinkRejected]], batch: int) -> None:
        first_id, first_item, first_exc = refused[0]
        by_error: dict[tuple[int | None, str], list[int]] = {}
        for row_id, _, exc in refused:
            by_error.setdefault((exc.status, exc.detail), []).append(row_id)
        for (status, detail), ids in by_error.items():
            await self.outbox.quarantine(self.name, ids, status, detail)
        self.quarantined += len(refused)
        self.last_error = str(first_exc)
        log.error("%s: %d of %d rows refused for good, moved to quarantine (%d so far): %s; "
                  "first: %.200s", self.name, len(refused), batch, self.quarantined,
                  first_exc.detail, first_item)

    async def flush(self) -> None:
        """Write everything committed now (at shutdown); stops at the first error.

        A write the stop interrupted is waited for first: if the upstream took it, the
        cursor is past it and it is not sent again. The caller bounds the wait (a
        cancellation here cancels that write too)."""
        await self._settle()
        while self.lag:
            if not await self.send_batch():
                break

    async def _settle(self) -> None:
        delivery, self._in_flight = self._in_flight, None
        if delivery is None or delivery.cancelled():
            return
        try:
            await delivery
        except (SinkError, OutboxError) as exc:  # its rows are still after the cursor
            log.info("%s: the write interrupted by the stop failed (%s); trying again", self.name,
                     exc)
        except Exception:  # a bug: its traceback; the rows are still after the cursor
            log.exception("%s: the write interrupted by the stop failed", self.name)

    async def close(self) -> None:
        """Cancel a write still in flight (a flush that never came or gave up), then close
        the sink."""
        delivery, self._in_flight = self._in_flight, None
        if delivery is not None:
            if not delivery.done():
                delivery.cancel()
                await asyncio.wait([delivery], timeout=CLOSE_WAIT)
            if delivery.done() and not delivery.cancelled():
                delivery.exception()  # retrieved: what it was is no longer anyone's concern
        await self.sink.close()

    # -- metrics ----------------------------------------------------------------------------

    def stats(self) -> dict[str, float]:
        """Numbers for /metrics, named as gateway.operations.metrics says: ``_total`` only
        grows, other names end in their unit, flags are 0/1."""
        oldest = self.oldest_ts
        out = {
            "written_total": self.written,
            "dropped_total": self.dropped,
            "quarantined_total": self.quarantined,
            "errors_total": self.errors,  # failed write attempts
            "lag_rows": self.lag,
            "cursor": self.cursor,
            "oldest_unsent_age_seconds": 0.0 if oldest is None or not self.lag
            else max(0.0, self._clock.time() - oldest),
            "up": 0 if self.failing else 1,
            "draining": int(self.draining),
        }
        if self.last_success is not None:
            out["last_success_timestamp_seconds"] = self.last_success
        return out
