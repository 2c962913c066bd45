"""The alarm state file: open alarms and every transition, in SQLite (WAL).

A listener on the alarm manager queues each transition in memory (a plain
append, the pipeline never waits); a writer task commits them in batches from a
thread (``asyncio.to_thread``). The open alarms are one row each, rewritten on
each transition and deleted when the alarm closes, so a restart finds exactly
the alarms that were open. Transitions are kept ``history_days``.

If the file cannot be written (disk full, read-only), the batch stays queued
and is retried with backoff; the failure is logged once, and once more when
writing works again. The queue is bounded by the transitions themselves: rules
only report changes of state, repeats of an open alarm are one row each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from pathlib import Path

from gateway import json_safe
from gateway.alarms.manager import Transition
from gateway.backoff import Backoff
from gateway.errors import GatewayError

log = logging.getLogger(__name__)

FILE_NAME = "alarms.sqlite3"
PRUNE_EVERY = 3600.0  # seconds between removals of transitions past history_days
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS open_alarms (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL,          -- Alarm.to_record() as JSON
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS transitions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    alarm_id TEXT NOT NULL,
    event TEXT NOT NULL,
    ts REAL NOT NULL,
    by TEXT,
    note TEXT,
    alarm TEXT NOT NULL            -- the alarm's public JSON after the transition
);
CREATE INDEX IF NOT EXISTS transitions_alarm ON transitions (alarm_id, seq);
CREATE INDEX IF NOT EXISTS transitions_ts ON transitions (ts);
"""


class StateFileError(GatewayError):
    """The alarm state file cannot be opened (bad directory, not a database)."""

    def __init__(self, path: Path, detail: str):
        self.path = path
        self.detail = detail
        super().__init__(f"alarm state file {path}: {detail}")


class AlarmStore:
    """Open alarms and their history in ``<state_dir>/alarms.sqlite3``."""

    def __init__(self, *, state_dir: Path, history_days: float = 90.0, clock):
        self.path = Path(state_dir) / FILE_NAME
        self._history_days = history_days
        self._clock = clock
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()  # one writer at a time on the connection
        self._inflight: asyncio.Future | None = None
        self._pending: list[Transition] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.written = 0
        self.write_errors = 0

    # -- start and stop ------------------------------------------------------------------

    async def open(self) -> list[dict[str, object]]:
        """Open (or create) the file; return the records of the alarms open at the last stop."""
        try:
            return await asyncio.to_thread(self._open)
        except (OSError, sqlite3.Error) as exc:
            raise StateFileError(self.path, str(exc)) from exc

    def _open(self) -> list[dict[str, object]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints, fast
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("DELETE FROM transitions WHERE ts < ?",
                       (self._clock.time() - self._history_days * 86400,))
            rows = db.execute("SELECT record FROM open_alarms ORDER BY id").fetchall()
        except BaseException:
            db.close()
            raise
        self._db = db
        records = []
        for (text,) in rows:
            try:
                records.append(json.loads(text))
            except ValueError:
                log.error("alarm state file %s: an unreadable open alarm was skipped", self.path)
        return records

    async def close(self) -> None:
        """Write what is queued (best effort) and close the file."""
        with contextlib.suppress(sqlite3.Error, OSError):
            await self.flush_once()
        if self._db is not None:
            async with self._lock:
                db, self._db = self._db, None
                await asyncio.to_thread(db.close)

    # -- writing -------------------------------------------------------------------------

    def on_transition(self, transition: Transition) -> None:
        """Alarm manager listener: queue the transition for the writer."""
        self._pending.append(transition)
        self._idle.clear()
        self._wake.set()

    async def run(self) -> None:
        """The writer: commit queued transitions until cancelled (and, hourly, forget
        transitions older than ``history_days``)."""
        backoff = Backoff(initial=0.5, cap=30.0)
        failing = False
        pruned = self._clock.time()
        while True:
            try:
                async with asyncio.timeout(PRUNE_EVERY):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                if self._clock.time() - pruned >= PRUNE_EVERY:
                    pruned = self._clock.time()
                    async with self._lock:
                        await asyncio.to_thread(self._prune)
                await self.flush_once()
            except (sqlite3.Error, OSError) as exc:
                self.write_errors += 1
                if not failing:
                    log.error("alarm state file %s: cannot write (%s); %d transitions kept in "
                              "memory and retried", self.path, exc, len(self._pending))
                failing = True
                self._wake.set()
                await asyncio.sleep(backoff.next_delay())
                continue
            if failing:
                log.info("alarm state file %s: writing again", self.path)
                failing = False
                backoff.reset()

    async def flush_once(self) -> None:
        """Commit everything queued now, in one transaction.

        The write runs to its end even if this is cancelled (a stop): ``close``
        waits for it, so a batch is never written twice nor half.
        """
        async with self._lock:
            if self._inflight is not None:  # left by a cancelled flush; its result is handled
                with contextlib.suppress(sqlite3.Error, OSError):
                    await asyncio.shield(self._inflight)
            if not self._pending:
                self._idle.set()
                return
            if self._db is None:
                raise sqlite3.OperationalError("state file is not open")
            count = len(self._pending)
            self._inflight = asyncio.ensure_future(asyncio.to_thread(self._write, self._pending[:count]))
            self._inflight.add_done_callback(lambda fut: self._written(fut, count))
            await asyncio.shield(self._inflight)

    def _written(self, fut: asyncio.Future, count: int) -> None:
        self._inflight = None
        if fut.cancelled() or fut.exception() is not None:
            return  # still queued; the writer retries
        del self._pending[:count]
        self.written += count
        if not self._pending:
            self._idle.set()

    async def wait_written(self) -> None:
        """Wait until everything queued so far is in the file (tests, shutdown)."""
        await self._idle.wait()

    def _prune(self) -> None:
        cutoff = self._clock.time() - self._history_days * 86400
        db = self._db
        if db is not None:
            db.execute("DELETE FROM transitions WHERE ts < ?", (cutoff,))

    def _write(self, batch: list[Transition]) -> None:
        db = self._db
        assert db is not None
        latest: dict[str, Transition] = {}
        with db:  # BEGIN ... COMMIT, or ROLLBACK on error
            db.execute("BEGIN")
            for t in batch:
                alarm_id = str(t.alarm["id"])
                db.execute("INSERT INTO transitions (alarm_id, event, ts, by, note, alarm) "
                           "VALUES (?, ?, ?, ?, ?, ?)",
                           (alarm_id, t.event, t.ts, t.by, t.note, json_safe.dumps(t.alarm)))
                latest[alarm_id] = t
            for alarm_id, t in latest.items():
                if t.event == "closed" or t.record is None:
                    db.execute("DELETE FROM open_alarms WHERE id = ?", (alarm_id,))
                else:
                    db.execute("INSERT OR REPLACE INTO open_alarms (id, record, updated) "
                               "VALUES (?, ?, ?)", (alarm_id, json_safe.dumps(t.record), t.ts))

    # -- reading -------------------------------------------------------------------------

    async def history(self, *, alarm_id: str | None = None, limit: int = 100) -> list[dict[str, object]]:
        """Transitions, newest first: of one alarm, or of every alarm."""
        query = "SELECT alarm_id, event, ts, by, note, alarm FROM transitions"
        args: tuple = ()
        if alarm_id is not None:
            query += " WHERE alarm_id = ?"
            args = (alarm_id,)
        rows = await self._read(query + " ORDER BY seq DESC LIMIT ?", (*args, limit))
        return [{"alarm_id": a, "event": e, "ts": ts, "by": by, "note": note, "alarm": json.loads(j)}
                for a, e, ts, by, note, j in rows]

    async def recently_closed(self, *, since: float) -> list[str]:
        """Ids of the alarms closed since ``since`` (epoch seconds)."""
        rows = await self._read("SELECT DISTINCT alarm_id FROM transitions "
                                "WHERE event = 'closed' AND ts >= ?", (since,))
        return [r[0] for r in rows]

    async def _read(self, query: str, args: tuple) -> list[tuple]:
        # Readers get their own connection: WAL lets them run beside the writer.
        def read() -> list[tuple]:
            with contextlib.closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as db:
                return db.execute(query, args).fetchall()

        if self._db is None:
            return []
        return await asyncio.to_thread(read)
