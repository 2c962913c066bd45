"""The outbox on disk: one SQLite file (WAL) holding what goes upstream until every sink confirmed it.

Tables:
- ``blocks(id, first_id, rows, events, ts, body)``: the rows of one commit, packed and
  compressed (``gateway.outbox.blocks``); ``id`` is the id of its last row, ``first_id``
  of its first, ``events`` how many are device events (the rest are readings), ``ts``
  the oldest timestamp in it. Every row keeps its own id inside the block, so a sink's
  cursor, the quarantine and the budget still speak of rows. A row is a reading (kind
  0) or a device event (1) with its InfluxDB line and its MQTT telemetry JSON (None
  when no sink wants it). Blocks never overlap: each holds ids after the last one's.
- ``cursors(sink, last_id)``: the last row each sink confirmed.
- ``quarantine(...)``: rows an upstream refused for good, moved aside with its answer.
- ``meta(key, value)``: counters that outlive a restart; ``head`` is the highest row
  id ever committed, written with each commit, so an id is never reused, even once
  every row was deleted, and a sink's cursor can never point past rows it has not seen.

Why blocks: while the upstreams are down every reading is committed, and one SQLite
row per reading (its line and its JSON) cost about 540 bytes of SD-card writes per
reading (WAL, then the checkpoint); a compressed block per commit costs about a tenth.
A file written by the version before (one ``rows`` row per reading) is converted to
blocks when it is opened, a block per transaction (a stop meanwhile loses nothing;
the next open goes on).

Durability: a commit of new rows runs with ``synchronous=FULL`` (the WAL is fsynced),
so a committed row survives a power cut. Cursor moves and deletions run with
``synchronous=NORMAL`` (no fsync of their own): losing one to a power cut only means
rows are sent again, which the time series absorbs (same series and timestamp), and
it spares the SD card an fsync per upstream batch.

Every method blocks: call them through ``asyncio.to_thread``. A lock serialises
them, since a worker thread may run one while another is still busy.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import fcntl
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from gateway.errors import OutboxError
from gateway.outbox.blocks import INSERT_BLOCK, BlockError, pack, unpack
from gateway.outbox.recovery import Salvage, move_aside, open_damaged, salvage_into

log = logging.getLogger(__name__)

READING = 0
EVENT = 1

# Rows an upstream refused are kept for inspection, the newest this many.
QUARANTINE_KEEP = 100_000
# Purge and budget deletions go in slices of this many ids: short transactions.
DELETE_SLICE = 50_000
# The WAL is cut back to this size after a checkpoint.
WAL_LIMIT_BYTES = 4 * 1024 * 1024
# Dropping for the budget goes down to this share of it, not just under the line,
# so it does not run again at every commit.
BUDGET_LOW_WATER = 0.9
# Pages of a new file. A commit rewrites a few pages besides its block's (the table's
# leaf, the header page, meta's): 1 kB pages make those 4 kB instead of 16 kB.
PAGE_SIZE = 1024
# Rows per block when a file of the version before is converted.
CONVERT_BLOCK_ROWS = 2000
# Unpacked blocks kept for the next read (a sink reads a block in several batches).
CACHE_BLOCKS = 4

# The id is the block's last row id, the rowid: no index, and no AUTOINCREMENT (its
# sqlite_sequence page would be written at every commit; meta's head does that job).
SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    id INTEGER PRIMARY KEY,
    first_id INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    events INTEGER NOT NULL,
    ts REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (sink TEXT PRIMARY KEY, last_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    row_id INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    device TEXT NOT NULL,
    ts REAL NOT NULL,
    line TEXT NOT NULL,
    doc TEXT,
    status INTEGER,
    error TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

Row = tuple[int, str, float, str, str | None]  # kind, device, ts, line, doc


class SqliteOutbox:
    """The durable store; ``budget_bytes`` bounds the space its rows take."""

    blocking = True

    def __init__(self, *, path: Path, budget_bytes: int):
        self.path = Path(path)
        self.budget_bytes = budget_bytes
        self.rows = 0  # rows stored now (kept here: count(*) is a full scan)
        self.head = 0  # the highest id ever committed
        self.dropped = 0  # readings dropped for the budget, over the file's life
        self._con: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._lock_file: int | None = None
        self._page_size: int  # set by _connect, before anything reads it
        self._sinks: list[str]  # set by open, before anything reads it
        self._open_later = False  # the system refused the file at open: try at each use
        self.salvage: Salvage | None = None  # what the salvage of a damaged file found
        self.converted = 0  # rows converted from a file of the version before blocks
        self.bad_blocks = 0  # blocks skipped because their bytes do not decode (logged)
        self._cache: dict[int, list[tuple]] = {}  # block id -> its rows, the last few read

    # -- opening and closing ----------------------------------------------------------

    def open(self, sinks: Iterable[str]) -> dict[str, int]:
        """Open (or create) the file and return each sink's cursor.

        A sink new to this file starts at the newest row (it gets what comes from
        now on); cursors of sinks no longer configured are removed, since they
        would keep every row forever.

        A damaged file (not a database, or a page that fails to read while every
        table is scanned here) is moved aside (``<name>.corrupt-<time>``, kept),
        and the rows that can still be read are copied into a new file
        (``salvage`` tells how many, and how many could not be read). A file the
        system will not let us open now (disk full, I/O error, read-only) is not
        damaged: its cursors are read if they can be, and the open is done again
        at the next use, so commits fail (the writer keeps rows staged, raises
        its alarm and retries) until the disk takes writes again.
        """
        with self._lock, self._errors("open"):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                if not _is_disk_full(exc):
                    raise
            self._take_lock_file()
            self._sinks = list(sinks)
            try:
                return self._open_now()
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError):
                    return self._defer_open(exc)
                self._salvage(exc)
                return self._open_now()

    def _open_now(self) -> dict[str, int]:
        con = self._connect()
        try:
            # Every table is read whole here (the sum and count(*) walk each b-tree,
            # substr() loads each block's body, its overflow pages): a damaged page
            # shows now, at the start, not in the middle of an outage.
            self.rows = con.execute("SELECT coalesce(sum(rows), 0), max(substr(body, -1)) "
                                    "FROM blocks").fetchone()[0]
            con.execute("SELECT count(*) FROM quarantine").fetchone()
            self.head = _head(con)
            self.dropped = _meta(con, "dropped")
            self._con = con
            return self._register(self._sinks)
        except BaseException:
            self._con = None
            con.close()
            raise

    def _salvage(self, exc: BaseException) -> None:
        """Move the damaged file aside and copy what can be read into a new one."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        move_aside(self.path, aside)
        log.error("outbox %s is damaged (%s): moved to %s; salvaging what can be read",
                  self.path, exc, aside)
        report = Salvage(moved_to=aside, damage=str(exc))
        con = self._connect()
        try:
            with contextlib.closing(open_damaged(aside)) as src:
                con.execute("BEGIN IMMEDIATE")
                salvage_into(src, con, self._sinks, report)
                con.execute("COMMIT")
        except sqlite3.DatabaseError as again:  # the damaged file cannot be read at all
            # (a transaction left open is rolled back by the close below)
            report.tail_lost = True
            log.error("outbox %s: nothing could be read from %s (%s)", self.path, aside, again)
        finally:
            con.close()
        self.salvage = report
        (log.warning if not report.unreadable and not report.tail_lost else log.error)(
            "outbox %s: %s", self.path, report.summary())

    def _defer_open(self, exc: sqlite3.OperationalError) -> dict[str, int]:
        """The system refuses the file now: say where each sink is, open it later."""
        self._open_later = True
        cursors: dict[str, int] = {}
        if self.path.exists() and self.path.stat().st_size:
            wal = f"{self.path}-wal"
            # An empty or missing WAL holds nothing: immutable needs no -shm (a full disk).
            immutable = "" if os.path.exists(wal) and os.path.getsize(wal) else "&immutable=1"
            try:
                with contextlib.closing(sqlite3.connect(f"file:{self.path}?mode=ro{immutable}",
                                                        uri=True)) as ro:
                    cursors = dict(ro.execute("SELECT sink, last_id FROM cursors").fetchall())
                    self.head = _head(ro)
                    self.rows = _depth(ro)
                    self.dropped = _meta(ro, "dropped")
            except sqlite3.Error as read_exc:
                log.error("outbox %s cannot be read either (%s)", self.path, read_exc)
        log.error("outbox %s cannot be opened now (%s); opened again at the next commit",
                  self.path, exc)
        return {sink: cursors.get(sink, self.head) for sink in self._sinks}

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            # (a new file only: an existing one keeps its page size)
            con.execute(f"PRAGMA page_size={PAGE_SIZE}")
            mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise sqlite3.OperationalError(f"cannot use WAL mode here (got {mode})")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
            # Debian builds SQLite to zero every freed page: for rows that are deleted
            # seconds after they came, that doubles what reaches the SD card. FAST
            # only zeroes what is written anyway.
            con.execute("PRAGMA secure_delete=FAST")
            con.executescript(SCHEMA)
            if _has_table(con, "rows"):
                self._convert(con)
            self._page_size = con.execute("PRAGMA page_size").fetchone()[0]
        except BaseException:
            con.close()
            raise
        return con

    def _convert(self, con: sqlite3.Connection) -> None:
        """A file of the version before blocks: its rows become blocks, oldest first,
        each block in a transaction that also deletes its rows. A power cut or a stop
        meanwhile loses nothing (a row is in one table or the other) and the next open
        goes on where this one stopped; the WAL stays small (it is checkpointed
        between the transactions), so a nearly full disk still has room for it."""
        n = 0
        head = _head(con)
        while True:
            con.execute("BEGIN IMMEDIATE")
            try:
                chunk = con.execute("SELECT kind, device, ts, line, doc, id FROM rows ORDER BY id "
                                    "LIMIT ?", (CONVERT_BLOCK_ROWS,)).fetchall()
                if chunk:
                    con.execute(INSERT_BLOCK, pack(chunk))
                    con.execute("DELETE FROM rows WHERE id <= ?", (chunk[-1][5],))
                _meta_at_least(con, "head", head)
                if not chunk:  # all moved: the old table goes (its counter is meta's head now)
                    con.execute("DROP TABLE rows")
                    con.execute("DELETE FROM sqlite_sequence WHERE name = 'rows'")
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        con.execute("ROLLBACK")
                raise
            if not chunk:
                break
            n += len(chunk)
            self.converted += len(chunk)
        log.warning("outbox %s: %d rows of the previous file format converted to blocks",
                    self.path, n)

    def _take_lock_file(self) -> None:
        # Two gateways on one outbox would take each other's rows: the second one
        # is told at once instead.
        if self._lock_file is not None:
            return
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutboxError(str(self.path), "in use by another gateway process") from None
        self._lock_file = fd

    def _register(self, sinks: list[str]) -> dict[str, int]:
        con = self._con
        assert con is not None
        known = dict(con.execute("SELECT sink, last_id FROM cursors").fetchall())
        with self._transaction():
            for stale in set(known) - set(sinks):
                log.warning("outbox: sink %s is no longer configured; its cursor is removed", stale)
                con.execute("DELETE FROM cursors WHERE sink = ?", (stale,))
                del known[stale]
            for sink in sinks:
                if sink not in known:
                    con.execute("INSERT INTO cursors(sink, last_id) VALUES (?, ?)", (sink, self.head))
                    known[sink] = self.head
        return known

    def close(self) -> None:
        """Checkpoint, close the file and release it."""
        with self._lock:
            con, self._con = self._con, None
            self._open_later = False
            if con is not None:
                with contextlib.suppress(sqlite3.Error):
                    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                with contextlib.suppress(sqlite3.Error):
                    con.close()
            if self._lock_file is not None:
                os.close(self._lock_file)
                self._lock_file = None

    # -- the flow: append, read, advance, purge ---------------------------------------

    def append(self, rows: list[Row]) -> int:
        """Commit new rows (one transaction, fsynced); return the newest id."""
        if not rows:
            return self.head
        first = self.head + 1
        return self.append_rows([(*row, i) for i, row in enumerate(rows, first)], {})

    def append_rows(self, rows: list[tuple], cursors: dict[str, int]) -> int:
        """Commit rows that carry their ids, ``(kind, device, ts, line, doc, id)``, and
        move the given cursors in the same transaction (one fsync); return the newest id."""
        with self._lock, self._errors("commit"):
            con = self._connection()
            con.execute("PRAGMA synchronous=FULL")
            block = pack(rows)  # (in the worker thread: the event loop is not held)
            try:
                with self._transaction():
                    con.execute(INSERT_BLOCK, block)
                    # (the same page at every commit: a salvage of a file cut short
                    # still knows how many rows its end held)
                    _meta_at_least(con, "head", block[0])
                    con.executemany("UPDATE cursors SET last_id = max(last_id, ?) "
                                    "WHERE sink = ?", [(at, sink) for sink, at in cursors.items()])
            finally:
                con.execute("PRAGMA synchronous=NORMAL")
            self.head = max(self.head, rows[-1][5])
            self.rows += len(rows)
            return self.head

    def read(self, after: int, limit: int, payload: str) -> list[tuple]:
        """Up to ``limit`` rows after id ``after``, oldest first.

        ``payload`` "line" gives ``(id, line)``, "doc" gives ``(id, device, doc)``.
        """
        with self._lock, self._errors("read"):
            chunk: list[tuple] = []
            with self._rows_after(after) as blocks:
                for rows, start in blocks:
                    chunk += rows[start:start + limit - len(chunk)]
                    if len(chunk) >= limit:
                        break
        if payload == "line":
            return [(r[0], r[4]) for r in chunk]
        if payload == "doc":
            return [(r[0], r[2], r[5]) for r in chunk]
        raise ValueError(f"unknown payload {payload!r}")

    @contextlib.contextmanager
    def _rows_after(self, after: int) -> Iterator[Iterator[tuple[list[tuple], int]]]:
        """The blocks holding rows after id ``after``, oldest first, lazily: each as its
        rows and the index of the first one after ``after``. The query is closed at
        the end (a statement left open would hold a snapshot the checkpoint waits on)."""
        cur = self._connection().execute("SELECT id, body FROM blocks WHERE id > ? ORDER BY id",
                                         (after,))
        try:
            yield ((rows, bisect.bisect_right(rows, after, key=_row_id))
                   for rows in (self._unpacked(i, body) for i, body in cur))
        finally:
            cur.close()

    def _unpacked(self, block_id: int, body: bytes) -> list[tuple]:
        """A block's rows ``(id, kind, device, ts, line, doc)``; one that does not
        decode (damage the page checks did not catch) is logged, counted and read as
        empty, so the sinks go on past it."""
        rows = self._cache.get(block_id)
        if rows is None:
            try:
                rows = unpack(body)
            except BlockError as exc:
                self.bad_blocks += 1
                log.error("outbox %s: block ending at row %d cannot be read (%s); its rows "
                          "are skipped (%d such blocks)", self.path, block_id, exc,
                          self.bad_blocks)
                rows = []
            if len(self._cache) >= CACHE_BLOCKS:
                del self._cache[next(iter(self._cache))]
            self._cache[block_id] = rows
        return rows

    def advance(self, sink: str, last_id: int) -> None:
        """Record that ``sink`` has confirmed every row up to ``last_id``."""
        with self._lock, self._errors("cursor update"):
            # never backwards: two moves may reach the file out of order (a commit's
            # and a sink's, from different worker threads)
            self._connection().execute("UPDATE cursors SET last_id = max(last_id, ?) "
                                       "WHERE sink = ?", (last_id, sink))

    def purge(self, upto: int) -> int:
        """Delete rows up to id ``upto`` (every sink has them); return how many."""
        with self._lock, self._errors("purge"):
            con = self._connection()
            self._cache.clear()
            first = con.execute("SELECT min(id) FROM blocks").fetchone()[0]
            deleted = 0
            if first is not None and first <= upto:
                # a block goes whole: one whose last row is after ``upto`` stays
                for start in range(first, upto + 1, DELETE_SLICE):
                    end = min(upto, start + DELETE_SLICE - 1)
                    deleted += con.execute("SELECT coalesce(sum(rows), 0) FROM blocks "
                                           "WHERE id <= ?", (end,)).fetchone()[0]
                    con.execute("DELETE FROM blocks WHERE id <= ?", (end,))
            self.rows -= deleted
            return deleted

    def oldest_ts(self, after: int) -> float | None:
        """Timestamp of the first row after id ``after`` (None when there is none)."""
        with self._lock, self._errors("read"):
            with self._rows_after(after) as blocks:
                for rows, start in blocks:
                    if start < len(rows):
                        return rows[start][3]
            return None

    # -- quarantine -------------------------------------------------------------------

    def quarantine(self, sink: str, ids: list[int], status: int | None, error: str,
                   at: float) -> int:
        """Copy rows an upstream refused into the quarantine table; return how many."""
        with self._lock, self._errors("quarantine"):
            con = self._connection()
            wanted = set(ids)
            found = []
            if ids:
                for block_id, body in con.execute(
                        "SELECT id, body FROM blocks WHERE id >= ? AND first_id <= ? ORDER BY id",
                        (min(ids), max(ids))).fetchall():
                    found += [r for r in self._unpacked(block_id, body) if r[0] in wanted]
            with self._transaction():
                con.executemany(
                    "INSERT INTO quarantine(sink, row_id, kind, device, ts, line, doc, status, "
                    "error, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(sink, *r, status, error, at) for r in found])
                con.execute("DELETE FROM quarantine WHERE id <= (SELECT max(id) FROM quarantine) - ?",
                            (QUARANTINE_KEEP,))
            return len(ids)

    def quarantined(self, sink: str | None = None) -> int:
        """Rows in quarantine (for one sink, or all)."""
        with self._lock, self._errors("read"):
            con = self._connection()
            if sink is None:
                return con.execute("SELECT count(*) FROM quarantine").fetchone()[0]
            return con.execute("SELECT count(*) FROM quarantine WHERE sink = ?",
                               (sink,)).fetchone()[0]

    # -- the disk budget -------------------------------------------------------------

    def used_bytes(self) -> int:
        """Bytes the database's live pages take (free pages are reused before it grows)."""
        with self._lock, self._errors("read"):
            return self._used(self._connection())

    def usage(self) -> float:
        """Share of the budget in use (1.0 = full)."""
        return self.used_bytes() / self.budget_bytes

    def enforce_budget(self) -> list[int]:
        """Past the budget, delete the oldest readings (never events); return their ids.

        Deletes down to ``BUDGET_LOW_WATER`` of the budget, estimating the rows
        from the average row size, and checks again. Readings go a block at a time
        (the oldest first); a block that also holds events is written again with
        its events only.
        """
        dropped: list[int] = []
        with self._lock, self._errors("budget"):
            con = self._connection()
            self._cache.clear()
            for _ in range(8):  # estimates converge in one or two rounds
                used = self._used(con)
                if used <= self.budget_bytes or not self.rows:
                    break
                share = (used - BUDGET_LOW_WATER * self.budget_bytes) / used
                want = max(1, math.ceil(self.rows * share))
                # the oldest blocks holding readings, enough of them for ``want``
                picked, readings = [], 0
                with contextlib.closing(con.execute("SELECT id, first_id, rows, events FROM "
                                                    "blocks WHERE rows > events ORDER BY id")) as cur:
                    for block in cur:
                        if readings >= want:
                            break
                        picked.append(block)
                        readings += block[2] - block[3]
                if not picked:
                    break  # only events left: they stay, whatever the budget
                ids: list[int] = []
                with self._transaction():
                    for block_id, first, count, events in picked:
                        if not events and block_id - first + 1 == count:  # ids all in a row
                            ids.extend(range(first, block_id + 1))
                        else:
                            body = con.execute("SELECT body FROM blocks WHERE id = ?",
                                               (block_id,)).fetchone()[0]
                            rows = self._decoded(block_id, body)
                            ids.extend(r[0] for r in rows if r[1] == READING)
                            kept = [(*r[1:], r[0]) for r in rows if r[1] != READING]
                        con.execute("DELETE FROM blocks WHERE id = ?", (block_id,))
                        if events and kept:
                            con.execute(INSERT_BLOCK, pack(kept))
                    n = readings
                    _bump_meta(con, "dropped", n)
                self.rows -= n
                self.dropped += n
                dropped.extend(ids)
        return dropped

    def _decoded(self, block_id: int, body: bytes) -> list[tuple]:
        """A block's rows; for the budget, one that does not decode is dropped whole
        (counted as readings: what it held cannot be told any more)."""
        rows = self._unpacked(block_id, body)
        self._cache.pop(block_id, None)
        return rows

    # -- helpers ----------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._con is None:
            if not self._open_later:
                raise OutboxError(str(self.path), "not open")
            self._open_now()  # raises (a disk still full) as the operation's own error
            log.info("outbox %s: open again", self.path)
        assert self._con is not None
        return self._con

    def _used(self, con: sqlite3.Connection) -> int:
        pages = con.execute("PRAGMA page_count").fetchone()[0]
        free = con.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * self._page_size

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        con = self._connection()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if con.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Turn sqlite3 and OS errors into OutboxError, telling a full disk apart."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            con = self._con
            if con is not None and con.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    con.execute("ROLLBACK")
            raise OutboxError(str(self.path), f"{doing} failed: {exc}",
                              disk_full=_is_disk_full(exc)) from exc


def _row_id(row: tuple) -> int:
    return row[0]


def _has_table(con: sqlite3.Connection, name: str) -> bool:
    return con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                       (name,)).fetchone() is not None


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or \
        "disk is full" in str(exc)


def _head(con: sqlite3.Connection) -> int:
    """The highest row id ever given out: meta's head, the newest block's, or in a file
    of the version before blocks, its rows' AUTOINCREMENT counter."""
    heads = [_meta(con, "head")]
    if _has_table(con, "blocks"):
        heads.append(con.execute("SELECT coalesce(max(id), 0) FROM blocks").fetchone()[0])
    if _has_table(con, "rows"):
        row = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'rows'").fetchone()
        heads.append(row[0] if row else 0)
        heads.append(con.execute("SELECT coalesce(max(id), 0) FROM rows").fetchone()[0])
    return max(heads)


def _depth(con: sqlite3.Connection) -> int:
    """Rows stored (blocks' rows, plus a file of the version before's rows)."""
    depth = 0
    if _has_table(con, "blocks"):
        depth += con.execute("SELECT coalesce(sum(rows), 0) FROM blocks").fetchone()[0]
    if _has_table(con, "rows"):
        depth += con.execute("SELECT count(*) FROM rows").fetchone()[0]
    return depth


def _meta_at_least(con: sqlite3.Connection, key: str, value: int) -> None:
    """Raise a meta value to ``value`` (never lower it)."""
    con.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)", (key, value))


def _meta(con: sqlite3.Connection, key: str) -> int:
    row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else 0


def _bump_meta(con: sqlite3.Connection, key: str, n: int) -> None:
    con.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value", (key, n))


def read_summary(path: Path, *, now: float | None = None) -> dict[str, object]:
    """What is in an outbox file, read without writing (safe while the gateway runs).

    Depth, age of the oldest row, readings dropped for the budget, quarantined rows,
    and per sink its cursor, the rows after it and the age of its oldest unsent row.
    """
    now = time.time() if now is None else now
    path = Path(path)
    if not path.exists():
        raise OutboxError(str(path), "no such file")
    # Without a WAL file no gateway has the outbox open: read it as immutable, which
    # creates no -wal/-shm files (left behind by root, they would lock the gateway out).
    immutable = "" if os.path.exists(f"{path}-wal") else "&immutable=1"
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro{immutable}", uri=True)
    except sqlite3.Error as exc:
        raise OutboxError(str(path), f"cannot open: {exc}") from exc
    try:
        depth, oldest = _count_after(con, -1)
        sinks = {}
        for sink, last_id in con.execute("SELECT sink, last_id FROM cursors ORDER BY sink").fetchall():
            lag, first_ts = _count_after(con, last_id)
            sinks[sink] = {
                "cursor": last_id, "lag_rows": lag,
                "oldest_unsent_age_seconds": None if first_ts is None else max(0.0, now - first_ts),
                "quarantined": con.execute("SELECT count(*) FROM quarantine WHERE sink = ?",
                                           (sink,)).fetchone()[0],
            }
        pages = con.execute("PRAGMA page_count").fetchone()[0]
        free = con.execute("PRAGMA freelist_count").fetchone()[0]
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        return {
            "path": str(path), "rows": depth, "head": _head(con),
            "oldest_age_seconds": None if oldest is None else max(0.0, now - oldest),
            "used_bytes": (pages - free) * page_size,
            "file_bytes": path.stat().st_size + _size(f"{path}-wal"),
            "dropped": _meta(con, "dropped"),
            "quarantined": con.execute("SELECT count(*) FROM quarantine").fetchone()[0],
            "sinks": sinks,
        }
    except sqlite3.Error as exc:
        raise OutboxError(str(path), f"cannot read: {exc}") from exc
    finally:
        con.close()


def _count_after(con: sqlite3.Connection, after: int) -> tuple[int, float | None]:
    """How many rows come after id ``after``, and their oldest timestamp."""
    count, oldest = 0, []
    if _has_table(con, "blocks"):
        n, ts = con.execute("SELECT coalesce(sum(rows), 0), min(ts) FROM blocks "
                            "WHERE id > ? AND first_id > ?", (after, after)).fetchone()
        count += n
        oldest.append(ts)
        for (body,) in con.execute("SELECT body FROM blocks WHERE first_id <= ? AND id > ?",
                                   (after, after)):
            try:
                rows = [r for r in unpack(body) if r[0] > after]
            except BlockError:
                continue  # (the gateway logs it when it reads the block)
            count += len(rows)
            oldest += [r[3] for r in rows]
    if _has_table(con, "rows"):  # a file of the version before, not converted yet
        n, ts = con.execute("SELECT count(*), min(ts) FROM rows WHERE id > ?", (after,)).fetchone()
        count += n
        oldest.append(ts)
    return count, min((t for t in oldest if t is not None), default=None)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
