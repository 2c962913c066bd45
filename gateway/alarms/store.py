"""The alarm state file: open alarms, every transition and the webhook deliveries
still owed, in SQLite (WAL).

A listener on the alarm manager queues each transition in memory (a plain
append, the pipeline never waits); a writer task commits them in batches from a
thread (``asyncio.to_thread``). The open alarms are one row each, rewritten on
each transition and deleted when the alarm closes, so a restart finds exactly
the alarms that were open. Transitions are kept ``history_days``, and at most
``max_transitions`` rows (the oldest go first, counted in ``history_pruned``):
a flood of operator commands cannot fill the disk.

Webhook senders journal their queue here (``webhook_saved``/``webhook_done``), in
the same transactions as the transitions, so the deliveries still owed to a
receiver that is down survive a restart (``webhook_backlog`` after ``open``).

A damaged file never stops the gateway: at ``open`` a file that is not a
database, or whose pages fail ``PRAGMA quick_check``, is moved aside
(``alarms.sqlite3.corrupt-<time>``, its -wal/-shm with it), a new one is
started with nothing restored, and ``moved_aside`` says so (the gateway raises
an alarm). A file that cannot be written at open (disk full, read-only, I/O
error) is read as far as it can be (the open alarms come back), and the writer
keeps trying to open it for writing; ``on_alarm`` tells while writes fail
(from the start of ``run``).

If the file cannot be written while running, the batch stays queued and is
retried with backoff; the failure is logged once, and once more when writing
works again. While it fails, at most ``max_pending`` transitions wait in memory
(the oldest history rows go first, counted in ``history_dropped``); the latest
state of each open alarm is kept apart and never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from gateway import json_safe
from gateway.alarms.manager import Transition
from gateway.backoff import Backoff
from gateway.errors import GatewayError

log = logging.getLogger(__name__)

FILE_NAME = "alarms.sqlite3"
PRUNE_EVERY = 3600.0  # seconds between removals of transitions past history_days
SCHEMA_VERSION = 2  # 2: webhook_pending
MAX_TRANSITIONS = 100_000  # rows of history kept at most (a row is 0.5-2 kB)
WAL_LIMIT_BYTES = 4 * 1024 * 1024
MAX_PENDING = 10_000  # transitions waiting in memory at most while the file fails
# The history cap is enforced once it is passed by this share: not a DELETE per batch.
PRUNE_SLACK = 0.05
STORE_WRITE_FAILED = "alarm_store_write_failed"
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
CREATE TABLE IF NOT EXISTS webhook_pending (
    endpoint TEXT NOT NULL,        -- WebhookSender.key (a hash of the URL, no secret)
    seq INTEGER NOT NULL,          -- the order of delivery
    alarm_id TEXT NOT NULL,
    event TEXT NOT NULL,
    body BLOB NOT NULL,            -- the JSON POSTed
    PRIMARY KEY (endpoint, seq)
);
"""

AlarmHook = Callable[[str, bool, str], None]  # (rule, active, message)
# A journalled webhook entry: (added, alarm_id, event, body), or None: delete. ``added``:
# queued since the last write, so not in the file yet (done before a write: no statement).
_HookOp = tuple[bool, str, str, bytes] | None


class StateFileError(GatewayError):
    """The alarm state file's directory cannot be used (not a directory, no permission)."""

    def __init__(self, path: Path, detail: str):
        self.path = path
        self.detail = detail
        super().__init__(f"alarm state file {path}: {detail}")


def is_damage(exc: BaseException) -> bool:
    """The file's content is broken (not a database, malformed pages), as opposed to
    the disk or the system refusing (full, read-only, I/O error, locked)."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


class AlarmStore:
    """Open alarms, their history and pending webhook deliveries in ``<state_dir>/alarms.sqlite3``."""

    def __init__(self, *, state_dir: Path, history_days: float = 90.0, clock,
                 max_transitions: int = MAX_TRANSITIONS, max_pending: int = MAX_PENDING,
                 on_alarm: AlarmHook | None = None):
        self.path = Path(state_dir) / FILE_NAME
        self._history_days = history_days
        self._clock = clock
        self.max_transitions = max_transitions
        self.max_pending = max_pending
        self._on_alarm = on_alarm or (lambda rule, active, message: None)
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()  # one writer at a time on the connection
        self._inflight: asyncio.Future | None = None
        self._pending: list[Transition] = []
        self._records: dict[str, dict[str, object] | None] = {}  # latest state per alarm; None: closed
        self._hooks: dict[tuple[str, int], _HookOp] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._history_rows = 0
        self._overflowing = False
        self.written = 0
        self.write_errors = 0
        self.history_pruned = 0  # transition rows removed for max_transitions
        self.history_dropped = 0  # transitions never written: max_pending passed while failing
        self.moved_aside: Path | None = None  # where a damaged file went at open
        self.damage: str | None = None  # what was wrong with it
        self.unwritable: str | None = None  # why the file cannot be written, while it cannot
        self.webhook_backlog: dict[str, list[tuple[int, str, str, bytes]]] = {}

    # -- start and stop ------------------------------------------------------------------

    async def open(self) -> list[dict[str, object]]:
        """Open (or create) the file; return the records of the alarms open at the last stop.

        Raises StateFileError only when the directory itself is unusable (a config
        problem); a damaged file or a full disk never stops the start.
        """
        return await asyncio.to_thread(self._open)

    def _open(self) -> list[dict[str, object]]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise StateFileError(self.path, str(exc)) from exc
        try:
            return self._open_writable(restore=True)
        except (sqlite3.Error, OSError) as exc:
            if is_damage(exc):
                return self._start_over(exc)
            return self._open_read_only(exc)

    def _open_writable(self, *, restore: bool) -> list[dict[str, object]]:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            if restore:  # every page read once: damage is found now, not in the middle of a night
                problems = [r[0] for r in db.execute("PRAGMA quick_check(5)").fetchall()]
                if problems != ["ok"]:
                    raise sqlite3.DatabaseError("quick_check: " + "; ".join(problems))
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed transition survives a power cut (NORMAL loses the WAL's
            # tail, found by tests/test_power_cut.py); transitions are few, the fsync cheap.
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")  # the WAL shrinks back
            db.executescript(_SCHEMA)
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("DELETE FROM transitions WHERE ts < ?",
                       (self._clock.time() - self._history_days * 86400,))
            self._history_rows = db.execute("SELECT count(*) FROM transitions").fetchone()[0]
            # (a new file has none; a reopen for writing ignores them)
            records = _open_records(db, self.path)
            if restore:
                self.webhook_backlog = _webhook_rows(db)
        except BaseException:
            db.close()
            raise
        self._db = db
        self.unwritable = None
        return records

    def _start_over(self, exc: BaseException) -> list[dict[str, object]]:
        """Move a damaged file aside (kept for inspection) and start a new one."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self._clock.time()))
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
        self.moved_aside, self.damage = aside, str(exc)
        log.error("alarm state file %s is damaged (%s): moved to %s; starting with no open "
                  "alarms restored and no history", self.path, exc, aside)
        try:
            return self._open_writable(restore=False)
        except (sqlite3.Error, OSError) as again:
            # Whatever the failed open left at the path (nothing, or an empty new file)
            # holds no open alarm: reading it gives nothing, as it should.
            return self._open_read_only(again)

    def _open_read_only(self, exc: BaseException) -> list[dict[str, object]]:
        """The file cannot be written now: take back what can be read, write later."""
        self.unwritable = str(exc)
        records: list[dict[str, object]] = []
        if self.path.exists() and self.path.stat().st_size:
            # A missing or empty WAL holds nothing: immutable needs no -shm (a full disk).
            wal = f"{self.path}-wal"
            immutable = "" if os.path.exists(wal) and os.path.getsize(wal) else "&immutable=1"
            try:
                with contextlib.closing(sqlite3.connect(f"file:{self.path}?mode=ro{immutable}",
                                                        uri=True)) as db:
                    records = _open_records(db, self.path)
                    with contextlib.suppress(sqlite3.Error):  # an older file has no such table
                        self.webhook_backlog = _webhook_rows(db)
            except sqlite3.Error as read_exc:
                log.error("alarm state file %s cannot be read either (%s)", self.path, read_exc)
        log.error("alarm state file %s cannot be written (%s): %d open alarms restored; "
                  "transitions kept in memory and written once it can be", self.path, exc,
                  len(records))
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
        alarm_id = str(transition.alarm["id"])
        closed = transition.event == "closed" or transition.record is None
        self._records[alarm_id] = None if closed else transition.record
        if len(self._pending) > self.max_pending:
            self._shed()
        self._changed()

    def webhook_saved(self, endpoint: str, seq: int, alarm_id: str, event: str, body: bytes,
                      *, new: bool) -> None:
        """A webhook sender queued an entry (``new``) or replaced its body."""
        key = (endpoint, seq)
        before = self._hooks.get(key)
        added = new or (before is not None and before[0])
        self._hooks[key] = (added, alarm_id, event, body)
        self._changed()

    def webhook_done(self, endpoint: str, seq: int) -> None:
        """A webhook entry was delivered, refused for good or dropped: forget it."""
        key = (endpoint, seq)
        before = self._hooks.get(key)
        if before is not None and before[0]:  # never reached the file
            del self._hooks[key]
        else:
            self._hooks[key] = None
        self._changed()

    def forget_webhooks(self, endpoints: list[str]) -> None:
        """Pending deliveries of endpoints no longer configured are deleted."""
        for endpoint in endpoints:
            for seq, *_ in self.webhook_backlog.pop(endpoint, []):
                self._hooks[(endpoint, seq)] = None
        self._changed()

    def _changed(self) -> None:
        self._idle.clear()
        self._wake.set()

    def _shed(self) -> None:
        excess = len(self._pending) - self.max_pending
        del self._pending[:excess]
        self.history_dropped += excess
        if not self._overflowing:
            log.error("alarm state file %s: more than %d transitions waiting; the oldest are "
                      "dropped from the history (open alarms are kept)", self.path,
                      self.max_pending)
            self._overflowing = True

    async def run(self) -> None:
        """The writer: commit queued transitions until cancelled (and, hourly, forget
        transitions older than ``history_days``)."""
        backoff = Backoff(initial=0.5, cap=30.0)
        failing = self.unwritable is not None
        if failing:  # from open: raised here, once every listener has its backlog back
            self._raise_failing_alarm(self.unwritable)
        pruned = self._clock.time()
        while True:
            if not failing:
                try:
                    async with asyncio.timeout(PRUNE_EVERY):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            self._wake.clear()
            try:
                if self._clock.time() - pruned >= PRUNE_EVERY and self._db is not None:
                    pruned = self._clock.time()
                    async with self._lock:
                        await asyncio.to_thread(self._prune)
                await self.flush_once()
            except (sqlite3.Error, OSError) as exc:
                self.write_errors += 1
                if not failing:
                    log.error("alarm state file %s: cannot write (%s); %d transitions kept in "
                              "memory and retried", self.path, exc, len(self._pending))
                    self._raise_failing_alarm(str(exc))
                failing = True
                await asyncio.sleep(backoff.next_delay())
                continue
            if failing:
                log.info("alarm state file %s: writing again", self.path)
                self._on_alarm(STORE_WRITE_FAILED, False, "alarm state file written again")
                failing = False
                self._overflowing = False
                backoff.reset()

    def _raise_failing_alarm(self, detail: str | None) -> None:
        self._on_alarm(STORE_WRITE_FAILED, True,
                       f"alarm state file cannot be written ({detail}): "
                       "alarm history is kept in memory only until it can")

    async def flush_once(self) -> None:
        """Commit everything queued now, in one transaction.

        The write runs to its end even if this is cancelled (a stop): ``close``
        waits for it, so a batch is never written twice nor half.
        """
        async with self._lock:
            if self._inflight is not None:  # left by a cancelled flush; its result is handled
                with contextlib.suppress(sqlite3.Error, OSError):
                    await asyncio.shield(self._inflight)
            if self._db is None:
                if self.unwritable is None:
                    raise sqlite3.OperationalError("state file is not open")
                await asyncio.to_thread(self._open_writable, restore=False)
                log.info("alarm state file %s: open for writing again", self.path)
            if not self._pending and not self._records and not self._hooks:
                self._idle.set()
                return
            batch, self._pending = self._pending, []
            records, self._records = self._records, {}
            hooks, self._hooks = self._hooks, {}
            self._inflight = asyncio.ensure_future(
                asyncio.to_thread(self._write, batch, records, hooks))
            self._inflight.add_done_callback(lambda fut: self._written(fut, batch, records, hooks))
            await asyncio.shield(self._inflight)

    def _written(self, fut: asyncio.Future, batch: list[Transition],
                 records: dict[str, dict[str, object] | None],
                 hooks: dict[tuple[str, int], _HookOp]) -> None:
        self._inflight = None
        if fut.cancelled() or fut.exception() is not None:
            # Still owed, in front of what came since (newer states win); the writer retries.
            self._pending[:0] = batch
            for alarm_id, record in records.items():
                self._records.setdefault(alarm_id, record)
            for key, op in hooks.items():
                newer = self._hooks.get(key, ())
                if newer == ():
                    self._hooks[key] = op
                elif op is not None and op[0]:  # the add never reached the file
                    if newer is None:
                        del self._hooks[key]
                    else:
                        self._hooks[key] = (True, *newer[1:])
            if len(self._pending) > self.max_pending:
                self._shed()
            return
        self.written += len(batch)
        if not self._pending and not self._records and not self._hooks:
            self._idle.set()

    async def wait_written(self) -> None:
        """Wait until everything queued so far is in the file (tests, shutdown)."""
        await self._idle.wait()

    def _prune(self) -> None:
        cutoff = self._clock.time() - self._history_days * 86400
        db = self._db
        if db is not None:
            self._history_rows -= db.execute("DELETE FROM transitions WHERE ts < ?",
                                             (cutoff,)).rowcount

    def _write(self, batch: list[Transition], records: dict[str, dict[str, object] | None],
               hooks: dict[tuple[str, int], _HookOp]) -> None:
        db = self._db
        assert db is not None
        pruned = 0
        with db:  # BEGIN ... COMMIT, or ROLLBACK on error
            db.execute("BEGIN")
            db.executemany("INSERT INTO transitions (alarm_id, event, ts, by, note, alarm) "
                           "VALUES (?, ?, ?, ?, ?, ?)",
                           [(str(t.alarm["id"]), t.event, t.ts, t.by, t.note, json_safe.dumps(t.alarm))
                            for t in batch])
            for alarm_id, record in records.items():
                if record is None:
                    db.execute("DELETE FROM open_alarms WHERE id = ?", (alarm_id,))
                else:
                    db.execute("INSERT OR REPLACE INTO open_alarms (id, record, updated) "
                               "VALUES (?, ?, ?)", (alarm_id, json_safe.dumps(record),
                                                    self._clock.time()))
            for (endpoint, seq), op in hooks.items():
                if op is None:
                    db.execute("DELETE FROM webhook_pending WHERE endpoint = ? AND seq = ?",
                               (endpoint, seq))
                else:
                    db.execute("INSERT OR REPLACE INTO webhook_pending "
                               "(endpoint, seq, alarm_id, event, body) VALUES (?, ?, ?, ?, ?)",
                               (endpoint, seq, *op[1:]))
            rows = self._history_rows + len(batch)
            if rows > self.max_transitions * (1 + PRUNE_SLACK):
                pruned = db.execute("DELETE FROM transitions WHERE seq <= "
                                    "(SELECT max(seq) FROM transitions) - ?",
                                    (self.max_transitions,)).rowcount
        # Counted once committed (the thread's result is read by the loop afterwards).
        self._history_rows = rows - pruned
        if pruned:
            self.history_pruned += pruned
            log.info("alarm state file %s: %d oldest transitions removed (more than %d kept)",
                     self.path, pruned, self.max_transitions)

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

    def stats(self) -> dict[str, int]:
        """Numbers for /metrics: ``_total`` keys only grow."""
        return {"pending": len(self._pending), "history_rows": self._history_rows,
                "written_total": self.written, "write_errors_total": self.write_errors,
                "history_pruned_total": self.history_pruned,
                "history_dropped_total": self.history_dropped,
                "unwritable": int(self._db is None)}

    async def _read(self, query: str, args: tuple) -> list[tuple]:
        # Readers get their own connection: WAL lets them run beside the writer.
        def read() -> list[tuple]:
            with contextlib.closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as db:
                return db.execute(query, args).fetchall()

        if self._db is None:
            return []
        return await asyncio.to_thread(read)


def _open_records(db: sqlite3.Connection, path: Path) -> list[dict[str, object]]:
    records = []
    for (text,) in db.execute("SELECT record FROM open_alarms ORDER BY id").fetchall():
        try:
            records.append(json.loads(text))
        except ValueError:
            log.error("alarm state file %s: an unreadable open alarm was skipped", path)
    return records


def _webhook_rows(db: sqlite3.Connection) -> dict[str, list[tuple[int, str, str, bytes]]]:
    backlog: dict[str, list[tuple[int, str, str, bytes]]] = {}
    for endpoint, seq, alarm_id, event, body in db.execute(
            "SELECT endpoint, seq, alarm_id, event, body FROM webhook_pending "
            "ORDER BY endpoint, seq"):
        backlog.setdefault(endpoint, []).append((seq, alarm_id, event, bytes(body)))
    return backlog
