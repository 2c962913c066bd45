"""An outbox in memory: the same interface as the SQLite one, nothing survives a restart.

For benchmarks (the same run with and without the disk) and for trials without
storage; also what the gateway falls back to when the outbox file cannot be
opened, so alarms and upstream writes go on while the problem is reported.
Its budget is a number of rows.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from gateway.outbox.store import BUDGET_LOW_WATER, QUARANTINE_KEEP, READING, Row

_ID = 0
_KIND = 1


class MemoryOutbox:
    """Rows in a list, in id order; every method returns at once (no thread needed)."""

    blocking = False

    def __init__(self, *, max_rows: int, path: str = "memory"):
        self.path = path
        self.budget_rows = max_rows
        self.budget_bytes = 0
        self.rows = 0
        self.head = 0
        self.dropped = 0
        self._rows: list[tuple] = []  # (id, kind, device, ts, line, doc)
        self._quarantine: list[tuple] = []

    def open(self, sinks: Iterable[str]) -> dict[str, int]:
        """Start every sink at the head (there is nothing before)."""
        return {sink: self.head for sink in sinks}

    def close(self) -> None:
        """Nothing to release."""

    def append(self, rows: list[Row]) -> int:
        """Keep new rows; return the newest id."""
        head = self.head
        self._rows.extend((head + i, *row) for i, row in enumerate(rows, 1))
        self.head = head + len(rows)
        self.rows = len(self._rows)
        return self.head

    def append_rows(self, rows: list[tuple], cursors: dict[str, int]) -> int:
        """Keep rows that carry their ids, ``(kind, device, ts, line, doc, id)``; the
        cursors need no keeping (nothing is opened again from memory)."""
        self._rows.extend((i, kind, device, ts, line, doc) for kind, device, ts, line, doc, i in rows)
        self.head = max(self.head, rows[-1][5])
        self.rows = len(self._rows)
        return self.head

    def read(self, after: int, limit: int, payload: str) -> list[tuple]:
        """Up to ``limit`` rows after id ``after``, shaped like the SQLite store's."""
        start = bisect.bisect_right(self._rows, after, key=_id)
        chunk = self._rows[start:start + limit]
        if payload == "line":
            return [(r[0], r[4]) for r in chunk]
        return [(r[0], r[2], r[5]) for r in chunk]

    def advance(self, sink: str, last_id: int) -> None:
        """Nothing to record: a sink's progress matters only to a store that is opened
        again after a restart, and nothing in memory survives one."""

    def purge(self, upto: int) -> int:
        """Forget rows up to ``upto``."""
        cut = bisect.bisect_right(self._rows, upto, key=_id)
        del self._rows[:cut]
        self.rows = len(self._rows)
        return cut

    def oldest_ts(self, after: int) -> float | None:
        """Timestamp of the first row after ``after``."""
        start = bisect.bisect_right(self._rows, after, key=_id)
        return self._rows[start][3] if start < len(self._rows) else None

    def quarantine(self, sink: str, ids: list[int], status: int | None, error: str,
                   at: float) -> int:
        """Keep refused rows aside (bounded like the SQLite store's)."""
        wanted = set(ids)
        self._quarantine.extend((sink, r, status, error, at) for r in self._rows if r[0] in wanted)
        del self._quarantine[:-QUARANTINE_KEEP]
        return len(ids)

    def quarantined(self, sink: str | None = None) -> int:
        """Rows in quarantine."""
        return sum(1 for q in self._quarantine if sink is None or q[0] == sink)

    def used_bytes(self) -> int:
        """Not measured in memory."""
        return 0

    def usage(self) -> float:
        """Share of the row budget in use."""
        return len(self._rows) / self.budget_rows

    def enforce_budget(self) -> list[int]:
        """Past the budget, drop the oldest readings (never events); return their ids."""
        if len(self._rows) <= self.budget_rows:
            return []
        want = len(self._rows) - int(BUDGET_LOW_WATER * self.budget_rows)
        dropped, kept = [], []
        for row in self._rows:
            if want and row[_KIND] == READING:
                dropped.append(row[_ID])
                want -= 1
            else:
                kept.append(row)
        self._rows = kept
        self.rows = len(kept)
        self.dropped += len(dropped)
        return dropped


def _id(row: tuple) -> int:
    return row[_ID]
