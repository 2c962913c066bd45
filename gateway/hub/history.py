"""The hub's history: every alarm transition from every site in scope, in SQLite.

One row per transition, unique on (site, alarm id, event, ts): a QoS 1
redelivery (a persistent session resent after a reconnect, two bridges carrying
the same event) is the same row, counted in ``duplicates``. Rows carry the
site's place (subdistrict, community, compound) and the alarm's building, kind,
severity and device, so the history is searched by any level of the hierarchy.
Rows older than ``retention_days`` are deleted at start and hourly.

An alarm the hub found already open in the gateway's retained state (raised before
the hub first subscribed) gets one row with event ``retained`` at its ``first_ts``
(``add(..., retained=True)``), written only when the history has no row of that
alarm at all: a reconnect, a restart or an alarm the hub saw raised adds nothing.

Writes are batched (one transaction per batch, on a worker thread); a failed
write keeps the batch and retries, so nothing is lost while the disk recovers.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.backoff import Backoff
from gateway.hub.live import parse_ts

log = logging.getLogger(__name__)

PRUNE_EVERY = 3600.0
MAX_BATCH = 5000
CSV_COLUMNS = ("ts", "site", "subdistrict", "community", "compound", "building", "device",
               "kind", "severity", "event", "alarm_id", "rule", "state", "by", "note", "message",
               "origin")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY,
    site TEXT NOT NULL,
    alarm_id TEXT NOT NULL,
    event TEXT NOT NULL,
    ts TEXT NOT NULL,
    ts_epoch REAL NOT NULL,
    subdistrict TEXT, community TEXT, compound TEXT, building TEXT,
    device TEXT, kind TEXT, severity INTEGER, rule TEXT, state TEXT,
    by TEXT, note TEXT, message TEXT,
    origin TEXT NOT NULL DEFAULT 'gateway',
    body TEXT NOT NULL,
    UNIQUE (site, alarm_id, event, ts)
);
CREATE INDEX IF NOT EXISTS transitions_time ON transitions (ts_epoch);
CREATE INDEX IF NOT EXISTS transitions_community ON transitions (community, ts_epoch);
CREATE INDEX IF NOT EXISTS transitions_compound ON transitions (compound, ts_epoch);
CREATE INDEX IF NOT EXISTS transitions_site ON transitions (site, ts_epoch);
"""
_INSERT = ("INSERT OR IGNORE INTO transitions (site, alarm_id, event, ts, ts_epoch, subdistrict, "
           "community, compound, building, device, kind, severity, rule, state, by, note, message, "
           "origin, body) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
# The same row, only if the history has nothing of that alarm (site, alarm id) yet.
_INSERT_IF_NEW = (_INSERT.replace(") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                                  ") SELECT ?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,? WHERE NOT EXISTS "
                                  "(SELECT 1 FROM transitions WHERE site = ? AND alarm_id = ?)"))
_FILTERS = {  # query parameter -> SQL condition
    "site": "site = ?", "subdistrict": "subdistrict = ?", "community": "community = ?",
    "compound": "compound = ?", "building": "building = ?", "kind": "kind = ?",
    "device": "device = ?", "event": "event = ?", "alarm_id": "alarm_id = ?",
    "severity": "severity <= ?",  # this level or more urgent
    "since": "ts_epoch >= ?", "until": "ts_epoch < ?", "origin": "origin = ?",
}


class HistoryError(ValueError):
    """A search the history cannot run (a bad filter value)."""


@dataclass(slots=True)
class HistoryQuery:
    """A search: every field optional; ``severity`` means this level or more urgent."""

    site: str | None = None
    subdistrict: str | None = None
    community: str | None = None
    compound: str | None = None
    building: str | None = None
    kind: str | None = None
    device: str | None = None
    event: str | None = None
    alarm_id: str | None = None
    severity: int | None = None
    since: float | None = None
    until: float | None = None
    origin: str | None = None
    limit: int = 1000

    @classmethod
    def from_params(cls, params: dict[str, str], *, max_limit: int = 100_000) -> "HistoryQuery":
        """From URL parameters: times as ISO 8601 or epoch seconds."""
        q = cls()
        for key, value in params.items():
            if key in ("since", "until"):
                ts = parse_ts(value)
                if ts is None:
                    try:
                        ts = float(value)
                    except ValueError:
                        raise HistoryError(f"{key}: expected ISO 8601 or epoch seconds, got {value!r}") from None
                setattr(q, key, ts)
            elif key in ("severity", "limit", "level"):
                try:
                    number = int(value)
                except ValueError:
                    raise HistoryError(f"{key}: expected a whole number, got {value!r}") from None
                if key == "limit":
                    q.limit = max(1, min(number, max_limit))
                else:
                    q.severity = number
            elif key in _FILTERS:
                setattr(q, key, value)
        return q

    def where(self) -> tuple[str, list[Any]]:
        conditions, args = [], []
        for key, condition in _FILTERS.items():
            value = getattr(self, key)
            if value is not None:
                conditions.append(condition)
                args.append(value)
        return (" WHERE " + " AND ".join(conditions)) if conditions else "", args


class HubHistory:
    """The history file: ``add`` queues (never blocks), ``run`` writes, ``search`` reads."""

    def __init__(self, *, path: Path, retention_days: float, clock):
        self.path = Path(path)
        self.retention_days = retention_days
        self._clock = clock
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._lock = asyncio.Lock()
        self.written = 0
        self.duplicates = 0
        self.skipped = 0
        self.write_errors = 0

    async def open(self) -> None:
        """Open (or create) the file and forget what is past retention."""
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self._prune(db)
        except BaseException:
            db.close()
            raise
        self._db = db

    async def close(self) -> None:
        """Write what is queued (best effort) and close."""
        if self._db is None:
            return
        try:
            await self._flush()
        except (sqlite3.Error, OSError) as exc:
            log.error("hub history %s: %d transitions not written at stop: %s", self.path,
                      len(self._pending), exc)
        async with self._lock:
            db, self._db = self._db, None
            if db is not None:
                await asyncio.to_thread(db.close)

    # -- writing ---------------------------------------------------------------------------

    def add(self, *, site: str, place: dict[str, Any], body: dict[str, Any],
            origin: str = "gateway", raw: bytes | None = None, retained: bool = False) -> None:
        """Queue one transition (the JSON of ``alarm_events``) of ``site``; ``raw``: the
        same as received, kept as is. ``retained``: an alarm found open, kept only if the
        history has no row of it."""
        alarm = body.get("alarm")
        ts = body.get("ts")
        epoch = parse_ts(ts)
        if not isinstance(alarm, dict) or epoch is None or not alarm.get("id"):
            self.skipped += 1
            if self.skipped == 1 or self.skipped % 1000 == 0:
                log.warning("hub history: %d transitions skipped (no alarm id or time)", self.skipped)
            return
        location = alarm.get("location") if isinstance(alarm.get("location"), dict) else {}
        severity = alarm.get("severity")
        self._pending.append((_IfNew if retained else tuple)((
            site, str(alarm["id"]), str(body.get("event")), ts, epoch, place.get("subdistrict"),
            place.get("community"), place.get("compound"), _text(location.get("building")),
            _text(alarm.get("device")), _text(alarm.get("kind")),
            severity if isinstance(severity, int) else None, _text(alarm.get("rule")),
            _text(alarm.get("state")), _text(body.get("by")), _text(body.get("note")),
            _text(alarm.get("message")), origin,
            raw.decode("utf-8", "replace") if raw is not None
            else json.dumps(body, separators=(",", ":")))))
        self._idle.clear()
        self._wake.set()

    async def run(self) -> None:
        """The writer: commits queued transitions in batches until cancelled; prunes hourly."""
        backoff = Backoff(initial=0.5, cap=30.0)
        last_prune = self._clock.time()
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
                backoff.reset()
            except (sqlite3.Error, OSError) as exc:
                self.write_errors += 1
                log.error("hub history %s: write failed (%s); %d transitions kept, retrying",
                          self.path, exc, len(self._pending))
                self._wake.set()
                await asyncio.sleep(backoff.next_delay())
            if self._clock.time() - last_prune > PRUNE_EVERY:
                last_prune = self._clock.time()
                async with self._lock:
                    if self._db is not None:
                        await asyncio.to_thread(self._prune, self._db)

    async def _flush(self) -> None:
        async with self._lock:
            while self._pending and self._db is not None:
                batch = self._pending[:MAX_BATCH]
                inserted = await asyncio.to_thread(self._write, self._db, batch)
                del self._pending[:len(batch)]
                self.written += inserted
                self.duplicates += len(batch) - inserted
        if not self._pending:
            self._idle.set()

    async def flush(self) -> None:
        """Write what is queued now (the writer task does it on its own)."""
        await self._flush()

    async def wait_written(self) -> None:
        """Until everything queued so far is in the file."""
        await self._idle.wait()

    @property
    def pending(self) -> int:
        return len(self._pending)

    @staticmethod
    def _write(db: sqlite3.Connection, batch: list[tuple]) -> int:
        before = db.total_changes
        db.execute("BEGIN")
        try:
            db.executemany(_INSERT, [row for row in batch if type(row) is tuple])
            # after the transitions of the same batch: an alarm seen raised is not "found"
            db.executemany(_INSERT_IF_NEW, [(*row, row[0], row[1]) for row in batch
                                            if type(row) is _IfNew])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return db.total_changes - before

    def _prune(self, db: sqlite3.Connection) -> None:
        cutoff = self._clock.time() - self.retention_days * 86400
        gone = db.execute("DELETE FROM transitions WHERE ts_epoch < ?", (cutoff,)).rowcount
        if gone:
            log.info("hub history: %d transitions older than %g days deleted", gone,
                     self.retention_days)

    # -- reading ---------------------------------------------------------------------------

    async def search(self, query: HistoryQuery) -> list[dict[str, Any]]:
        """Matching transitions, newest first (at most ``query.limit``)."""
        where, args = query.where()
        sql = (f"SELECT {', '.join(CSV_COLUMNS)}, body FROM transitions{where} "
               f"ORDER BY ts_epoch DESC, id DESC LIMIT ?")
        rows = await self._read(sql, [*args, query.limit])
        out = []
        for row in rows:
            item = dict(zip(CSV_COLUMNS, row[:-1]))
            item["transition"] = json.loads(row[-1])
            out.append(item)
        return out

    async def count(self) -> int:
        rows = await self._read("SELECT COUNT(*) FROM transitions", [])
        return int(rows[0][0])

    async def csv(self, query: HistoryQuery) -> str:
        """Matching transitions as CSV (oldest first: a monthly report reads down)."""
        rows = await self.search(query)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for row in reversed(rows):
            writer.writerow(["" if row[c] is None else row[c] for c in CSV_COLUMNS])
        return out.getvalue()

    async def _read(self, sql: str, args: Iterable[Any]) -> list[tuple]:
        if self._db is None:
            raise HistoryError("the history is not open")
        # A separate connection per read: reads never wait behind the writer's batch (WAL).
        path = self.path

        def read() -> list[tuple]:
            db = sqlite3.connect(path)
            try:
                return db.execute(sql, list(args)).fetchall()
            finally:
                db.close()

        return await asyncio.to_thread(read)


def _text(value: object) -> str | None:
    return None if value is None else str(value)



class _IfNew(tuple):
    """A queued row written only when the history has no row of its alarm yet."""
