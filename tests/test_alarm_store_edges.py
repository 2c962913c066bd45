"""The alarm state file's edges, at unit level (found by mutation testing, issue 15).

Each test drives an AlarmStore directly on a FakeClock and a real SQLite file in
tmp_path; faults a real file cannot be told to produce are injected by replacing
one method. No sleeps: waits are on conditions.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from gateway.alarms import store as store_module
from gateway.alarms.manager import AlarmManager, Transition
from gateway.alarms.store import FILE_NAME, AlarmStore, StateFileError
from gateway.clock import FakeClock


def rows(path: Path, query: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(query).fetchall()


async def test_a_file_that_is_not_a_database_is_moved_aside_and_a_new_one_started(tmp_path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / FILE_NAME).write_bytes(b"this was never a database\n" * 100)
    clock = FakeClock(1_700_000_000.0)  # 2023-11-14T22:13:20Z
    store = AlarmStore(state_dir=state, clock=clock)
    assert await store.open() == []
    aside = state / f"{FILE_NAME}.corrupt-20231114T221320"
    assert store.moved_aside == aside and "not a database" in store.damage
    assert aside.read_bytes().startswith(b"this was never")
    assert store.unwritable is None
    await store.close()
