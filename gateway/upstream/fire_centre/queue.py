"""Frames waiting for the centre's confirm, in ``<state_dir>/fire_centre.sqlite3`` (WAL).

A frame is committed, whole and with its sequence number, before the alarm
listener that made it returns, so neither an outage of the centre nor a restart
of the gateway loses it; the link sends the oldest first and deletes it when the
centre confirms it. The sequence counter lives in the same file, so numbers are
not reused after a restart while frames that carry them still wait.

Writes are synchronous on the event loop on purpose: they are a handful of rows
per alarm transition (rare), a WAL commit with ``synchronous=NORMAL`` takes well
under a millisecond, and "committed before the listener returns" is the whole
durability argument. Frames the centre denies ``retries`` times are moved to
``refused`` (kept, counted, logged) so one bad frame cannot block the queue.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

FILE_NAME = "fire_centre.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,           -- what the frame reports (component_state, ...), for logs
    frame BLOB NOT NULL,          -- the whole frame, start to end bytes
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS refused (
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    frame BLOB NOT NULL,
    created REAL NOT NULL,
    refused REAL NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class QueuedFrame:
    """A frame in the queue: its row id, sequence number, kind and bytes."""

    id: int
    seq: int
    kind: str
    frame: bytes
    created: float


class FrameQueue:
    """The durable queue of frames for the centre (one connection, opened on first use)."""

    def __init__(self, *, path: Path):
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def close(self) -> None:
        """Close the file (everything is already committed)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def append(self, items: list[tuple[str, Callable[[int], bytes]]], now: float) -> list[int]:
        """Queue frames in one transaction: each ``(kind, make)`` gets the next sequence
        number and ``make(seq)`` builds its bytes. Returns the sequence numbers."""
        db = self.db
        seqs = []
        with db:  # BEGIN ... COMMIT
            db.execute("BEGIN IMMEDIATE")
            seq = self._get_int("next_seq")
            for kind, make in items:
                db.execute("INSERT INTO frames (seq, kind, frame, created) VALUES (?, ?, ?, ?)",
                           (seq, kind, make(seq), now))
                seqs.append(seq)
                seq = (seq + 1) & 0xFFFF
            self._set("next_seq", str(seq))
        return seqs

    def next_seq(self) -> int:
        """Take a sequence number for a frame that is not queued (heartbeat, answer)."""
        db = self.db
        with db:
            db.execute("BEGIN IMMEDIATE")
            seq = self._get_int("next_seq")
            self._set("next_seq", str((seq + 1) & 0xFFFF))
        return seq

    def oldest(self) -> QueuedFrame | None:
        """The frame to send next, or None when nothing waits."""
        row = self.db.execute("SELECT id, seq, kind, frame, created FROM frames "
                              "ORDER BY id LIMIT 1").fetchone()
        return QueuedFrame(*row) if row else None

    def remove(self, frame_id: int) -> None:
        """The centre confirmed it."""
        with self.db as db:
            db.execute("DELETE FROM frames WHERE id = ?", (frame_id,))

    def refuse(self, item: QueuedFrame, now: float, reason: str) -> None:
        """Move a frame the centre keeps denying out of the way (kept for inspection)."""
        with self.db as db:
            db.execute("INSERT OR REPLACE INTO refused VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (item.id, item.seq, item.kind, item.frame, item.created, now, reason))
            db.execute("DELETE FROM frames WHERE id = ?", (item.id,))

    def depth(self) -> int:
        """Frames waiting."""
        return self.db.execute("SELECT count(*) FROM frames").fetchone()[0]

    def oldest_created(self) -> float | None:
        """When the oldest waiting frame was made."""
        row = self.db.execute("SELECT min(created) FROM frames").fetchone()
        return row[0] if row else None

    def refused_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM refused").fetchone()[0]

    def load(self, key: str) -> object:
        """A JSON value kept across restarts (the state words last reported), or None."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def save(self, key: str, value: object) -> None:
        with self.db:
            self._set(key, json.dumps(value))

    def _get_int(self, key: str) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _set(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))
