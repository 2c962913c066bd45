"""An outbox file as the version before blocks wrote it (one ``rows`` row per reading):
its schema, verbatim, for the tests of the conversion and of the salvage of such files."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

# gateway/outbox/store.py's SCHEMA before issue 16.3 (commit 501a5ee), unchanged.
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind INTEGER NOT NULL,
    device TEXT NOT NULL,
    ts REAL NOT NULL,
    line TEXT NOT NULL,
    doc TEXT
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


def write_v1_outbox(path: Path, rows: list[tuple], cursors: dict[str, int], *,
                    head: int | None = None, dropped: int = 0) -> None:
    """A v1 file in WAL mode, as the old store left it: ``rows`` are
    ``(id, kind, device, ts, line, doc)``; ``head`` the AUTOINCREMENT counter (ids
    purged before included)."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as con:
        con.execute("PRAGMA journal_mode=WAL")
        con.executescript(V1_SCHEMA)
        con.execute("BEGIN")  # one commit, as the old store did per batch
        con.executemany("INSERT INTO rows(id, kind, device, ts, line, doc) VALUES (?, ?, ?, ?, ?, ?)",
                        rows)
        if head is not None:
            con.execute("DELETE FROM sqlite_sequence WHERE name = 'rows'")
            con.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('rows', ?)", (head,))
        con.executemany("INSERT INTO cursors(sink, last_id) VALUES (?, ?)", cursors.items())
        if dropped:
            con.execute("INSERT INTO meta(key, value) VALUES ('dropped', ?)", (dropped,))
        con.execute("COMMIT")
