"""Salvage of a damaged outbox file: copy what can still be read into a new one.

A power cut on an SD card can leave pages of the outbox unreadable ("database
disk image is malformed"). The damaged file is moved aside by the store; this
copies its rows, in id order and with their ids, into the new file, stepping
over the unreadable pages, and counts what could not be read.

How it steps over them: rows are read in id order until the read fails; then
seeks to ids further on (1, 2, 4, ... past the last good id) find one that lands
on a readable page, and a binary search narrows it to the first readable id
after the hole. The ids in between were unreadable; they are counted as lost
(an upper bound: ids deleted before the damage are among them). Rows already
confirmed by every sink were purged long before, so the count is close.

Cursors, counters and quarantined rows are copied the same way when they can
be read; a sink whose cursor is lost starts again at the first salvaged row
(the upstream absorbs rows sent twice: same series, same timestamp).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

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
    """Copy rows, cursors, counters and quarantine from ``src`` into the empty ``dst``."""
    head = _first_int(src, ["SELECT seq FROM sqlite_sequence WHERE name = 'rows'",
                            "SELECT max(id) FROM rows"])
    first_id = None
    holes: list[tuple[int, int | None]] = []
    for chunk in _readable_rows(src, "rows", "id, kind, device, ts, line, doc", head, holes):
        copied = _insert(dst, "INSERT INTO rows(id, kind, device, ts, line, doc) "
                              "VALUES (?, ?, ?, ?, ?, ?)", chunk)
        report.copied += copied
        report.unreadable += len(chunk) - copied
        if first_id is None:  # chunks are never empty
            first_id = chunk[0][0]
    report.holes.extend(h for h in holes if h[1] is not None)
    report.unreadable += _count(holes)
    report.tail_lost = report.tail_lost or any(h[1] is None for h in holes)
    # ids are never reused: the new file goes on after the old one's highest
    high = max(head or 0, dst.execute("SELECT coalesce(max(id), 0) FROM rows").fetchone()[0])
    dst.execute("DELETE FROM sqlite_sequence WHERE name = 'rows'")
    dst.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('rows', ?)", (high,))
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
    q_head = _first_int(src, ["SELECT seq FROM sqlite_sequence WHERE name = 'quarantine'",
                              "SELECT max(id) FROM quarantine"])
    q_holes: list[tuple[int, int | None]] = []
    for chunk in _readable_rows(src, "quarantine", "id, sink, row_id, kind, device, ts, line, doc, "
                                "status, error, at", q_head, q_holes):
        report.quarantine_copied += _insert(
            dst, "INSERT INTO quarantine(id, sink, row_id, kind, device, ts, line, doc, status, "
                 "error, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", chunk)
    report.quarantine_unreadable = _count(q_holes)


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
