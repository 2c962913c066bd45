"""The salvage of a damaged outbox, step by step, on small files.

tests/test_state_files.py damages real files; here the damage is put exactly where a
test wants it (a wrapper that makes chosen ids unreadable, as a damaged page does), so
each step of the search for readable rows can be checked."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.outbox import READING, SqliteOutbox
from gateway.outbox.recovery import Salvage


def test_the_summary_says_what_was_salvaged_and_lost() -> None:
    report = Salvage(moved_to=Path("/x/outbox.sqlite.corrupt-1"), damage="malformed",
                     copied=7, unreadable=3, holes=[(4, 6)])
    assert report.summary() == ("outbox was damaged (malformed); moved to "
                                "outbox.sqlite.corrupt-1: 7 rows salvaged, 3 unreadable")
    report.tail_lost = report.cursors_lost = True
    assert report.summary().endswith("3 unreadable and an unknown number at the end; sink "
                                     "cursors lost, sending every salvaged row again")
