"""The outbox's writer: stages rows from the pipeline, commits them in batches, keeps the file in shape.

The pipeline hands rows over with ``add()``, which never waits on the disk; each row
gets its id there, and the sink runners are woken at once: they read new rows from
memory and send them before they are committed. The writer task commits every
``commit_interval`` the rows that came at least ``grace`` seconds ago and that some
sink has still not confirmed (or at once when ``commit_rows`` wait): one transaction
and one fsync per batch. Rows every sink confirmed before their commit was due never
reach the disk: on an SD card that is nearly every row while the upstreams are up,
and it is safe, because a confirmed row is already where it was going and a cursor
on disk only ever moves past rows that are on disk (``committed_id``: every row up to
it is on disk or confirmed by every sink). So latency does not wait for a commit, and
the disk is written for what actually waits (an outage, a slow upstream).
After each commit it deletes what every sink has confirmed, holds the disk budget
(oldest readings first, never events) and refreshes the ages the metrics show.

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
# Rows a sink confirms within this long after they came are never committed: the
# sinks' latency target (p99 250 ms) leaves nearly every row under it.
SEND_GRACE = 0.25
# Committed rows kept in memory for the sinks to read (past it they read the file).
MEMORY_ROWS = 50_000
_ID = 5  # a staged row is (kind, device, ts, line, doc, id)

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
                 clock, on_alarm: AlarmHook | None = None, grace: float = SEND_GRACE):
        self.store = store
        self.commit_interval = commit_interval
        self.grace = min(grace, commit_interval / 2)
        self.commit_rows = commit_rows
        self.max_staged = max(max_staged, commit_rows)
        self._clock = clock
        self._on_alarm = on_alarm or _no_hook
        self._staged: list[tuple] = []  # rows after committed_id: (kind, device, ts, line, doc, id)
        self._kept: list[tuple] = []  # committed rows still in memory for the sinks to read
        self._committing: list[tuple] = []  # rows of the commit under way (readable too)
        self.head = 0  # the id of the newest row added
        # Set by open(), from the store:
        self._disk_head: int  # the newest id written to the store
        self._persisted: dict[str, int]  # each sink's cursor as the store has it
        self._purged_upto: int  # the newest id purged (or before the oldest cursor)
        self.skipped = 0  # rows every sink confirmed before their commit: never written
        self.written_rows = 0  # rows written to the store
        self._due = asyncio.Event()
        self._sinks: list[Cursor] = []
        self._backoff = Backoff()  # 0.5 s, doubling up to 30 s
        self._added = 0
        self._rate_mark: tuple[float, int]  # (when, rows added then): set by open()
        self._purged_at = 0.0
        self._commit_times: list[float] = []  # monotonic time of each recent commit ...
        self._commit_heads: list[int] = []  # ... and the head it reached
        self._history_floor = 0  # the head before the oldest commit kept (read before open())
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
        # A cursor never passes the file's head, but be sure ids only ever grow.
        self.committed_id = max([self.committed_id, *cursors.values()])
        self.head = self._disk_head = self.committed_id
        self._persisted = dict(cursors)
        for sink in self._sinks:
            sink.start_at(cursors[sink.name])
        self._purged_upto = min([self.committed_id, *cursors.values()])
        self._rate_mark = (self._clock.monotonic(), self._added)
        await self._maintain()

    async def close(self) -> None:
        """Close the store (after ``flush``)."""
        await self._call(self.store.close)

    # -- the pipeline's side ---------------------------------------------------------------

    def add(self, rows: list[Row]) -> None:
        """Stage rows for the next commit, each with its id; wake the sinks. Never waits."""
        staged = self._staged
        first = self.head + 1
        staged.extend([(*row, i) for i, row in enumerate(rows, first)])
        self.head = head = first + len(rows) - 1
        self._added += len(rows)
        if len(staged) >= self.commit_rows:
            self._due.set()
            if len(staged) > self.max_staged:
                self._shed_staged()
        for sink in self._sinks:
            sink.notify(head)

    @property
    def staged(self) -> int:
        """Rows waiting for their commit."""
        return len(self._staged)

    # -- the writer task ------------------------------------------------------------------

    async def run(self) -> None:
        """Commit and maintain until cancelled.

        Every ``commit_interval`` (sooner when ``commit_rows`` wait): note the newest
        row, wait ``grace``, then commit the rows up to that note that some sink has
        not confirmed yet. While commits fail, retry everything with backoff."""
        while True:
            if self.failing is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._backoff.next_delay()):
                        await self._due.wait()
                self._due.clear()
                self._measure_rate()
                await self.commit()
                await self._maintain()
                continue
            if len(self._staged) < self.commit_rows:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.commit_interval - self.grace):
                        await self._due.wait()
            self._due.clear()
            upto = self.head
            await asyncio.sleep(self.grace)  # what the sinks confirm meanwhile is not written
            self._measure_rate()
            await self.commit(upto)
            await self._maintain()

    async def flush(self) -> None:
        """Commit whatever is staged now (at shutdown)."""
        await self.commit()

    async def commit(self, upto: int | None = None) -> int:
        """Commit the staged rows (up to id ``upto``) that not every sink has confirmed;
        on failure they stay staged. Returns rows committed."""
        staged = self._staged
        cut = len(staged) if upto is None else bisect.bisect_right(staged, upto, key=_row_id)
        if not cut:
            return 0
        rows, self._staged = staged[:cut], staged[cut:]
        self._committing = rows
        try:
            return await self._commit(rows)
        finally:
            self._committing = []

    async def _commit(self, rows: list[tuple]) -> int:
        last = rows[-1][_ID]
        done = 0  # rows every sink has confirmed
        if self._sinks:
            done = bisect.bisect_right(rows, min(s.cursor for s in self._sinks), key=_row_id)
        if done == len(rows):  # every sink has them: nothing to write
            self.skipped += done
            self._committed(last, 0, rows)
            return 0
        todo = rows[done:]
        cursors = self._cursor_moves(todo[-1][_ID])
        task = asyncio.ensure_future(self._call(self._store_commit, todo, cursors))
        try:
            await asyncio.shield(task)
        except OutboxError as exc:
            self._staged[:0] = rows  # back in front, order kept
            await self._commit_failed(exc)
            return 0
        except asyncio.CancelledError:
            # The commit goes on in its thread: learn its outcome, so the rows are
            # either committed or staged again for the flush at shutdown.
            try:
                await task
            except OutboxError:
                self._staged[:0] = rows
            else:
                self._written(todo, cursors)
                self.skipped += done
                self._committed(last, len(todo), rows)
            raise
        self._written(todo, cursors)
        self.skipped += done
        self._committed(last, len(todo), rows)
        return len(todo)

    def _store_commit(self, rows: list[tuple], cursors: dict[str, int]) -> int:
        return self.store.append_rows(rows, cursors)

    def _cursor_moves(self, disk_head: int) -> dict[str, int]:
        """Cursors the store should hold after rows up to ``disk_head`` are on it: a
        cursor on disk never passes the rows on disk."""
        moves = {}
        for sink in self._sinks:
            at = min(sink.cursor, disk_head)
            if at > self._persisted[sink.name]:
                moves[sink.name] = at
        return moves

    def _written(self, rows: list[tuple], cursors: dict[str, int]) -> None:
        self._disk_head = max(self._disk_head, rows[-1][_ID])
        for name, at in cursors.items():
            self._persisted[name] = max(self._persisted[name], at)

    def _committed(self, head: int, n: int, rows: list[tuple]) -> None:
        self.committed_id = head
        self.accepted += len(rows)
        self.written_rows += n
        kept = self._kept
        kept.extend(rows)
        del kept[:max(0, len(kept) - MEMORY_ROWS)]
        now = self._clock.monotonic()
        self._commit_times.append(now)
        self._commit_heads.append(head)
        cut = bisect.bisect_left(self._commit_times, now - COMMIT_HISTORY)  # older than kept
        if cut:
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
        dropped: list[int] = []
        for row in self._staged:
            if len(dropped) < excess and row[0] == READING:
                dropped.append(row[_ID])
            else:
                kept.append(row)
        self._staged = kept
        if dropped:
            self._count_dropped(len(dropped), "staged in memory (commits too slow or failing)")
            for sink in self._sinks:  # what a sink already sent is not lost to it
                sink.lost(len(dropped) - bisect.bisect_right(dropped, sink.cursor))

    # -- upkeep after commits ---------------------------------------------------------------

    async def _maintain(self) -> None:
        """Delete what every sink confirmed, hold the budget, refresh the ages."""
        self._trim_kept()
        try:
            moves = self._cursor_moves(self._disk_head)
            if moves:  # confirmed rows that are on disk: say so before they are sent again
                await self._persist_cursors(moves)
            await self._purge()
            await self._enforce_budget()
            ages = [self._oldest_in_memory(s.cursor) for s in self._sinks]
            if any(a is _ON_DISK for a in ages):
                on_disk = await self._call(_oldest_after, self.store,
                                           [s.cursor for s, a in zip(self._sinks, ages)
                                            if a is _ON_DISK])
                it = iter(on_disk)
                ages = [next(it) if a is _ON_DISK else a for a in ages]
        except OutboxError as exc:
            if self.failing is None:
                log.warning("%s (upkeep; will try again)", exc)
            return
        for sink, ts in zip(self._sinks, ages):
            sink.oldest_ts = ts
        self.oldest_ts = min((t for t in ages if t is not None), default=None)

    def _trim_kept(self) -> None:
        """Committed rows every sink has passed leave memory."""
        if self._kept:
            confirmed = min((s.cursor for s in self._sinks), default=self.committed_id)
            cut = bisect.bisect_right(self._kept, confirmed, key=_row_id)
            if cut:
                del self._kept[:cut]

    def _oldest_in_memory(self, cursor: int):
        """The timestamp of the first row after ``cursor`` if memory holds it (None: no
        row after it), else ``_ON_DISK``."""
        if cursor + 1 < self._first_in_memory() and cursor < self._disk_head and self.store.rows:
            return _ON_DISK
        for rows in (self._kept, self._committing, self._staged):
            i = bisect.bisect_right(rows, cursor, key=_row_id)
            if i < len(rows):
                return rows[i][2]
        return None

    def _first_in_memory(self) -> int:
        for part in (self._kept, self._committing, self._staged):
            if part:
                return part[0][_ID]
        return self.head + 1

    def _store_cursors(self, moves: dict[str, int]) -> None:
        for name, at in moves.items():  # (in the worker thread: no state of ours here)
            self.store.advance(name, at)

    async def _persist_cursors(self, moves: dict[str, int]) -> None:
        await _to_the_end(self._call(self._store_cursors, moves),
                          ", ".join(f"{name}: cursor move to row {at}" for name, at in moves.items()))
        for name, at in moves.items():
            self._persisted[name] = max(self._persisted.get(name, 0), at)

    async def _purge(self) -> None:
        if not self._sinks or not self.store.rows:
            return
        upto = min(min(s.cursor for s in self._sinks), self._disk_head)
        now = self._clock.monotonic()
        if upto > self._purged_upto and (upto - self._purged_upto >= PURGE_ROWS
                                         or now - self._purged_at >= PURGE_EVERY):
            await self._call(self.store.purge, upto)
            self._purged_upto = upto
            self._purged_at = now

    async def _enforce_budget(self) -> None:
        dropped = await self._call(self.store.enforce_budget)
        if dropped:
            if self._kept:  # gone from the file: gone for the sinks too
                gone = set(dropped)
                self._kept = [r for r in self._kept if r[_ID] not in gone]
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
        """Rows after id ``after``, shaped as the store's ``read``: from memory when it
        holds them (staged rows included: a row goes out before its commit), else
        from the store (a backlog)."""
        if after + 1 < self._first_in_memory() and after < self._disk_head and self.store.rows:
            rows = await self._call(self.store.read, after, limit, payload)
            if rows:
                return rows
        chunk: list[tuple] = []
        for part in (self._kept, self._committing, self._staged):
            i = bisect.bisect_right(part, after, key=_row_id)
            chunk += part[i:i + limit - len(chunk)]  # (nothing once the chunk is full)
        if payload == "line":
            return [(r[5], r[3]) for r in chunk]
        return [(r[5], r[1], r[4]) for r in chunk]

    async def advance(self, sink: str, last_id: int) -> None:
        """Note a sink's cursor. It goes to the store at once only when it passes rows
        on disk (else those would go out again after a restart); past rows that never
        reached the disk it needs no write at all. Runs to its end if cancelled."""
        at = min(last_id, self._disk_head)
        if at > self._persisted.get(sink, 0):  # (0: a name never attached)
            await self._persist_cursors({sink: at})

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
            "oldest_unsent_age_seconds": _age(now, self.oldest_ts),
            "committed_id": self.committed_id,
            "committed_total": self.accepted,
            "written_rows_total": self.written_rows,
            "skipped_rows_total": self.skipped,
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


_ON_DISK = object()


def _no_hook(rule: str, active: bool, message: str) -> None:
    """No one listens to the outbox's alarms."""


def _row_id(row: tuple) -> int:
    return row[_ID]


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
