"""Salvage of a damaged outbox file: copy what can still be read into a new one.

A power cut on an SD card can leave pages of the outbox unreadable ("database
disk image is malformed"). The damaged file is moved aside by the store; this
copies its blocks (or, from a file of the version before blocks, its rows, packed
into blocks), in id order and with their ids, into the new file, stepping over
the unreadable pages, and counts what could not be read. A block whose page reads
but whose bytes do not decode is counted unreadable too (its row ids are a hole).

How it steps over them: rows (blocks: by the id of their last row) are read in
id order until the read fails; then seeks to ids further on (1, 2, 4, ... past the last good id) find one that lands
on a readable page, and a binary search narrows it to the first readable id
after the hole. The ids in between were unreadable; they are counted as lost
(an upper bound: ids deleted before the damage are among them). Rows already
confirmed by every sink were purged long before, so the count is close.

Cursors, counters and quarantined rows are copied the same way when they can
be read; a sink whose cursor is lost starts again at the first salvaged row
(the upstream absorbs rows sent twice: same series, same timestamp).
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from gateway.outbox.blocks import INSERT_BLOCK, BlockError, pack, unpack

log = logging.getLogger(__name__)

SALVAGE_LOST = "outbox_damaged"  # the alarm raised after a salvage
_CHUNK = 5000  # rows read and inserted per step
_NO_BOUND = 1 << 62  # ids are searched up to this when the file cannot tell its highest


@dataclass
class Salvage:
    """What a salvage found: where the damaged file went and what came across."""

    moved_to: Path
    damage: str
    copied: int = 0  # rows now in the new file
    unreadable: int = 0  # ids in holes that could not be read (at most that many rows)
    holes: list[tuple[int, int]] = field(default_factory=list)  # (first, last) unreadable ids
    tail_lost: bool = False  # the end of the table could not be read: how much is unknown
    cursors_lost: bool = False
    quarantine_copied: int = 0
    quarantine_unreadable: int = 0

    def summary(self) -> str:
        """One line for the log and the alarm."""
        tail = " and an unknown number at the end" if self.tail_lost else ""
        cursors = "; sink cursors lost, sending every salvaged row again" if self.cursors_lost else ""
        return (f"outbox was damaged ({self.damage}); moved to {self.moved_to.name}: "
                f"{self.copied} rows salvaged, {self.unreadable} unreadable{tail}{cursors}")

    def details(self) -> dict[str, object]:
        """For the alarm's ``details``."""
        return {"moved_to": str(self.moved_to), "salvaged_rows": self.copied,
                "unreadable_rows": self.unreadable, "tail_lost": self.tail_lost,
                "holes": [list(h) for h in self.holes[:20]], "cursors_lost": self.cursors_lost}


def open_damaged(path: Path) -> sqlite3.Connection:
    """A read-only connection to a moved-aside file (its WAL if it can, else without)."""
    for uri in (f"file:{path}?mode=ro",
                f"file:{path}?mode=ro&immutable=1"):  # the WAL or its index may be what broke
        con = sqlite3.connect(uri, uri=True)
        # A file cut short says in its header it is longer than it is: SQLite calls that
        # corrupt at once unless the schema is "writable" (nothing is written: read-only).
        con.execute("PRAGMA writable_schema=ON")
        con.execute("PRAGMA cell_size_check=ON")  # a damaged cell is an error, not garbage
        try:
            con.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            return con
        except sqlite3.Error:
            con.close()
    raise sqlite3.DatabaseError(f"{path.name}: no schema can be read")


def salvage_into(src: sqlite3.Connection, dst: sqlite3.Connection, sinks: list[str],
                 report: Salvage) -> None:
    """Copy rows, cursors, counters and quarantine from ``src`` into the empty ``dst``.

    ``src`` holds blocks (``gateway.outbox.store``), or rows one per reading when it was
    written by the version before blocks (they are packed into blocks on the way)."""
    tables = _tables(src)
    heads = [h for h in (_first_int(src, ["SELECT value FROM meta WHERE key = 'head'"]),
                         _first_int(src, ["SELECT seq FROM sqlite_sequence WHERE name = 'rows'"]))
             if h is not None]
    first_id = None
    high = max(heads, default=0)
    if "rows" in tables:  # a file of the version before blocks
        head = _first_int(src, ["SELECT seq FROM sqlite_sequence WHERE name = 'rows'",
                                "SELECT max(id) FROM rows"])
        holes: list[tuple[int, int | None]] = []
        for chunk in _readable_rows(src, "rows", "id, kind, device, ts, line, doc", head, holes):
            good = [(*r[1:], r[0]) for r in chunk if _valid_row(r)]
            if good:
                dst.execute(INSERT_BLOCK, pack(good))
                if first_id is None:
                    first_id = good[0][5]
                high = max(high, good[-1][5])
            report.copied += len(good)
            report.unreadable += len(chunk) - len(good)
        _count_holes(report, holes)
        high = max(high, head or 0)
    if "blocks" in tables:
        first, high = _salvage_blocks(src, dst, report, high)
        # (a file whose conversion stopped midway: its blocks hold the oldest rows)
        first_id = min((f for f in (first_id, first) if f is not None), default=None)
    # ids are never reused: the new file goes on after the old one's highest
    try:
        cursors = src.execute("SELECT sink, last_id FROM cursors").fetchall()
    except sqlite3.DatabaseError:
        cursors = None
    if cursors is None:
        report.cursors_lost = True
        start = (first_id - 1) if first_id is not None else high
        cursors = [(sink, start) for sink in sinks]
    dst.executemany("INSERT OR REPLACE INTO cursors(sink, last_id) VALUES (?, ?)", cursors)
    with contextlib.suppress(sqlite3.DatabaseError):
        dst.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                        src.execute("SELECT key, value FROM meta").fetchall())
    dst.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('head', ?)", (high,))
    q_head = _first_int(src, ["SELECT seq FROM sqlite_sequence WHERE name = 'quarantine'",
                              "SELECT max(id) FROM quarantine"])
    q_holes: list[tuple[int, int | None]] = []
    for chunk in _readable_rows(src, "quarantine", "id, sink, row_id, kind, device, ts, line, doc, "
                                "status, error, at", q_head, q_holes):
        report.quarantine_copied += _insert(
            dst, "INSERT INTO quarantine(id, sink, row_id, kind, device, ts, line, doc, status, "
                 "error, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", chunk)
    report.quarantine_unreadable = _count(q_holes)


def _salvage_blocks(src: sqlite3.Connection, dst: sqlite3.Connection, report: Salvage,
                    high: int) -> tuple[int | None, int]:
    """Copy the blocks that read and decode; return the first row id copied and the
    highest id known. A block is keyed by its last row id, so a hole between two
    readable blocks holds the row ids up to the next one's first."""
    head = _first_int(src, ["SELECT value FROM meta WHERE key = 'head'",  # None: no bound
                            "SELECT max(id) FROM blocks"])
    holes: list[tuple[int, int | None]] = []
    firsts: dict[int, int] = {}  # block id -> its first row id, of every block read
    first_id = None
    for chunk in _readable_rows(src, "blocks", "id, first_id, rows, events, ts, body", head, holes):
        for block in chunk:
            block_id, first, count = block[0], block[1], block[2]
            firsts[block_id] = first
            try:
                rows = unpack(block[5])
                if (rows[0][0], rows[-1][0], len(rows)) != (first, block_id, count):
                    raise BlockError("its columns do not match its rows")
            except (BlockError, TypeError, IndexError) as exc:
                log.debug("block %s does not decode: %s", block_id, exc)
                if isinstance(first, int) and isinstance(block_id, int) and first <= block_id:
                    holes.append((first, block_id))
                continue
            if _insert(dst, INSERT_BLOCK, [block]):
                report.copied += count
                if first_id is None:
                    first_id = first
                high = max(high, block_id)
            else:
                holes.append((first, block_id))
    fixed = []
    keys = sorted(firsts)
    for a, b in holes:
        if b is not None and b not in firsts:  # a hole between readable blocks (key space)
            i = bisect.bisect_right(keys, b)
            if i < len(keys):
                b = firsts[keys[i]] - 1
        fixed.append((a, b))
    _count_holes(report, _merged(fixed))
    return first_id, max(high, head or 0)


def _merged(holes: list[tuple[int, int | None]]) -> list[tuple[int, int | None]]:
    """Holes in id order, overlapping ones as one (a block's key read, its cell not: the
    search and the block both name its rows)."""
    out: list[tuple[int, int | None]] = []
    for a, b in sorted(holes, key=lambda h: h[0]):
        if out and (out[-1][1] is None or a <= out[-1][1] + 1):
            last = out[-1]
            out[-1] = (last[0], None if b is None or last[1] is None else max(last[1], b))
        else:
            out.append((a, b))
    return out


def _count_holes(report: Salvage, holes: list[tuple[int, int | None]]) -> None:
    report.holes.extend(h for h in holes if h[1] is not None)
    report.unreadable += _count(holes)
    report.tail_lost = report.tail_lost or any(h[1] is None for h in holes)


def _valid_row(row: tuple) -> bool:
    """A row of the version before, ``(id, kind, device, ts, line, doc)``, with the types
    its table declared (a damaged page can hand back anything)."""
    row_id, kind, device, ts, line, doc = row
    return (isinstance(row_id, int) and isinstance(kind, int) and isinstance(device, str)
            and isinstance(ts, (int, float)) and isinstance(line, str)
            and (doc is None or isinstance(doc, str)))


def _tables(src: sqlite3.Connection) -> set[str]:
    try:
        return {name for (name,) in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError:
        return {"blocks"}


def move_aside(path: Path, aside: Path) -> None:
    """Move the file and its -wal/-shm together (the WAL belongs to its file's name)."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")


def _readable_rows(src: sqlite3.Connection, table: str, columns: str, head: int | None,
                   holes: list[tuple[int, int | None]]):
    """Chunks of readable rows in id order (never empty). The ids that could not be read
    go into ``holes`` as (first, last); last is None for an end of unknown length."""
    bound = head if head is not None else _NO_BOUND
    last = 0
    while True:
        chunk: list[tuple] = []
        try:
            cur = src.execute(f"SELECT {columns} FROM {table} WHERE id > ? ORDER BY id", (last,))
            while True:
                row = cur.fetchone()
                if row is None:
                    break
                chunk.append(row)
                last = row[0]
                if len(chunk) >= _CHUNK:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk
            return
        except sqlite3.DatabaseError as exc:
            if chunk:
                yield chunk
            nxt = _next_readable(src, table, last, bound)
            if nxt == last + 1:
                # the scan failed on the very row a seek reads (its key is readable, the
                # rest of it is not): that row is the hole
                nxt = _next_readable(src, table, nxt, bound)
            if nxt is None:  # nothing readable after the hole
                holes.append((last + 1, head if head is not None and head > last else None))
                log.debug("%s: unreadable after id %d (%s)", table, last, exc)
                return
            holes.append((last + 1, nxt - 1))
            last = nxt - 1


def _count(holes: list[tuple[int, int | None]]) -> int:
    """Ids in the holes of known length."""
    return sum(end - first + 1 for first, end in holes if end is not None)


def _next_readable(src: sqlite3.Connection, table: str, after: int, bound: int) -> int | None:
    """The first id after ``after`` that a seek can read, or None (none up to ``bound``)."""
    def seek(x: int) -> int | None | bool:  # the first id >= x; None: none; False: unreadable
        try:
            row = src.execute(f"SELECT id FROM {table} WHERE id >= ? ORDER BY id LIMIT 1",
                              (x,)).fetchone()
        except sqlite3.DatabaseError:
            return False
        return None if row is None else row[0]

    bad, step = after, 1
    while True:
        x = after + step
        if x > bound:
            x = bound + 1
        found = seek(x)
        if found is not False:
            break
        bad = x
        if x > bound:
            return None
        step *= 2
    good = x
    while good - bad > 1:  # the smallest readable start between the last bad and good
        mid = (bad + good) // 2
        r = seek(mid)
        if r is False:
            bad = mid
        else:
            good, found = mid, r
    return None if found is None else int(found)  # a seek that read found it: an id


def _first_int(con: sqlite3.Connection, queries: list[str]) -> int | None:
    for query in queries:
        try:
            row = con.execute(query).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row and isinstance(row[0], int):
            return row[0]
    return None


def _insert(dst: sqlite3.Connection, query: str, chunk: list[tuple]) -> int:
    """Insert a chunk; a row the new file refuses (garbage from a damaged page) is skipped."""
    before = dst.total_changes
    try:  # inside the caller's transaction: a failed row alone is undone
        dst.executemany(query, chunk)
    except sqlite3.Error:
        for row in chunk:  # the rows before the refused one are in already: refused again
            with contextlib.suppress(sqlite3.Error):
                dst.execute(query, row)
    return dst.total_changes - before
