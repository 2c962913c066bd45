"""The outbox writer's counts and timing, edge by edge (found by mutation testing): what
a commit returns and accumulates, what a failed or cancelled commit puts back, when the
writer task commits, what it sheds, purges and tells each sink it lost."""

from __future__ import annotations

import asyncio
import threading

from gateway.clock import FakeClock
from gateway.errors import OutboxError
from gateway.outbox import EVENT, READING, MemoryOutbox, OutboxWriter, SqliteOutbox
from gateway.outbox import writer as writer_module
from harness import wait_until
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
