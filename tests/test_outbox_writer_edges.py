"""The outbox writer's counts and timing, edge by edge (found by mutation testing): what
a commit returns and accumulates, what a failed or cancelled commit puts back, when the
writer task commits, what it sheds, purges and tells each sink it lost."""

from __future__ import annotations

import asyncio
import logging
import math
import threading

import pytest

from gateway.clock import FakeClock
from gateway.errors import OutboxError
from gateway.outbox import (
    BUFFER_OVERFLOW, EVENT, OUTBOX_WRITE_FAILED, READING, MemoryOutbox, OutboxWriter, SqliteOutbox,
)
from gateway.outbox import writer as writer_module
from harness import wait_until
from test_outbox_store import disk_cursor
from test_outbox_edges import Position, rows


def make(store=None, *, commit_rows: int = 1000, max_staged: int = 100_000,
         commit_interval: float = 60.0, clock=None, sinks=("influxdb",)):
    w = OutboxWriter(store=store or MemoryOutbox(max_rows=10**6), commit_interval=commit_interval,
                     commit_rows=commit_rows, max_staged=max_staged, clock=clock or FakeClock())
    positions = [Position(name) for name in sinks]
    for p in positions:
        w.attach(p)
    return w, positions


def lines(w) -> list[str]:
    return [line for _, line in w.store.read(0, 10**6, "line")]


async def test_commits_return_and_add_up_what_they_took() -> None:
    w, _ = make()
    await w.open()
    assert await w.commit() == 0 and w.accepted == 0  # nothing staged: nothing done
    w.add(rows(3))
    assert await w.commit() == 3
    w.add(rows(2, 3))
    assert await w.commit() == 2
    assert w.accepted == 5 and w.committed_id == 5 and w.stats()["committed_total"] == 5


class SlowAppend(SqliteOutbox):
    """A store whose next append waits in its thread until told, then works or fails."""

    def __init__(self, fail: bool, **kw):
        super().__init__(**kw)
        self.fail = fail
        self.entered = threading.Event()
        self.release = threading.Event()
        self.hold = True

    def append_rows(self, rows, cursors):  # the writer's commit
        if self.hold:
            self.hold = False
            self.entered.set()
            self.release.wait(10)
            if self.fail:
                raise OutboxError(str(self.path), "commit failed: disk I/O error")
        return super().append_rows(rows, cursors)


async def _commit_with_rows_added_meanwhile(tmp_path, *, fail: bool, cancel: bool):
    store = SlowAppend(fail, path=tmp_path / "o.sqlite", budget_bytes=1 << 30)
    w, _ = make(store)
    await w.open()
    w.add(rows(3))
    commit = asyncio.create_task(w.commit())
    await wait_until(store.entered.is_set, 5, "the commit in its thread")
    w.add(rows(2, 3))  # the pipeline goes on meanwhile
    if cancel:
        commit.cancel()
        await asyncio.sleep(0)
    store.release.set()
    try:
        result = await commit
    except asyncio.CancelledError:
        assert cancel
        result = None
    return w, result


async def test_a_failed_commit_puts_its_rows_back_in_front_of_the_newer_ones(tmp_path) -> None:
    for cancel in (False, True):
        w, result = await _commit_with_rows_added_meanwhile(tmp_path / str(cancel), fail=True,
                                                            cancel=cancel)
        assert result in (0, None) and w.accepted == 0
        assert [r[3].split()[-1] for r in w._staged] == ["0", "1", "2", "3", "4"]
        await w.flush()
        assert [line.split()[-1] for line in lines(w)] == ["0", "1", "2", "3", "4"]
        await w.close()


async def test_a_commit_that_succeeds_while_cancelled_counts_as_committed(tmp_path) -> None:
    w, result = await _commit_with_rows_added_meanwhile(tmp_path, fail=False, cancel=True)
    assert result is None  # the cancellation went through ...
    assert w.committed_id == 3 and w.accepted == 3  # ... and the commit is known
    assert w.staged == 2 and w._sinks[0].cursor == 0
    await w.flush()
    assert w.accepted == 5 and len(lines(w)) == 5
    await w.close()


async def test_the_writer_task_commits_at_the_interval_and_at_once_when_enough_wait() -> None:
    w, _ = make(commit_interval=0.01)
    await w.open()
    task = asyncio.create_task(w.run(), name="test-writer")
    try:
        w.add(rows(3))  # few rows: committed when the (short) interval is up
        await wait_until(lambda: w.accepted == 3, 5, "the interval's commit")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    w, _ = make(commit_rows=10, commit_interval=60.0)
    await w.open()
    task = asyncio.create_task(w.run(), name="test-writer")
    try:
        for _ in range(20):  # the task waits (for the interval) without spinning
            await asyncio.sleep(0)
        assert w.accepted == 0 and w._purged_at == 0.0
        w.add(rows(9))
        for _ in range(20):
            await asyncio.sleep(0)
        assert w.accepted == 0  # under commit_rows: still waiting
        w.add(rows(1, 9))  # commit_rows reached: at once, long before the interval
        await wait_until(lambda: w.accepted == 10, 5, "the commit for commit_rows")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_commit_rows_and_the_memory_bound_are_inclusive_limits() -> None:
    w, _ = make(commit_rows=5, max_staged=10)
    await w.open()
    w.add(rows(4))
    assert not w._due.is_set()
    w.add(rows(1, 4))
    assert w._due.is_set()  # exactly commit_rows: due
    w.add(rows(5, 5))
    assert w.staged == 10 and w.dropped == 0  # exactly the bound: nothing shed
    w.add(rows(1, 10))
    assert w.staged == 9 and w.dropped == 2  # past it: down to 90 %, oldest readings first
    assert [r[3].split()[-1] for r in w._staged][:2] == ["2", "3"]


async def test_shedding_drops_exactly_the_excess_and_skips_events() -> None:
    w, (sink,) = make(commit_rows=100, max_staged=100)
    await w.open()
    w.add(rows(1, 0, kind=EVENT, device="door"))
    w.add(rows(100, 1))  # 101 staged: shed to 90
    assert w.staged == 90 and w.dropped == 11 and sink.lost_rows == 11
    assert w._staged[0][0] == EVENT and w._staged[1][3].split()[-1] == "12"
    assert sum(1 for r in w._staged if r[0] == READING) == 89


async def test_the_purge_waits_for_enough_rows_or_time_then_deletes_what_all_sinks_have() -> None:
    clock = FakeClock()
    w, (a, b) = make(clock=clock, sinks=("a", "b"))
    await w.open()
    w.add(rows(10))
    await w.commit()
    a.cursor, b.cursor = 10, 4
    await w._purge()  # the first: at once, what both sinks have
    assert w.store.rows == 6 and w._purged_upto == 4 and w._purged_at == clock.monotonic()
    b.cursor = 6
    await w._purge()
    assert w.store.rows == 6  # 2 more rows and no time passed: not yet
    clock.advance(writer_module.PURGE_EVERY - 0.5)
    await w._purge()
    assert w.store.rows == 6
    clock.advance(0.5)  # exactly PURGE_EVERY since the last purge
    await w._purge()
    assert w.store.rows == 4 and w._purged_upto == 6
    w.add(rows(writer_module.PURGE_ROWS, 10))
    await w.commit()
    a.cursor = b.cursor = 6 + writer_module.PURGE_ROWS  # exactly PURGE_ROWS more: at once
    await w._purge()
    assert w._purged_upto == b.cursor and w.store.rows == 4
    w.add(rows(1, 10 + writer_module.PURGE_ROWS))
    await w.commit()
    a.cursor = b.cursor = b.cursor + 1  # one row more, no time passed: not yet
    await w._purge()
    assert w._purged_upto == b.cursor - 1 and w.store.rows == 5


async def test_each_sink_hears_only_of_the_dropped_rows_it_had_not_sent() -> None:
    store = MemoryOutbox(max_rows=100)
    w, (fast, slow) = make(store, sinks=("fast", "slow"))
    await w.open()
    w.add(rows(150))
    await w.commit()
    fast.cursor, slow.cursor = 40, 0  # the budget drops ids 1..60
    await w._enforce_budget()
    assert w.dropped == 60 and slow.lost_rows == 60 and fast.lost_rows == 20
    assert w.used_bytes == store.used_bytes()


async def test_what_was_committed_long_ago_is_told_apart_from_live_rows() -> None:
    clock = FakeClock(start=0.0)
    w, _ = make(clock=clock)
    await w.open()
    for at, n in ((0.0, 5), (250.0, 5), (301.0, 5)):  # heads 5, 10, 15
        clock.advance(at - clock.monotonic())
        w.add(rows(n))
        await w.commit()
    assert w.committed_before(0) == 15
    assert w.committed_before(10) == 10
    assert w.committed_before(300) == 5  # older than the history kept: its floor
    assert w.committed_before(10_000) == 5
    assert w._commit_times == [250.0, 301.0]  # (the history kept is bounded)


# -- what the writer shows and raises (stats, alarms, the live rate) ------------------------


class Sized(MemoryOutbox):
    """A memory store with a size in bytes and a byte budget, whose next commits can fail."""

    def __init__(self, *, budget_bytes: int = 50_000, **kw):
        super().__init__(**kw)
        self.budget_bytes = budget_bytes
        self.fail = 0
        self.disk_full = False
        self.size: int | None = None  # the bytes used_bytes() reports (default: 100 a row)

    def append_rows(self, rows, cursors):
        if self.fail:
            self.fail -= 1
            raise OutboxError(self.path, "commit failed: disk I/O error", disk_full=self.disk_full)
        return super().append_rows(rows, cursors)

    def used_bytes(self) -> int:
        return 100 * self.rows if self.size is None else self.size


def with_alarms(w) -> list[tuple[str, bool, str]]:
    alarms: list[tuple[str, bool, str]] = []
    w._on_alarm = lambda rule, active, message: alarms.append((rule, active, message))
    return alarms


async def test_stats_show_each_number_under_its_name() -> None:
    clock = FakeClock(start=1_700_000_100.0)  # the rows' timestamps are 1_700_000_000 + i
    store = Sized(max_rows=10)
    w, (a, b) = make(store, clock=clock, sinks=("a", "b"))
    a.quarantined, b.quarantined = 1, 2
    await w.open()
    assert w.stats() == {
        "rows": 0, "staged_rows": 0, "oldest_unsent_age_seconds": 0.0, "committed_id": 0,
        "committed_total": 0, "written_rows_total": 0, "skipped_rows_total": 0,
        "dropped_total": 0, "quarantined_total": 3, "errors_total": 0, "used_bytes": 0,
        "budget_bytes": 50_000, "live_rate_rows_per_second": 0.0, "degraded": 0, "overflow": 0}
    w.add(rows(4))
    a.cursor = b.cursor = 2  # both sinks confirmed rows 1 and 2 before their commit
    assert await w.commit() == 2
    w.add(rows(10, 4))  # rows 5..14
    store.fail = 1
    assert await w.commit() == 0
    clock.advance(2.0)
    w._measure_rate()  # 14 rows in the 2 s since the start
    await w._maintain()
    assert w.stats() == {
        "rows": 2, "staged_rows": 10, "oldest_unsent_age_seconds": 100.0, "committed_id": 4,
        "committed_total": 4, "written_rows_total": 2, "skipped_rows_total": 2,
        "dropped_total": 0, "quarantined_total": 3, "errors_total": 1, "used_bytes": 200,
        "budget_bytes": 50_000, "live_rate_rows_per_second": 7.0, "degraded": 1, "overflow": 0}
    assert await w.commit() == 10
    await w._maintain()  # 12 rows over the budget of 10: rows 3, 4, 5 go
    assert w.stats() == {
        "rows": 9, "staged_rows": 0, "oldest_unsent_age_seconds": 97.0, "committed_id": 14,
        "committed_total": 14, "written_rows_total": 12, "skipped_rows_total": 2,
        "dropped_total": 3, "quarantined_total": 3, "errors_total": 1, "used_bytes": 900,
        "budget_bytes": 50_000, "live_rate_rows_per_second": 7.0, "degraded": 0, "overflow": 1}


def test_an_age_is_never_negative_and_nothing_unsent_has_none() -> None:
    assert writer_module._age(10.0, 7.5) == 2.5
    assert writer_module._age(10.0, 12.0) == 0.0  # a row stamped ahead of this clock
    assert writer_module._age(10.0, None) == 0.0


async def test_the_live_rate_starts_at_its_first_measure_then_follows_smoothly() -> None:
    clock = FakeClock(start=0.0)
    w, _ = make(clock=clock)
    await w.open()  # the rate counts from here
    clock.advance(2.0)
    w.add(rows(10))
    w._measure_rate()
    assert w.live_rate == 5.0  # the first measure is the rate itself: no ramp up from zero
    w.add(rows(10, 10))
    w._measure_rate()  # no time passed: nothing measured (and no division by zero) ...
    assert w.live_rate == 5.0
    w.add(rows(50, 20))  # ... the rows count with the next measure (60 rows in 4 s)
    clock.advance(4.0)  # 15 rows/s: the average moves by 1 - e^(-4/RATE_WINDOW) of the step
    w._measure_rate()
    step = 1 - math.exp(-4.0 / writer_module.RATE_WINDOW)
    assert w.live_rate == pytest.approx(5.0 + step * 10.0, rel=1e-12)
    clock.advance(1.0)
    w._measure_rate()  # nothing added for 1 s
    assert w.live_rate == pytest.approx((5.0 + step * 10.0) * math.exp(-0.1), rel=1e-12)


class FullDisk(Sized):
    """As the SQLite store is: its calls go to a worker thread, and a disk can be full."""

    blocking = True


async def test_a_full_disk_lowers_the_budget_to_nine_tenths_of_what_the_file_holds(
        caplog) -> None:
    store = FullDisk(max_rows=10**6, budget_bytes=2_000_000)
    w, _ = make(store)
    await w.open()
    w.add(rows(3))
    store.fail, store.size = 1, 1_000_000  # another kind of failure: the budget stays
    assert await w.commit() == 0 and store.budget_bytes == 2_000_000
    store.fail, store.disk_full = 1, True
    assert await w.commit() == 0
    assert store.budget_bytes == 900_000 and "budget lowered to 0.9 MB" in caplog.text
    store.fail, store.size = 1, 10_000  # a nearly empty file: the budget keeps a floor
    assert await w.commit() == 0 and store.budget_bytes == 64 * 1024
    caplog.clear()
    store.fail = 1  # already there: not lowered again, not said again
    assert await w.commit() == 0 and store.budget_bytes == 64 * 1024
    assert "budget lowered" not in caplog.text
    store.budget_bytes, store.size = 100_000, 2_000_000  # a budget under what the file holds
    store.fail = 1
    assert await w.commit() == 0 and store.budget_bytes == 100_000  # is never raised
    assert w.commit_errors == 5 and w.staged == 3
    assert await w.commit() == 3


async def test_a_full_disk_drops_the_oldest_readings_at_once_to_make_room() -> None:
    store = FullDisk(max_rows=5)  # (a memory store's budget is in rows)
    w, (sink,) = make(store)
    await w.open()
    w.add(rows(8))
    assert await w.commit() == 8
    w.add(rows(1, 8))
    store.fail, store.disk_full = 1, True
    assert await w.commit() == 0
    assert store.rows == 4 and w.dropped == 4 and sink.lost_rows == 4  # not at the next upkeep


async def test_the_outbox_alarms_say_what_is_wrong_and_clear_once_it_is_not(caplog) -> None:
    caplog.set_level(logging.INFO, logger="gateway.outbox.writer")
    store = Sized(max_rows=10)
    w, _ = make(store, commit_rows=5, max_staged=5)
    alarms = with_alarms(w)
    await w.open()
    w.add(rows(5))
    store.fail = 2
    assert await w.commit() == 0
    assert alarms == [(OUTBOX_WRITE_FAILED, True,
                       "outbox cannot commit: commit failed: disk I/O error")]
    assert await w.commit() == 0  # still failing: raised once
    w.add(rows(1, 5))  # past the memory bound (exactly at it after a failure: nothing shed)
    assert alarms[1:] == [(BUFFER_OVERFLOW, True, "upstream buffer full: oldest readings dropped "
                                                  "(staged in memory (commits too slow or "
                                                  "failing))")]
    assert await w.commit() == 4
    assert alarms[2:] == [(OUTBOX_WRITE_FAILED, False, "outbox writes work again")]
    w.add(rows(1, 6))
    await w.commit()
    await w._maintain()  # 5 rows on a budget of 10: exactly half of it
    assert alarms[3:] == []
    store.purge(3)
    await w._maintain()  # 4 rows: under half of it
    assert alarms[3:] == [(BUFFER_OVERFLOW, False, "outbox back under its budget")]
    for start in (7, 12, 17):
        w.add(rows(5, start))
        await w.commit()
    await w._maintain()  # 19 rows on a budget of 10
    assert alarms[4:] == [(BUFFER_OVERFLOW, True, "upstream buffer full: oldest readings dropped "
                                                  "(over the outbox budget)")]
    assert w.dropped == 2 + 10 and store.rows == 9
    assert ids(await w.read(0, 100, "line")) == list(range(14, 23))  # gone from memory too
    assert caplog.text.count("outbox back under") == 1  # said when the alarm clears only


async def test_an_outbox_file_that_cannot_be_opened_raises_an_alarm_that_says_why(
        tmp_path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    w, _ = make(SqliteOutbox(path=blocker / "o.sqlite", budget_bytes=1 << 30), max_staged=1234)
    alarms = with_alarms(w)
    await w.open()
    [(rule, active, message)] = alarms
    assert (rule, active) == (OUTBOX_WRITE_FAILED, True)
    assert message.startswith("outbox unusable (open failed: ")
    assert message.endswith("): readings kept in memory only")
    assert w.store.budget_rows == 1234


async def test_shed_rows_count_as_lost_only_for_the_sinks_that_had_not_sent_them() -> None:
    w, (fast, slow) = make(commit_rows=10, max_staged=10, sinks=("fast", "slow"))
    await w.open()
    w.add(rows(10))
    fast.cursor = 1  # row 1 went out before the shedding
    w.add(rows(1, 10))  # 11 staged: down to 9, rows 1 and 2 go
    assert w.dropped == 2 and fast.lost_rows == 1 and slow.lost_rows == 2


async def test_a_quarantined_row_keeps_its_sink_status_error_and_time() -> None:
    clock = FakeClock(start=1_700_000_500.0)
    w, _ = make(clock=clock)
    await w.open()
    w.add(rows(3))
    await w.commit()
    assert await w.quarantine("influxdb", [2], 400, "field type conflict") == 1
    [(sink, row, status, error, at)] = w.store._quarantine
    assert (sink, row[0], status, error, at) == ("influxdb", 2, 400, "field type conflict",
                                                  1_700_000_500.0)


class QuarantineFails(FullDisk):
    """A store whose quarantine waits in its thread until told, then fails."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.entered = threading.Event()
        self.release = threading.Event()

    def quarantine(self, sink, ids, status, error, at):
        self.entered.set()
        self.release.wait(10)
        raise OutboxError(self.path, "quarantine failed: disk I/O error")


async def test_a_quarantine_that_fails_while_stopping_is_logged(caplog) -> None:
    store = QuarantineFails(max_rows=100)
    w, _ = make(store)
    await w.open()
    w.add(rows(3))
    await w.commit()
    task = asyncio.create_task(w.quarantine("influxdb", [1, 2], 400, "bad"))
    await wait_until(store.entered.is_set, 5, "the quarantine in its thread")
    task.cancel()
    await asyncio.sleep(0)
    store.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ("outbox: influxdb: quarantine of 2 rows failed while stopping: "
            "outbox memory: quarantine failed: disk I/O error") in caplog.text


async def test_a_full_disk_whose_size_cannot_be_read_keeps_the_budget_and_the_rows() -> None:
    class Unreadable(FullDisk):
        def used_bytes(self) -> int:
            raise OutboxError(self.path, "read failed: disk I/O error")

    store = Unreadable(max_rows=100, budget_bytes=2_000_000)
    w, _ = make(store)
    await w.open()  # (the upkeep's failure is logged, not raised)
    w.add(rows(3))
    store.fail, store.disk_full = 1, True
    assert await w.commit() == 0  # not raised: the writer task goes on
    assert store.budget_bytes == 2_000_000 and w.staged == 3 and w.failing


# -- reading: from memory, or from the file for a backlog --------------------------------------


def docrows(n: int, start: int = 0) -> list[tuple]:
    return [(READING, "d1", 1_700_000_000.0 + i, f"m v={i} {i}", f'{{"v": {i}}}')
            for i in range(start, start + n)]


def ids(rows_read: list[tuple]) -> list[int]:
    return [r[0] for r in rows_read]


async def test_after_a_restart_the_backlog_is_read_from_the_file_then_new_rows_from_memory(
        tmp_path) -> None:
    path = tmp_path / "o.sqlite"
    w, _ = make(SqliteOutbox(path=path, budget_bytes=1 << 30), sinks=("a", "b"))
    await w.open()
    w.add(docrows(10))
    await w.commit()
    await w.close()
    w, (a, b) = make(SqliteOutbox(path=path, budget_bytes=1 << 30), sinks=("a", "b"))
    await w.open()
    assert w.head == 10 and a.cursor == b.cursor == 0  # memory holds nothing
    assert await w.read(0, 2, "line") == [(1, "m v=0 0"), (2, "m v=1 1")]
    assert await w.read(8, 5, "doc") == [(9, "d1", '{"v": 8}'), (10, "d1", '{"v": 9}')]
    assert await w.read(10, 5, "line") == []
    b.cursor = 9
    await w._maintain()  # only the file has what follows either cursor
    assert (a.oldest_ts, b.oldest_ts) == (1_700_000_000.0, 1_700_000_009.0)
    w.add(docrows(3, 10))  # rows 11..13, in memory only
    assert ids(await w.read(9, 5, "line")) == [10]  # a batch from the file ends with it
    assert ids(await w.read(10, 5, "line")) == [11, 12, 13]
    b.cursor = 11
    await w.advance("b", 11)
    await w._maintain()  # a's oldest unsent row is in the file, b's in memory
    assert (a.oldest_ts, b.oldest_ts, w.oldest_ts) == (1_700_000_000.0, 1_700_000_011.0,
                                                       1_700_000_000.0)
    await w.close()


async def test_memory_serves_committed_and_staged_rows_in_one_batch() -> None:
    store = MemoryOutbox(max_rows=10**6)
    w, (sink,) = make(store)
    await w.open()
    w.add(docrows(10))
    await w.commit()  # rows 1..10 in the store and in memory
    sink.cursor = 5
    await w._maintain()  # memory (and the store) let go of rows 1..5
    assert [r[5] for r in w._kept] == [6, 7, 8, 9, 10]
    w.add(docrows(5, 10))  # rows 11..15 staged
    assert ids(await w.read(5, 100, "line")) == list(range(6, 16))
    assert ids(await w.read(6, 100, "line")) == list(range(7, 16))
    assert ids(await w.read(4, 100, "line")) == list(range(6, 11))  # before memory: the store
    assert await w.read(8, 4, "doc") == [(9, "d1", '{"v": 8}'), (10, "d1", '{"v": 9}'),
                                         (11, "d1", '{"v": 10}'), (12, "d1", '{"v": 11}')]
    assert await w.read(15, 4, "line") == []


async def test_each_sink_s_oldest_unsent_row_is_found_in_memory_or_in_the_file() -> None:
    w, (a, b) = make(commit_rows=5, max_staged=5, sinks=("a", "b"))
    await w.open()
    w.add(rows(5))
    await w.commit()  # rows 1..5 (timestamps 1_700_000_000 + 0..4)
    a.cursor, b.cursor = 5, 2
    await w._maintain()  # the store keeps rows 3..5 (b has not confirmed them)
    assert (a.oldest_ts, b.oldest_ts, w.oldest_ts) == (None, 1_700_000_002.0, 1_700_000_002.0)
    b.cursor = 5
    w.add(rows(10, 5))  # rows 6..15: past the memory bound, rows 6..11 are shed
    a.cursor = 13  # a sent rows 12 and 13 before their commit
    await w._maintain()  # (the store is purged again only later: rows 3..5 stay)
    assert w.store.rows == 3
    assert (a.oldest_ts, b.oldest_ts, w.oldest_ts) == (1_700_000_013.0, 1_700_000_011.0,
                                                       1_700_000_011.0)


# -- committing: what is written, skipped, and which cursors move ------------------------------


class CursorRecordingOutbox(MemoryOutbox):
    """The memory store, keeping the cursors a file would hold (MemoryOutbox needs none)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.cursors: dict[str, int] = {}

    def open(self, sinks):
        self.cursors = {sink: 0 for sink in sinks}
        return super().open(sinks)

    def append_rows(self, rows, cursors):
        self.cursors.update(cursors)
        return super().append_rows(rows, cursors)

    def advance(self, sink, last_id):
        self.cursors[sink] = last_id


async def test_a_commit_writes_what_some_sink_still_needs_and_moves_cursors_with_it() -> None:
    store = CursorRecordingOutbox(max_rows=10**6)
    w, (a, b) = make(store, sinks=("a", "b"))
    await w.open()
    w.add(rows(10))
    a.cursor = 8  # a sent rows 1..8; b nothing yet
    assert await w.commit(upto=4) == 4 and w.staged == 6  # only up to the row noted
    assert store.cursors == {"a": 4, "b": 0}  # a cursor on disk never passes the rows there
    a.cursor = b.cursor = 10
    assert await w.commit() == 0  # every sink has rows 5..10: none is written
    assert (w.skipped, w.written_rows, w.accepted, store.rows) == (6, 4, 10, 4)
    w.add(rows(3, 10))
    a.cursor = b.cursor = 13
    assert await w.commit() == 0
    assert (w.skipped, w.written_rows, w.accepted, store.rows) == (9, 4, 13, 4)
    w.add(rows(4, 13))
    a.cursor = b.cursor = 15  # rows 14, 15 confirmed; 16, 17 not yet
    assert await w.commit() == 2
    assert (w.skipped, w.written_rows, w.accepted, store.rows) == (11, 6, 17, 6)


async def test_with_no_sink_every_row_is_written() -> None:
    w, _ = make(sinks=())
    await w.open()
    w.add(rows(3))
    assert await w.commit() == 3 and w.store.rows == 3 and w.skipped == 0
    await w._maintain()  # nothing is purged (no sink confirms); memory lets go of the rows
    assert w.store.rows == 3 and w._kept == [] and w.oldest_ts is None


async def test_a_commit_that_succeeds_while_cancelled_counts_what_it_skipped(tmp_path) -> None:
    store = SlowAppend(False, path=tmp_path / "o.sqlite", budget_bytes=1 << 30)
    w, (sink,) = make(store)
    await w.open()
    w.add(rows(2))
    sink.cursor = 2
    assert await w.commit() == 0 and w.skipped == 2  # sent in time: not written
    w.add(rows(5, 2))
    sink.cursor = 4
    commit = asyncio.create_task(w.commit())
    await wait_until(store.entered.is_set, 5, "the commit in its thread")
    commit.cancel()
    await asyncio.sleep(0)
    store.release.set()
    with pytest.raises(asyncio.CancelledError):
        await commit
    assert (w.skipped, w.written_rows, w.accepted) == (4, 3, 7)
    await w.close()


class CountedAdvances(MemoryOutbox):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.advances: list[tuple[str, int]] = []

    def advance(self, sink: str, last_id: int) -> None:
        self.advances.append((sink, last_id))
        super().advance(sink, last_id)


async def test_a_cursor_goes_to_the_store_once_and_never_past_the_rows_there() -> None:
    store = CountedAdvances(max_rows=10**6)
    w, _ = make(store)
    await w.open()
    w.add(rows(10))
    await w.commit()
    await w.advance("influxdb", 4)
    await w.advance("influxdb", 4)  # already there: not written again
    w.add(rows(5, 10))  # rows 11..15: not on disk
    await w.advance("influxdb", 15)
    await w.advance("influxdb", 15)
    w._sinks[0].cursor = 15
    await w._maintain()  # nothing new for the store
    assert store.advances == [("influxdb", 4), ("influxdb", 10)]


# -- the writer task's schedule ---------------------------------------------------------------


class MaxRandom:
    """The longest delay full jitter can pick, every time."""

    def uniform(self, low: float, high: float) -> float:
        return high


def test_failed_commits_are_retried_after_doubling_delays_up_to_30_s() -> None:
    w, _ = make()
    w._backoff._rng = MaxRandom()
    assert [w._backoff.next_delay() for _ in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


class Schedule:
    """Stands in for asyncio in the writer module: records the waits ``run()`` asks for,
    ends each at once, and calls ``hook(n)`` at the n-th."""

    def __init__(self, hook, waits: int):
        self.waits: list[tuple[str, float]] = []
        self.hook = hook
        self.enough = asyncio.Event()
        self.wanted = waits

    def __getattr__(self, name: str):
        return getattr(asyncio, name)

    def _wait(self, kind: str, delay: float) -> None:
        self.waits.append((kind, delay))
        self.hook(len(self.waits))
        if len(self.waits) >= self.wanted:
            self.enough.set()

    def timeout(self, delay: float):
        self._wait("timeout", delay)
        return asyncio.timeout(0)

    async def sleep(self, delay: float) -> None:
        self._wait("sleep", delay)
        await asyncio.sleep(0)


async def test_the_writer_task_waits_the_interval_less_the_grace_and_backs_off_while_failing(
        monkeypatch) -> None:
    store = Sized(max_rows=10**6)
    w, _ = make(store, commit_rows=3, commit_interval=1.0)  # grace: 0.25 s
    w._backoff._rng = MaxRandom()
    await w.open()
    seen = {}

    def hook(n: int) -> None:
        if n == 1:  # the grace before the first commit: rows 4, 5 come meanwhile
            w.add(rows(2, 3))
        elif n == 2:  # the first commit took only the rows there before its grace
            seen["after the first commit"] = (w.accepted, w.staged)
            store.fail = 2
        elif n == 6:
            seen["after the retries"] = (w.accepted, w.staged, w.failing)

    schedule = Schedule(hook, 7)
    monkeypatch.setattr(writer_module, "asyncio", schedule)
    w.add(rows(3))  # commit_rows: committed without waiting for the interval
    task = asyncio.create_task(w.run(), name="test-writer")
    try:
        async with asyncio.timeout(5):
            await schedule.enough.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert schedule.waits[:7] == [("sleep", 0.25), ("timeout", 0.75), ("sleep", 0.25),
                                  ("timeout", 0.5), ("timeout", 1.0), ("timeout", 0.75),
                                  ("sleep", 0.25)]
    assert seen == {"after the first commit": (3, 2), "after the retries": (5, 0, None)}


def test_the_grace_before_a_commit_is_at_most_half_the_interval() -> None:
    assert make(commit_interval=1.0)[0].grace == writer_module.SEND_GRACE
    assert make(commit_interval=0.1)[0].grace == 0.05


def test_a_writer_not_yet_open_holds_no_row() -> None:
    w, _ = make()  # (what a sink runner's lag and /metrics read before the start)
    assert w.committed_before(5.0) == 0  # no backlog: a sink at 0 is not draining
    assert w.head == 0 and w.stats() == {
        "rows": 0, "staged_rows": 0, "oldest_unsent_age_seconds": 0.0, "committed_id": 0,
        "committed_total": 0, "written_rows_total": 0, "skipped_rows_total": 0,
        "dropped_total": 0, "quarantined_total": 0, "errors_total": 0, "used_bytes": 0,
        "budget_bytes": 0, "live_rate_rows_per_second": 0.0, "degraded": 0, "overflow": 0}


async def test_memory_keeps_the_newest_committed_rows_up_to_its_bound() -> None:
    w, _ = make(commit_rows=10**6, max_staged=10**6)
    await w.open()
    w.add(rows(3))
    await w.commit()  # the sink has sent none: all of them wait for it
    assert [r[5] for r in w._kept] == [1, 2, 3]
    w.add(rows(writer_module.MEMORY_ROWS - 2, 3))
    await w.commit()
    assert len(w._kept) == writer_module.MEMORY_ROWS and w._kept[0][5] == 2


async def test_a_purge_with_nothing_new_to_delete_does_not_restart_its_clock() -> None:
    clock = FakeClock()
    w, (sink,) = make(clock=clock)
    await w.open()
    w.add(rows(10))
    await w.commit()
    sink.cursor = 4
    await w._purge()
    clock.advance(writer_module.PURGE_EVERY)
    await w._purge()  # nothing newly confirmed: nothing to do
    sink.cursor = 6
    await w._purge()  # PURGE_EVERY since the last purge: at once
    assert w.store.rows == 4


async def test_a_cursor_that_passed_rows_while_they_were_written_reaches_the_store_next(
        tmp_path) -> None:
    store = SlowAppend(False, path=tmp_path / "o.sqlite", budget_bytes=1 << 30)
    w, (sink,) = make(store)
    await w.open()
    w.add(rows(5))
    commit = asyncio.create_task(w.commit())
    await wait_until(store.entered.is_set, 5, "the commit in its thread")
    sink.cursor = 5  # the rows went out meanwhile ...
    await w.advance("influxdb", 5)  # ... not yet on disk: nothing to write
    store.release.set()
    assert await commit == 5
    assert disk_cursor(store.path) == 0  # the commit took the cursor as it was
    await w._maintain()
    assert disk_cursor(store.path) == 5  # else all 5 rows go out again after a restart
    await w.close()


class UpkeepFails(Sized):
    def enforce_budget(self) -> list[int]:
        raise OutboxError(self.path, "budget failed: disk I/O error")


async def test_an_upkeep_failure_is_logged_unless_the_commits_fail_already(caplog) -> None:
    store = UpkeepFails(max_rows=100)
    w, _ = make(store)
    await w.open()
    assert "budget failed: disk I/O error (upkeep; will try again)" in caplog.text
    caplog.clear()
    w.add(rows(1))
    store.fail = 1
    await w.commit()
    await w._maintain()  # the commit's failure is the one reported
    assert "upkeep" not in caplog.text


class SlowAdvance(SqliteOutbox):
    """A store whose first cursor update waits in its thread until told; counts updates."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.advances: list[int] = []

    def advance(self, sink, last_id):
        if not self.advances:
            self.entered.set()
            self.release.wait(10)
        self.advances.append(last_id)
        super().advance(sink, last_id)


async def test_a_cursor_move_that_lands_after_a_commit_s_own_move_is_not_written_again(
        tmp_path) -> None:
    store = SlowAdvance(path=tmp_path / "o.sqlite", budget_bytes=1 << 30)
    w, (sink,) = make(store)
    await w.open()
    w.add(rows(10))
    await w.commit()
    sink.cursor = 4
    move = asyncio.create_task(w.advance("influxdb", 4))
    await wait_until(store.entered.is_set, 5, "the cursor move in its thread")
    sink.cursor = 8  # the sink went on; the next commit carries its cursor
    w.add(rows(5, 10))
    assert await w.commit() == 5 and disk_cursor(store.path) == 8
    store.release.set()
    await move  # the older move lands last (the store keeps the newer cursor)
    await w._maintain()
    assert store.advances == [4] and disk_cursor(store.path) == 8
    await w.close()


class AdvanceFails(SqliteOutbox):
    """A store whose cursor update waits in its thread until told, then fails."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.entered = threading.Event()
        self.release = threading.Event()

    def advance(self, sink, last_id):
        self.entered.set()
        self.release.wait(10)
        raise OutboxError(str(self.path), "cursor update failed: disk I/O error")


async def test_cursor_moves_of_several_sinks_that_fail_while_stopping_are_logged_each(
        tmp_path, caplog) -> None:
    store = AdvanceFails(path=tmp_path / "o.sqlite", budget_bytes=1 << 30)
    w, (a, b) = make(store, sinks=("a", "b"))
    await w.open()
    w.add(rows(10))
    await w.commit()
    a.cursor, b.cursor = 4, 5
    upkeep = asyncio.create_task(w._maintain())
    await wait_until(store.entered.is_set, 5, "the cursor moves in their thread")
    upkeep.cancel()
    await asyncio.sleep(0)
    store.release.set()
    with pytest.raises(asyncio.CancelledError):
        await upkeep
    assert ("outbox: a: cursor move to row 4, b: cursor move to row 5 failed while stopping: "
            f"outbox {store.path}: cursor update failed: disk I/O error") in caplog.text
    await w.close()


async def test_a_sink_whose_next_rows_went_over_the_budget_is_owed_the_staged_ones() -> None:
    w, (a, b) = make(MemoryOutbox(max_rows=2), sinks=("a", "b"))
    await w.open()
    w.add(rows(4) + rows(1, 4, kind=EVENT, device="door") + rows(5, 5))
    await w.commit()  # rows 1..10, row 5 an event
    a.cursor, b.cursor = 5, 4
    w.add(rows(1, 10))  # row 11, staged
    await w._maintain()  # purged up to 4; over the budget rows 6..10 go (the event stays)
    assert [r[5] for r in w._kept] == [5] and w.store.rows == 1
    assert (a.oldest_ts, b.oldest_ts) == (1_700_000_010.0, 1_700_000_004.0)
