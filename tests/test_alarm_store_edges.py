"""The alarm state file's edges, at unit level (found by mutation testing, issue 15).

Each test drives an AlarmStore directly on a FakeClock and a real SQLite file in
tmp_path; faults a real file cannot be told to produce on demand (a write error, a
refused open) are injected by replacing one method. No sleeps: waits are on conditions.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import random
import sqlite3
from pathlib import Path

import pytest

from gateway.alarms import store as store_module
from gateway.alarms.manager import AlarmManager
from gateway.alarms.store import (FILE_NAME, STORE_WRITE_FAILED, AlarmStore, StateFileError,
                                  is_damage)
from gateway.backoff import Backoff
from gateway.clock import FakeClock
from harness import wait_until

# A broken writer or sender (a mutant) fails fast instead of hanging the default 120 s.
pytestmark = pytest.mark.timeout(20)

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
DAY = 86400.0


def rows(path: Path, query: str, args: tuple = ()) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(query, args).fetchall()


def make(tmp_path: Path, clock: FakeClock | None = None, **kw) -> tuple[AlarmStore, AlarmManager]:
    clock = clock or FakeClock(T0)
    store = AlarmStore(state_dir=tmp_path / "state", clock=clock, **kw)
    manager = AlarmManager(clock=clock, listeners=[store.on_transition])
    return store, manager


def raise_(manager: AlarmManager, device: str = "d", *, momentary: bool = False):
    clock = manager._clock
    return manager.activate(rule="r", severity=2, device=device, kind="k", channel=None,
                            location={}, message="m", value=1.0, ts=clock.time(),
                            momentary=momentary)


def failing_once(store: AlarmStore, times: int = 1, exc: Exception | None = None):
    """Make the next ``times`` batch writes fail (a disk fault on demand)."""
    real = store._write
    left = {"n": times}

    def write(*args):
        if left["n"] > 0:
            left["n"] -= 1
            raise exc or sqlite3.OperationalError("disk I/O error")
        real(*args)

    store._write = write
    return left


async def written(store: AlarmStore) -> None:
    """Everything queued is in the file (a bounded wait: a broken writer fails the test)."""
    async with asyncio.timeout(10):
        await store.wait_written()


@contextlib.asynccontextmanager
async def writing(store: AlarmStore):
    task = asyncio.create_task(store.run(), name="test-alarm-store")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class RecordingBackoff(Backoff):
    """The delays the writer asks for, recorded; it is not made to wait."""

    made: list[dict] = []

    def __init__(self, **kw):
        super().__init__(**kw)
        RecordingBackoff.made.append(kw)
        self.ceilings: list[float] = []
        self.resets = 0

    def next_delay(self) -> float:
        self.ceilings.append(min(self.cap, self.initial * (2 ** self.attempt)))
        super().next_delay()
        return 0.0

    def reset(self) -> None:
        self.resets += 1
        super().reset()


# -- opening ------------------------------------------------------------------------------------


async def test_a_new_file_is_wal_fully_synced_bounded_and_versioned(tmp_path) -> None:
    store = AlarmStore(state_dir=tmp_path / "new" / "site" / "state", clock=FakeClock(T0))
    assert store.stats()["unwritable"] == 1 and store.stats()["history_rows"] == 0  # not open yet
    assert await store.history() == [] and await store.recently_closed(since=0) == []
    with pytest.raises(sqlite3.OperationalError, match="^state file is not open$"):
        await store.flush_once()
    assert await store.open() == []
    db = store._db
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    assert db.execute("PRAGMA journal_size_limit").fetchone() == (4 * 1024 * 1024,)
    assert db.in_transaction is False  # autocommit: the writer's BEGIN is its own
    assert store.unwritable is None and store.moved_aside is None and store.damage is None
    assert store.stats() == {"pending": 0, "history_rows": 0, "written_total": 0,
                             "write_errors_total": 0, "history_pruned_total": 0,
                             "history_dropped_total": 0, "unwritable": 0}
    await store.close()
    assert store._db is None
    assert rows(store.path, "PRAGMA user_version") == [(2,)]


async def test_an_unusable_state_dir_is_a_state_file_error_naming_it(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = AlarmStore(state_dir=blocker / "state", clock=FakeClock())
    with pytest.raises(StateFileError) as caught:
        await store.open()
    assert caught.value.path == blocker / "state" / FILE_NAME
    assert "Not a directory" in caught.value.detail
    assert str(caught.value) == f"alarm state file {caught.value.path}: {caught.value.detail}"


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
async def test_a_full_disk_making_the_state_dir_does_not_stop_the_start(
        tmp_path, monkeypatch, code) -> None:
    def full(self, *args, **kwargs):
        raise OSError(code, "No space left on device")

    monkeypatch.setattr(Path, "mkdir", full)  # a full disk, on demand
    store, _ = make(tmp_path)
    assert await store.open() == []
    assert store.unwritable and store.stats()["unwritable"] == 1


def test_damage_is_the_content_not_the_disk() -> None:
    assert is_damage(sqlite3.DatabaseError("file is not a database"))
    assert not is_damage(sqlite3.OperationalError("disk I/O error"))
    assert not is_damage(OSError(errno.ENOSPC, "full"))


async def test_open_alarms_come_back_in_id_order_skipping_an_unreadable_one(tmp_path, caplog) -> None:
    store, manager = make(tmp_path)
    await store.open()
    first = raise_(manager, "a")
    second = raise_(manager, "b")
    closed = raise_(manager, "c", momentary=True)
    manager.ack(closed.id, by="op")
    await store.flush_once()
    await store.close()
    with contextlib.closing(sqlite3.connect(store.path)) as db, db:
        db.execute("INSERT INTO open_alarms VALUES ('0-bad', '{not json', 0)")
    again, _ = make(tmp_path)
    records = await again.open()
    assert [r["id"] for r in records] == sorted([first.id, second.id])
    assert records[0] == first.to_record()
    assert "an unreadable open alarm was skipped" in caplog.text
    assert again.stats()["history_rows"] == 5  # raised x3, acked, closed
    await again.close()


async def test_history_older_than_history_days_goes_at_open(tmp_path) -> None:
    clock = FakeClock(T0)
    store, manager = make(tmp_path, clock, history_days=1)
    await store.open()
    old = raise_(manager, "old")  # at T0
    clock.advance(1)
    newer = raise_(manager, "newer")  # at T0 + 1
    await store.flush_once()
    await store.close()

    clock.advance(DAY - 0.5)  # T0 + 1 day + 0.5 s: only the first is past one day
    again, _ = make(tmp_path, clock, history_days=1)
    await again.open()
    assert [h["alarm_id"] for h in await again.history()] == [newer.id]
    assert again.stats()["history_rows"] == 1
    await again.close()



async def test_the_prune_period_is_exactly_prune_every(tmp_path) -> None:
    clock = FakeClock(T0)
    store, manager = make(tmp_path, clock, history_days=1 / 24)  # one hour
    await store.open()
    async with writing(store):
        raise_(manager, "a")
        await written(store)
        clock.advance(store_module.PRUNE_EVERY)  # exactly: due now
        raise_(manager, "b")
        await written(store)
        # "a" was exactly one hour old: not older than history_days, kept
        assert store.stats()["history_rows"] == 2
        clock.advance(1.0)
        raise_(manager, "c")
        await written(store)
        assert store.stats()["history_rows"] == 3  # not due again before PRUNE_EVERY more
        clock.advance(store_module.PRUNE_EVERY)
        raise_(manager, "d")
        await written(store)
        assert {h["alarm"]["device"] for h in await store.history()} == {"c", "d"}
        assert store.stats()["history_rows"] == 2
    await store.close()


# -- damaged and unwritable files ---------------------------------------------------------------


async def test_a_file_that_is_not_a_database_is_moved_aside_and_a_new_one_started(tmp_path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / FILE_NAME).write_bytes(b"this was never a database\n" * 100)
    store, manager = make(tmp_path)
    assert await store.open() == []
    aside = state / f"{FILE_NAME}.corrupt-20231114T221320"
    assert store.moved_aside == aside and "not a database" in store.damage
    assert aside.read_bytes().startswith(b"this was never")
    assert store.unwritable is None
    raise_(manager)
    await store.flush_once()
    await store.close()
    assert rows(state / FILE_NAME, "SELECT count(*) FROM transitions") == [(1,)]

    # damaged again in the same second: a second name, the first kept
    (state / FILE_NAME).write_bytes(b"garbage again\n" * 100)
    again, _ = make(tmp_path)
    await again.open()
    assert again.moved_aside == state / f"{FILE_NAME}.corrupt-20231114T221320-2"
    assert again.moved_aside.read_bytes().startswith(b"garbage again")
    assert aside.read_bytes().startswith(b"this was never")
    await again.close()


async def test_damaged_pages_move_the_file_aside_with_its_wal_and_shm(tmp_path) -> None:
    store, manager = make(tmp_path)
    await store.open()
    alarm = raise_(manager, momentary=True)
    for i in range(100):
        manager.shelve(alarm.id, by="op", note=f"{i} " + "x" * 500, minutes=5)
    await store.flush_once()
    await store.close()
    path = store.path
    # Another connection keeps the WAL (and its -shm) in place, with a last write in it.
    keeper = sqlite3.connect(path, isolation_level=None)
    try:
        keeper.execute("PRAGMA wal_autocheckpoint=0")
        keeper.execute("DELETE FROM open_alarms")
        with open(path, "r+b") as f:  # pages in the middle overwritten
            f.seek(4096 * 8)
            f.write(random.Random(7).randbytes(4096 * 6))
        again, _ = make(tmp_path)
        assert await again.open() == []
        aside = again.moved_aside
        assert aside is not None and again.damage.startswith("quick_check: *** in database main ***")
        for suffix in ("", "-wal", "-shm"):
            assert Path(f"{aside}{suffix}").exists(), suffix
        assert again.stats()["history_rows"] == 0
        await again.close()
    finally:
        keeper.close()


async def test_damage_then_a_refused_new_file_still_starts(tmp_path, caplog) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / FILE_NAME).write_bytes(b"not sqlite\n" * 100)
    store, manager = make(tmp_path)
    real = store._open_writable

    def open_writable(*, restore):
        if not restore:  # the new file cannot be made (disk full right then)
            raise sqlite3.OperationalError("database or disk is full")
        return real(restore=restore)

    store._open_writable = open_writable
    assert await store.open() == []
    assert store.moved_aside is not None and store.unwritable == "database or disk is full"


async def test_a_file_that_cannot_be_written_at_open_is_read_then_written_later(tmp_path) -> None:
    store, manager = make(tmp_path)
    await store.open()
    alarm = raise_(manager)
    store.webhook_saved("e1", 1, alarm.id, "raised", b"{1}", new=True)
    store.webhook_saved("e1", 2, alarm.id, "acked", b"{2}", new=True)
    await store.flush_once()
    await store.close()

    alarms: list[tuple[str, bool, str]] = []
    again, manager = make(tmp_path, on_alarm=lambda *a: alarms.append(a))
    real = again._open_writable
    refusals = {"n": 1}

    def open_writable(*, restore):
        if refusals["n"]:
            refusals["n"] -= 1
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return real(restore=restore)

    again._open_writable = open_writable
    [record] = await again.open()
    assert record == alarm.to_record()
    # with no WAL to read, the read creates nothing (no -shm: it could not on a full disk)
    assert not Path(f"{again.path}-shm").exists() and not Path(f"{again.path}-wal").exists()
    assert again.webhook_backlog == {"e1": [(1, alarm.id, "raised", b"{1}"),
                                            (2, alarm.id, "acked", b"{2}")]}
    assert again.unwritable == "attempt to write a readonly database" and again.moved_aside is None
    again.webhook_backlog.pop("e1")  # taken by its sender (as the gateway does)
    [restored] = manager.restore([record])
    async with writing(again):
        await wait_until(lambda: len(alarms) == 2, 5, "the store's alarm, then written again")
        assert alarms == [(STORE_WRITE_FAILED, True,
                           "alarm state file cannot be written (attempt to write a readonly "
                           "database): alarm history is kept in memory only until it can"),
                          (STORE_WRITE_FAILED, False, "alarm state file written again")]
        manager.ack(restored.id, by="op")
        await written(again)
        assert again.unwritable is None and again.write_errors == 0
        assert again.webhook_backlog == {}  # the reopen for writing restores nothing again
    await again.close()
    assert [e for (e,) in rows(again.path, "SELECT event FROM transitions ORDER BY seq")] == [
        "raised", "acked"]


async def test_unwritable_at_open_reads_the_wal_too(tmp_path) -> None:
    store, _ = make(tmp_path)
    await store.open()
    await store.close()  # the schema is in the main file now
    path = store.path
    keeper = sqlite3.connect(path, isolation_level=None)  # the WAL stays after the close
    try:
        keeper.execute("PRAGMA wal_autocheckpoint=0")
        keeper.execute("SELECT count(*) FROM open_alarms").fetchall()
        store, manager = make(tmp_path)
        await store.open()
        alarm = raise_(manager)
        await store.flush_once()
        await store.close()
        assert Path(f"{path}-wal").stat().st_size > 0
        again, _ = make(tmp_path)

        def refused(*, restore):
            raise sqlite3.OperationalError("disk I/O error")

        again._open_writable = refused
        assert [r["id"] for r in await again.open()] == [alarm.id]
    finally:
        keeper.close()


async def test_unwritable_at_open_and_unreadable_still_starts(tmp_path, caplog) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / FILE_NAME).write_bytes(b"not sqlite\n" * 100)
    store, _ = make(tmp_path)

    def refused(*, restore):
        raise sqlite3.OperationalError("disk I/O error")

    store._open_writable = refused
    assert await store.open() == []
    assert "cannot be read either" in caplog.text and store.unwritable == "disk I/O error"

    # an older file with no webhook table: its open alarms still come back
    old = tmp_path / "old"
    old.mkdir()
    with contextlib.closing(sqlite3.connect(old / FILE_NAME)) as db, db:
        db.execute("CREATE TABLE open_alarms (id TEXT PRIMARY KEY, record TEXT, updated REAL)")
        db.execute("""INSERT INTO open_alarms VALUES ('x', '{"id": "x"}', 0)""")
    older = AlarmStore(state_dir=old, clock=FakeClock())
    older._open_writable = refused
    assert await older.open() == [{"id": "x"}] and older.webhook_backlog == {}


# -- writing ------------------------------------------------------------------------------------


async def test_history_is_newest_first_per_alarm_and_limited(tmp_path) -> None:
    clock = FakeClock(T0)
    store, manager = make(tmp_path, clock)
    await store.open()
    a = raise_(manager, "a", momentary=True)
    clock.advance(1)
    manager.ack(a.id, by="op", note="seen")  # acked, closed
    clock.advance(1)
    b = raise_(manager, "b")
    await store.flush_once()
    history = await store.history()
    assert [(h["alarm_id"], h["event"], h["ts"], h["by"], h["note"]) for h in history] == [
        (b.id, "raised", T0 + 2, None, None),
        (a.id, "closed", T0 + 1, "op", "seen"),
        (a.id, "acked", T0 + 1, "op", "seen"),
        (a.id, "raised", T0, None, None)]
    assert history[0]["alarm"] == b.to_json()
    assert [h["event"] for h in await store.history(alarm_id=a.id, limit=2)] == ["closed", "acked"]
    assert await store.recently_closed(since=T0 + 1) == [a.id]
    assert await store.recently_closed(since=T0 + 1.5) == []
    for _ in range(110):
        manager.shelve(b.id, by="op", minutes=1)
    await store.flush_once()
    assert len(await store.history()) == 100  # the default limit
    assert store.stats()["written_total"] == 114 and store.written == 114
    await store.close()


async def test_the_history_cap_keeps_the_newest_max_transitions(tmp_path) -> None:
    store, manager = make(tmp_path, max_transitions=100)
    await store.open()
    alarm = raise_(manager)
    for _ in range(104):
        manager.shelve(alarm.id, by="op", minutes=1)
    await store.flush_once()
    assert store.stats()["history_rows"] == 105  # within the 5 % slack: no DELETE yet
    assert store.history_pruned == 0
    manager.shelve(alarm.id, by="op", minutes=1)
    await store.flush_once()  # 106 > 105: back to the newest 100
    assert store.stats()["history_rows"] == 100 and store.history_pruned == 6
    assert rows(store.path, "SELECT min(seq), max(seq), count(*) FROM transitions") == [(7, 106, 100)]
    for _ in range(6):
        manager.shelve(alarm.id, by="op", minutes=1)
    await store.flush_once()
    assert store.stats()["history_rows"] == 100 and store.history_pruned == 12
    await store.close()


async def test_closed_alarms_leave_the_open_table_and_the_latest_state_wins(tmp_path) -> None:
    clock = FakeClock(T0)
    store, manager = make(tmp_path, clock)
    await store.open()
    alarm = raise_(manager, "a")
    gone = raise_(manager, "b", momentary=True)
    manager.ack(alarm.id, by="op")
    clock.advance(5)
    manager.ack(gone.id, by="op")  # closes
    await store.flush_once()
    found = rows(store.path, "SELECT id, record, updated FROM open_alarms")
    assert [(i, json.loads(r), u) for i, r, u in found] == [(alarm.id, alarm.to_record(), T0 + 5)]
    await store.close()


def test_too_many_transitions_waiting_drop_the_oldest_history_but_not_the_open_state(
        tmp_path, caplog) -> None:
    store, manager = make(tmp_path, max_pending=3)
    alarm = raise_(manager)
    manager.shelve(alarm.id, by="op", minutes=1)
    manager.shelve(alarm.id, by="op", minutes=2)
    assert "transitions waiting" not in caplog.text  # at the bound: nothing said, nothing dropped
    manager.shelve(alarm.id, by="op", minutes=3)
    assert store.stats()["pending"] == 3 and store.history_dropped == 1  # exactly past it
    assert [t.event for t in store._pending] == ["shelved"] * 3
    manager.unshelve(alarm.id, by="op")
    assert store.history_dropped == 2
    assert caplog.text.count("transitions waiting") == 1  # said once
    assert store.stats()["history_dropped_total"] == 2


async def test_the_writer_commits_what_arrives_and_counts(tmp_path) -> None:
    store, manager = make(tmp_path)
    await store.open()
    async with writing(store):
        raise_(manager)
        await wait_until(lambda: store.written == 1, 5, "written")
        await written(store)
        assert rows(store.path, "SELECT count(*) FROM open_alarms") == [(1,)]
    await store.close()


async def test_a_failed_batch_goes_back_in_front_and_newer_states_win(tmp_path) -> None:
    clock = FakeClock(T0)
    store, manager = make(tmp_path, clock)
    await store.open()
    kept = raise_(manager, "kept")
    closing = raise_(manager, "closing", momentary=True)
    shelved = raise_(manager, "shelved")
    await store.flush_once()
    manager.ack(kept.id, by="op")  # in the failed batch
    manager.ack(closing.id, by="op")  # closed in the failed batch
    manager.shelve(shelved.id, by="op", minutes=1)
    failing_once(store)
    with pytest.raises(sqlite3.OperationalError):
        await store.flush_once()
    assert store.written == 3
    manager.shelve(shelved.id, by="op", minutes=2)  # newer than the failed batch's state
    await store.flush_once()
    assert store.written == 8
    events = rows(store.path, "SELECT alarm_id, event FROM transitions ORDER BY seq")
    assert events[3:] == [(kept.id, "acked"), (closing.id, "acked"), (closing.id, "closed"),
                          (shelved.id, "shelved"), (shelved.id, "shelved")]
    records = {i: json.loads(r) for i, r in rows(store.path, "SELECT id, record FROM open_alarms")}
    assert records == {kept.id: kept.to_record(), shelved.id: shelved.to_record()}
    assert records[shelved.id]["shelved_until"] == T0 + 120
    await store.close()


async def test_a_failed_batch_past_max_pending_sheds_the_oldest(tmp_path, caplog) -> None:
    store, manager = make(tmp_path, max_pending=2)
    await store.open()
    alarm = raise_(manager)
    manager.shelve(alarm.id, by="op", minutes=1)
    failing_once(store)
    with pytest.raises(sqlite3.OperationalError):
        await store.flush_once()
    assert store.history_dropped == 0 and store.stats()["pending"] == 2
    assert "transitions waiting" not in caplog.text  # back at the bound, not past it
    manager.unshelve(alarm.id, by="op")
    assert store.history_dropped == 1
    await store.flush_once()
    assert [e for (e,) in rows(store.path, "SELECT event FROM transitions ORDER BY seq")] == [
        "shelved", "unshelved"]
    await store.close()


async def test_a_failed_batch_requeued_past_max_pending_is_shed(tmp_path) -> None:
    store, manager = make(tmp_path, max_pending=2)
    await store.open()
    alarm = raise_(manager)
    manager.shelve(alarm.id, by="op", minutes=1)
    gate = asyncio.Event()
    real = store._write

    def slow_failing(*args):  # fails after two more transitions arrived meanwhile
        asyncio.run_coroutine_threadsafe(gate.wait(), loop).result()
        raise sqlite3.OperationalError("disk I/O error")

    loop = asyncio.get_running_loop()
    store._write = slow_failing
    flush = asyncio.create_task(store.flush_once())
    await wait_until(lambda: store._inflight is not None, 5, "the write started")
    manager.unshelve(alarm.id, by="op")
    manager.shelve(alarm.id, by="op", minutes=2)
    gate.set()
    with pytest.raises(sqlite3.OperationalError):
        await flush
    assert store.stats()["pending"] == 2 and store.history_dropped == 2
    store._write = real
    await store.flush_once()
    assert [e for (e,) in rows(store.path, "SELECT event FROM transitions ORDER BY seq")] == [
        "unshelved", "shelved"]
    await store.close()


async def test_a_cancelled_flush_is_written_once_and_close_waits_for_it(tmp_path) -> None:
    store, manager = make(tmp_path)
    await store.open()
    raise_(manager, "first")
    gate = asyncio.Event()
    real = store._write
    loop = asyncio.get_running_loop()

    def slow(*args):
        asyncio.run_coroutine_threadsafe(gate.wait(), loop).result()
        real(*args)

    store._write = slow
    flush = asyncio.create_task(store.flush_once())
    await wait_until(lambda: store._inflight is not None, 5, "the write started")
    flush.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await flush
    store._write = real
    raise_(manager, "second")
    closing = asyncio.create_task(store.close())
    await wait_until(lambda: store._lock.locked(), 5, "close waiting for the first write")
    gate.set()
    await closing
    found = rows(store.path, "SELECT alarm FROM transitions ORDER BY seq")
    assert [json.loads(a)["device"] for (a,) in found] == ["first", "second"]
    assert store.written == 2


async def test_close_writes_what_is_queued_and_survives_a_failing_write(tmp_path) -> None:
    store, manager = make(tmp_path)
    await store.open()
    raise_(manager)
    await store.close()
    assert rows(store.path, "SELECT count(*) FROM transitions") == [(1,)]
    store2, manager2 = make(tmp_path)
    await store2.open()
    raise_(manager2, "e")
    failing_once(store2, exc=OSError(errno.EIO, "Input/output error"))
    await store2.close()  # best effort: no exception
    assert store2._db is None
    await store2.close()  # twice: nothing happens


async def test_the_writer_backs_off_from_0_5_s_to_30_s_and_raises_an_alarm_once(
        tmp_path, monkeypatch, caplog) -> None:
    RecordingBackoff.made = []
    monkeypatch.setattr(store_module, "Backoff", RecordingBackoff)
    alarms: list[tuple[str, bool, str]] = []
    store, manager = make(tmp_path, on_alarm=lambda *a: alarms.append(a), max_pending=2)
    await store.open()
    left = failing_once(store, times=12)
    async with writing(store):
        raise_(manager)
        manager.shelve(manager.find("r", "d", None).id, by="op", minutes=1)
        manager.unshelve(manager.find("r", "d", None).id, by="op")  # one dropped: past 2
        await wait_until(lambda: len(alarms) == 2, 10, "written after the fault")
        assert store.written == 2 and left["n"] == 0 and store.write_errors == 12
        [made] = RecordingBackoff.made
        assert made == {"initial": 0.5, "cap": 30.0}
        assert alarms == [(STORE_WRITE_FAILED, True,
                           "alarm state file cannot be written (disk I/O error): alarm history "
                           "is kept in memory only until it can"),
                          (STORE_WRITE_FAILED, False, "alarm state file written again")]
        assert caplog.text.count("cannot write (disk I/O error)") == 1
        # failing again later: the backoff starts over, the overflow is told again
        failing_once(store, times=1)
        for minutes in (2, 3, 4):
            manager.shelve(manager.find("r", "d", None).id, by="op", minutes=minutes)
        await wait_until(lambda: len(alarms) == 4, 10, "failed and written again")
        await written(store)
    assert caplog.text.count("transitions waiting") == 2
    await store.close()


async def test_the_writer_asks_growing_delays_and_resets_after_success(tmp_path, monkeypatch) -> None:
    made: list[RecordingBackoff] = []

    def backoff(**kw):
        made.append(RecordingBackoff(**kw))
        return made[-1]

    monkeypatch.setattr(store_module, "Backoff", backoff)
    store, manager = make(tmp_path)
    await store.open()
    failing_once(store, times=8)
    async with writing(store):
        raise_(manager)
        await wait_until(lambda: made and made[0].resets, 10, "written, and the backoff reset")
        assert store.written == 1
        assert made[0].ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
        assert made[0].resets == 1 and made[0].attempt == 0
    await store.close()


# -- the webhook journal ------------------------------------------------------------------------


def traced(store: AlarmStore) -> list[str]:
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    return statements


async def test_webhook_entries_are_journalled_replaced_and_deleted(tmp_path) -> None:
    store, _ = make(tmp_path)
    await store.open()
    store.webhook_saved("e1", 1, "a", "raised", b"one", new=True)
    store.webhook_saved("e1", 2, "a", "repeated", b"two", new=True)
    store.webhook_saved("e2", 1, "b", "raised", b"three", new=True)
    await store.flush_once()
    store.webhook_saved("e1", 2, "a", "repeated", b"two, newer", new=False)
    store.webhook_done("e1", 1)
    await store.flush_once()
    assert rows(store.path, "SELECT endpoint, seq, alarm_id, event, body FROM webhook_pending "
                            "ORDER BY endpoint, seq") == [
        ("e1", 2, "a", "repeated", b"two, newer"), ("e2", 1, "b", "raised", b"three")]
    await store.close()
    again, _ = make(tmp_path)
    await again.open()
    assert again.webhook_backlog == {"e1": [(2, "a", "repeated", b"two, newer")],
                                     "e2": [(1, "b", "raised", b"three")]}
    again.forget_webhooks(["e1", "gone"])
    assert list(again.webhook_backlog) == ["e2"]
    await again.flush_once()
    assert rows(again.path, "SELECT endpoint, seq FROM webhook_pending") == [("e2", 1)]
    await again.close()


async def test_an_entry_added_and_done_before_a_write_costs_no_statement(tmp_path) -> None:
    store, _ = make(tmp_path)
    await store.open()
    statements = traced(store)
    store.webhook_saved("e", 1, "a", "raised", b"1", new=True)
    store.webhook_saved("e", 1, "a", "raised", b"1b", new=False)  # replaced, still unwritten
    store.webhook_done("e", 1)
    assert store._idle.is_set() is False
    await store.flush_once()
    assert statements == [] and store._idle.is_set()
    store.webhook_saved("e", 2, "a", "raised", b"2", new=True)
    await store.flush_once()
    statements.clear()
    store.webhook_saved("e", 2, "a", "raised", b"2b", new=False)
    store.webhook_saved("e", 2, "a", "raised", b"2c", new=False)  # replaced twice: still in the file
    store.webhook_done("e", 2)  # in the file: deleted there
    await store.flush_once()
    assert [s for s in statements if "webhook_pending" in s] == [
        "DELETE FROM webhook_pending WHERE endpoint = 'e' AND seq = 2"]
    assert rows(store.path, "SELECT count(*) FROM webhook_pending") == [(0,)]
    await store.close()


async def test_a_failed_batch_keeps_its_webhook_entries_merged_with_newer_ones(tmp_path) -> None:
    store, _ = make(tmp_path)
    await store.open()
    for seq in (1, 2):  # already in the file
        store.webhook_saved("e", seq, "a", "raised", b"old", new=True)
    await store.flush_once()
    for seq in (3, 4, 5, 6):
        store.webhook_saved("e", seq, "a", "raised", str(seq).encode(), new=True)
    store.webhook_saved("e", 1, "a", "raised", b"1", new=False)
    store.webhook_done("e", 2)
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()
    real = store._write

    def slow_failing(*args):
        asyncio.run_coroutine_threadsafe(gate.wait(), loop).result()
        raise sqlite3.OperationalError("disk I/O error")

    store._write = slow_failing
    flush = asyncio.create_task(store.flush_once())
    await wait_until(lambda: store._inflight is not None, 5, "the write started")
    # while the batch is being written (and fails):
    store.webhook_done("e", 3)  # its add never reached the file: nothing to delete
    store.webhook_saved("e", 4, "a", "raised", b"4b", new=False)  # still an add, newer body
    store.webhook_saved("e", 6, "a", "raised", b"6b", new=False)
    store.webhook_done("e", 1)  # replaced in the failed batch, now done: deleted
    gate.set()
    with pytest.raises(sqlite3.OperationalError):
        await flush
    store._write = real
    store.webhook_done("e", 6)  # an add that never reached the file
    statements = traced(store)
    await store.flush_once()
    assert sorted(s for s in statements if "webhook_pending" in s) == [
        "DELETE FROM webhook_pending WHERE endpoint = 'e' AND seq = 1",
        "DELETE FROM webhook_pending WHERE endpoint = 'e' AND seq = 2",
        "INSERT OR REPLACE INTO webhook_pending (endpoint, seq, alarm_id, event, body) "
        "VALUES ('e', 4, 'a', 'raised', x'3462')",
        "INSERT OR REPLACE INTO webhook_pending (endpoint, seq, alarm_id, event, body) "
        "VALUES ('e', 5, 'a', 'raised', x'35')"]
    assert store._idle.is_set()
    await store.close()

async def test_what_arrives_during_a_write_keeps_the_store_busy(tmp_path) -> None:
    store, manager = make(tmp_path)
    await store.open()
    for first, arrive in (("a", lambda: raise_(manager, "b")),
                          ("c", lambda: store.webhook_saved("e", 1, "a", "raised", b"1", new=True))):
        raise_(manager, first)
        gate = asyncio.Event()
        real = store._write
        loop = asyncio.get_running_loop()

        def slow(*args, real=real, gate=gate):
            asyncio.run_coroutine_threadsafe(gate.wait(), loop).result()
            real(*args)

        store._write = slow
        flush = asyncio.create_task(store.flush_once())
        await wait_until(lambda: store._inflight is not None, 5, "the write started")
        arrive()
        gate.set()
        await flush
        assert not store._idle.is_set()  # not all written yet
        store._write = real
        await store.flush_once()
        assert store._idle.is_set()
    await store.close()


@pytest.mark.parametrize("exc", [sqlite3.OperationalError("disk I/O error"),
                                 OSError(errno.EIO, "Input/output error")])
async def test_the_flush_after_a_cancelled_failing_one_writes_its_batch(tmp_path, exc) -> None:
    store, manager = make(tmp_path)
    await store.open()
    raise_(manager, "first")
    gate = asyncio.Event()
    real = store._write
    loop = asyncio.get_running_loop()

    def slow_failing(*args):
        asyncio.run_coroutine_threadsafe(gate.wait(), loop).result()
        raise exc

    store._write = slow_failing
    flush = asyncio.create_task(store.flush_once())
    await wait_until(lambda: store._inflight is not None, 5, "the write started")
    flush.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await flush
    store._write = real
    raise_(manager, "second")
    again = asyncio.create_task(store.flush_once())
    await wait_until(lambda: store._lock.locked(), 5, "waiting for the failing write")
    gate.set()
    await again  # the failed write's error is its own: this flush writes both
    found = rows(store.path, "SELECT alarm FROM transitions ORDER BY seq")
    assert [json.loads(a)["device"] for (a,) in found] == ["first", "second"]
    await store.close()


async def test_the_writer_prunes_on_its_own_every_prune_every(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(store_module, "PRUNE_EVERY", 0.05)  # real seconds the writer waits
    clock = FakeClock(T0)
    store, manager = make(tmp_path, clock, history_days=1)
    await store.open()
    async with writing(store):
        raise_(manager)
        await written(store)  # the writer has started (its prune period counts from T0)
        clock.advance(DAY + 0.5)  # no transition comes: the writer wakes by itself
        await wait_until(lambda: store.stats()["history_rows"] == 0, 10, "pruned")
    await store.close()


async def test_the_hourly_prune_keeps_exactly_history_days(tmp_path) -> None:
    clock = FakeClock(T0)
    store, manager = make(tmp_path, clock, history_days=1)
    await store.open()
    async with writing(store):
        raise_(manager, "a")  # at T0
        await written(store)
        clock.advance(DAY + 0.5)  # "a" is half a second past one day
        raise_(manager, "b")
        await written(store)
        assert [h["alarm"]["device"] for h in await store.history()] == ["b"]
    await store.close()


async def test_by_default_history_is_kept_90_days(tmp_path) -> None:
    clock = FakeClock(T0)
    store, manager = make(tmp_path, clock)
    await store.open()
    raise_(manager)
    await store.close()
    clock.advance(90 * DAY - 1)
    kept, _ = make(tmp_path, clock)
    await kept.open()
    assert kept.stats()["history_rows"] == 1
    await kept.close()
    clock.advance(2)
    gone, _ = make(tmp_path, clock)
    await gone.open()
    assert gone.stats()["history_rows"] == 0
    await gone.close()
