"""The outbox's writer: stages rows from the pipeline, commits them in batches, keeps the file in shape.

The pipeline hands rows over with ``add()``, which never waits on the disk. The
writer task commits the staged rows when ``commit_rows`` wait or ``commit_interval``
has passed: one transaction and one fsync per batch, not per reading. A row counts
as accepted once committed (``committed_id`` is the high-water mark). After each
commit it deletes what every sink has confirmed, holds the disk budget (oldest
readings first, never events) and refreshes the ages the metrics show.

Nothing here raises out of ``run()`` for a disk problem: a failed commit keeps the
rows staged (bounded; past the bound the oldest readings go, counted), raises the
``outbox_write_failed`` alarm once and retries with backoff; a full disk also
shrinks the budget to what the disk holds. A file that cannot be opened at all
leaves the gateway running on an in-memory outbox, with the alarm up.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any, Protocol

from gateway.backoff import Backoff
from gateway.errors import OutboxError
from gateway.outbox.memory import MemoryOutbox
from gateway.outbox.store import READING, Row

log = logging.getLogger(__name__)

BUFFER_OVERFLOW = "buffer_overflow"
OUTBOX_WRITE_FAILED = "outbox_write_failed"
# The overflow alarm clears once the outbox is back under this share of its budget.
OVERFLOW_CLEAR_USAGE = 0.5
# Seconds over which the live ingest rate is averaged.
RATE_WINDOW = 10.0
# How far back commit times are kept (for telling a backlog from live rows).
COMMIT_HISTORY = 300.0
# Confirmed rows are deleted once this many have gathered (or at least every PURGE_EVERY s).
PURGE_ROWS = 5000
PURGE_EVERY = 5.0

AlarmHook = Callable[[str, bool, str], None]  # (rule, active, message)


class Cursor(Protocol):
    """What the writer needs of a sink runner."""

    name: str
    cursor: int
    oldest_ts: float | None
    quarantined: int  # rows refused for good, set aside

    def start_at(self, cursor: int) -> None: ...

    def notify(self, head: int) -> None: ...

    def lost(self, rows: int) -> None: ...


class OutboxWriter:
    """Owns the outbox store: the pipeline adds rows, sink runners read after their cursors."""

    def __init__(self, *, store, commit_interval: float, commit_rows: int, max_staged: int,
                 clock, on_alarm: AlarmHook | None = None):
        self.store = store
        self.commit_interval = commit_interval
        self.commit_rows = commit_rows
        self.max_staged = max(max_staged, commit_rows)
        self._clock = clock
        self._on_alarm = on_alarm or (lambda rule, active, message: None)
        self._staged: list[Row] = []
        self._due = asyncio.Event()
        self._sinks: list[Cursor] = []
        self._backoff = Backoff(initial=0.5, cap=30.0)
        self._added = 0
        self._rate_mark: tuple[float, int] | None = None
        self._purged_upto = 0
        self._purged_at = 0.0
        self._commit_times: list[float] = []  # monotonic time of each recent commit ...
        self._commit_heads: list[int] = []  # ... and the head it reached
        self._history_floor = 0  # the head before the oldest commit kept
        self._alarms: set[str] = set()
        self._fallback = False
        self.committed_id = 0
        self.accepted = 0
        self.dropped = 0
        self.commit_errors = 0
        self.failing: str | None = None  # why commits fail, while they do
        self.live_rate = 0.0
        self._rate_measured = False
        self.oldest_ts: float | None = None
        self.used_bytes = 0

    # -- wiring -------------------------------------------------------------------------

    def attach(self, sink: Cursor) -> None:
        """A sink runner reads from this outbox (call before ``open``)."""
        self._sinks.append(sink)

    async def open(self) -> None:
        """Open the store and place every sink at its cursor.

        If the file cannot be used, the gateway goes on with an in-memory outbox and
        the ``outbox_write_failed`` alarm says so.
        """
        names = [s.name for s in self._sinks]
        try:
            cursors = await self._call(self.store.open, names)
        except OutboxError as exc:
            log.error("%s; readings are kept in memory only (not across a restart)", exc)
            self.store = MemoryOutbox(max_rows=self.max_staged)
            cursors = self.store.open(names)
            self._fallback = True
            self._alarm(OUTBOX_WRITE_FAILED, True,
                        f"outbox unusable ({exc.detail}): readings kept in memory only")
        self.committed_id = self._history_floor = self.store.head  # what is there is a backlog
        for sink in self._sinks:
            sink.start_at(cursors[sink.name])
        self._purged_upto = min(cursors.values(), default=self.committed_id)
        self._rate_mark = (self._clock.monotonic(), self._added)
        await self._maintain()

    async def close(self) -> None:
        """Close the store (after ``flush``)."""
        await self._call(self.store.close)

    # -- the pipeline's side ---------------------------------------------------------------

    def add(self, rows: list[Row]) -> None:
        """Stage rows for the next commit; never waits."""
        staged = self._staged
        staged.extend(rows)
        self._added += len(rows)
        if len(staged) >= self.commit_rows:
            self._due.set()
            if len(staged) > self.max_staged:
                self._shed_staged()

    @property
    def staged(self) -> int:
        """Rows waiting for their commit."""
        return len(self._staged)

    # -- the writer task ------------------------------------------------------------------

    async def run(self) -> None:
        """Commit and maintain until cancelled."""
        while True:
            wait = self.commit_interval if self.failing is None else self._backoff.next_delay()
            if len(self._staged) < self.commit_rows or self.failing is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._due.wait()
            self._due.clear()
            self._measure_rate()
            await self.commit()
            await self._maintain()

    async def flush(self) -> None:
        """Commit whatever is staged now (at shutdown)."""
        await self.commit()

    async def commit(self) -> int:
        """Commit the staged rows; on failure they stay staged. Returns rows committed."""
        rows, self._staged = self._staged, []
        if not rows:
            return 0
        task = asyncio.ensure_future(self._call(self.store.append, rows))
        try:
            head = await asyncio.shield(task)
        except OutboxError as exc:
            self._staged[:0] = rows  # back in front, order kept
            await self._commit_failed(exc)
            return 0
        except asyncio.CancelledError:
            # The commit goes on in its thread: learn its outcome, so the rows are
            # either committed or staged again for the flush at shutdown.
            try:
                head = await task
            except OutboxError:
                self._staged[:0] = rows
            else:
                self._committed(head, len(rows))
            raise
        self._committed(head, len(rows))
        return len(rows)

    def _committed(self, head: int, n: int) -> None:
        self.committed_id = head
        self.accepted += n
        now = self._clock.monotonic()
        self._commit_times.append(now)
        self._commit_heads.append(head)
        if self._commit_times[0] < now - COMMIT_HISTORY:
            cut = bisect.bisect_left(self._commit_times, now - COMMIT_HISTORY)
            self._history_floor = self._commit_heads[cut - 1]
            del self._commit_times[:cut], self._commit_heads[:cut]
        if self.failing is not None:
            log.info("outbox %s: commits work again", self.store.path)
            self.failing = None
            self._backoff.reset()
            if not self._fallback:
                self._alarm(OUTBOX_WRITE_FAILED, False, "outbox writes work again")
        for sink in self._sinks:
            sink.notify(head)

    async def _commit_failed(self, exc: OutboxError) -> None:
        self.commit_errors += 1
        if self.failing is None:
            log.error("%s; %d rows held in memory, retrying", exc, len(self._staged))
            self._alarm(OUTBOX_WRITE_FAILED, True, f"outbox cannot commit: {exc.detail}")
        self.failing = exc.detail
        if exc.disk_full and self.store.blocking:
            # The disk holds less than the budget: shrink the budget to what fits, so
            # the oldest readings make room, as they would at the budget.
            with contextlib.suppress(OutboxError):
                used = await self._call(self.store.used_bytes)
                budget = max(64 * 1024, int(used * 0.9))
                if budget < self.store.budget_bytes:
                    log.error("outbox %s: the disk is full at %.1f MB; budget lowered to %.1f MB",
                              self.store.path, used / 1e6, budget / 1e6)
                    self.store.budget_bytes = budget
                await self._enforce_budget()
        if len(self._staged) > self.max_staged:
            self._shed_staged()

    def _shed_staged(self) -> None:
        """Past the in-memory bound, drop the oldest staged readings (events stay)."""
        excess = len(self._staged) - int(0.9 * self.max_staged)
        kept = []
        dropped = 0
        for row in self._staged:
            if dropped < excess and row[0] == READING:
                dropped += 1
            else:
                kept.append(row)
        self._staged = kept
        if dropped:
            self._count_dropped(dropped, "staged in memory (commits too slow or failing)")
            for sink in self._sinks:
                sink.lost(dropped)

    # -- upkeep after commits ---------------------------------------------------------------

    async def _maintain(self) -> None:
        """Delete what every sink confirmed, hold the budget, refresh the ages."""
        try:
            await self._purge()
            await self._enforce_budget()
            cursors = [s.cursor for s in self._sinks]
            ages = await self._call(_oldest_after, self.store, cursors)
        except OutboxError as exc:
            if self.failing is None:
                log.warning("%s (upkeep; will try again)", exc)
            return
        for sink, ts in zip(self._sinks, ages):
            sink.oldest_ts = ts
        self.oldest_ts = min((t for t in ages if t is not None), default=None)

    async def _purge(self) -> None:
        if not self._sinks:
            return
        upto = min(s.cursor for s in self._sinks)
        now = self._clock.monotonic()
        if upto > self._purged_upto and (upto - self._purged_upto >= PURGE_ROWS
                                         or now - self._purged_at >= PURGE_EVERY):
            await self._call(self.store.purge, upto)
            self._purged_upto = upto
            self._purged_at = now

    async def _enforce_budget(self) -> None:
        dropped = await self._call(self.store.enforce_budget)
        if dropped:
            self._count_dropped(len(dropped), "over the outbox budget")
            for sink in self._sinks:
                sink.lost(len(dropped) - bisect.bisect_right(dropped, sink.cursor))
        self.used_bytes = await self._call(self.store.used_bytes)
        if BUFFER_OVERFLOW in self._alarms and await self._call(self.store.usage) < OVERFLOW_CLEAR_USAGE:
            log.info("outbox back under %d%% of its budget", OVERFLOW_CLEAR_USAGE * 100)
            self._alarm(BUFFER_OVERFLOW, False, "outbox back under its budget")

    def _count_dropped(self, n: int, why: str) -> None:
        self.dropped += n
        if BUFFER_OVERFLOW not in self._alarms:
            log.error("outbox: dropping the oldest readings, %s (%d so far)", why, self.dropped)
            self._alarm(BUFFER_OVERFLOW, True,
                        f"upstream buffer full: oldest readings dropped ({why})")

    def _measure_rate(self) -> None:
        now = self._clock.monotonic()
        if self._rate_mark is None:
            self._rate_mark = (now, self._added)
            return
        then, added = self._rate_mark
        dt = now - then
        if dt <= 0:
            return
        instant = (self._added - added) / dt
        if self._rate_measured:
            self.live_rate += (1 - math.exp(-dt / RATE_WINDOW)) * (instant - self.live_rate)
        else:  # the first look sets it: no ramp up from zero after a start
            self.live_rate = instant
            self._rate_measured = True
        self._rate_mark = (now, self._added)

    def committed_before(self, age: float) -> int:
        """The newest id committed more than ``age`` seconds ago (everything at start
        counts as older). Rows up to it still unsent are a backlog, not live traffic."""
        cutoff = self._clock.monotonic() - min(age, COMMIT_HISTORY)
        i = bisect.bisect_right(self._commit_times, cutoff)
        return self._commit_heads[i - 1] if i else self._history_floor

    def _alarm(self, rule: str, active: bool, message: str) -> None:
        if active == (rule in self._alarms):
            return
        if active:
            self._alarms.add(rule)
        else:
            self._alarms.discard(rule)
        try:
            self._on_alarm(rule, active, message)
        except Exception:  # the alarm path must not stop the outbox
            log.exception("outbox alarm hook failed for %s", rule)

    # -- the sink runners' side ---------------------------------------------------------------

    async def read(self, after: int, limit: int, payload: str) -> list[tuple]:
        """Rows after id ``after`` (see the store's ``read``)."""
        return await self._call(self.store.read, after, limit, payload)

    async def advance(self, sink: str, last_id: int) -> None:
        """Persist a sink's cursor; runs to its end even if the caller is cancelled."""
        await _to_the_end(self._call(self.store.advance, sink, last_id),
                          f"{sink}: cursor move to row {last_id}")

    async def quarantine(self, sink: str, ids: list[int], status: int | None, error: str) -> int:
        """Move refused rows aside."""
        return await _to_the_end(self._call(self.store.quarantine, sink, ids, status, error,
                                            self._clock.time()),
                                 f"{sink}: quarantine of {len(ids)} rows")

    # -- metrics -------------------------------------------------------------------------------

    @property
    def alarms(self) -> frozenset[str]:
        """The outbox alarms up now."""
        return frozenset(self._alarms)

    def stats(self) -> dict[str, Any]:
        """Numbers for /metrics, named as gateway.operations.metrics says: ``_total`` only
        grows, other names end in their unit, flags are 0/1. Each sink's own numbers
        (lag, cursor, ...) are on its runner's ``stats()``."""
        now = self._clock.time()
        return {
            "rows": self.store.rows,
            "staged_rows": len(self._staged),
            "oldest_unsent_age_seconds": _age(now, self.oldest_ts) if self.store.rows else 0.0,
            "committed_id": self.committed_id,
            "committed_total": self.accepted,
            "dropped_total": self.dropped,
            "quarantined_total": sum(sink.quarantined for sink in self._sinks),
            "errors_total": self.commit_errors,
            "used_bytes": self.used_bytes,
            "budget_bytes": self.store.budget_bytes,
            "live_rate_rows_per_second": self.live_rate,
            "degraded": int(self._fallback or self.failing is not None),
            "overflow": int(BUFFER_OVERFLOW in self._alarms),
        }

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.store.blocking:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)


def _oldest_after(store, cursors: list[int]) -> list[float | None]:
    # One trip to the worker thread for every sink's oldest unsent row.
    return [store.oldest_ts(c) for c in cursors]


def _age(now: float, ts: float | None) -> float:
    return 0.0 if ts is None else max(0.0, now - ts)


async def _to_the_end(coro, what: str):
    """Await ``coro``; if cancelled meanwhile, still let it finish (a commit or a cursor
    move half-known is worse than a short delay), then re-raise the cancellation. Its
    failure then has no caller left to hear it: it is logged, saying ``what`` failed."""
    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        try:
            await task
        except Exception as exc:
            log.error("outbox: %s failed while stopping: %s", what, exc)
        raise
