"""The sink runner over a real outbox file: cursors, refused rows isolated, Retry-After, drain pacing.

The sinks here are stand-ins only for faults a real server would not produce on
demand (a refusal of exactly one row, a Retry-After); the real servers are in
test_store_and_forward.py.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.clock import FakeClock
from gateway.errors import SinkRejected, SinkRetryable
from gateway.outbox import READING, OutboxWriter, SqliteOutbox
from gateway.upstream.sink_runner import SinkRunner
from harness import wait_until


class RecordingSink:
    """Takes line batches; refuses any batch holding a line with ``poison`` (as InfluxDB
    answers 400 to a field type clash), fails the next ``fail`` writes as retryable."""

    payload = "line"

    def __init__(self, *, poison: str | None = None, fail: int = 0, retry_after: float | None = None):
        self.name = "influxdb"
        self.poison = poison
        self.fail = fail
        self.retry_after = retry_after
        self.batches: list[list[str]] = []
        self.attempts = 0

    async def write(self, lines: list[str]) -> None:
        self.attempts += 1
        if self.fail:
            self.fail -= 1
            raise SinkRetryable(self.name, "HTTP 503: busy", 503, self.retry_after)
        if self.poison and any(self.poison in line for line in lines):
            raise SinkRejected(self.name, "HTTP 400: field type conflict", 400)
        self.batches.append(list(lines))

    async def close(self) -> None:
        pass

    @property
    def lines(self) -> list[str]:
        return [line for batch in self.batches for line in batch]


def lines(n: int, start: int = 0) -> list[tuple]:
    return [(READING, "d", float(i), f"m,device=d v={float(i)} {i}", None)
            for i in range(start, start + n)]


@pytest.fixture
async def outbox(tmp_path):
    clock = FakeClock()
    w = OutboxWriter(store=SqliteOutbox(path=tmp_path / "o.sqlite", budget_bytes=1 << 30),
                     commit_interval=1.0, commit_rows=10_000, max_staged=100_000, clock=clock)
    yield w
    await w.close()


async def test_rows_go_out_in_order_and_the_cursor_is_kept_on_disk(outbox, tmp_path) -> None:
    sink = RecordingSink()
    runner = SinkRunner(sink, outbox=outbox, batch_size=4, flush_interval=1.0, clock=FakeClock())
    await outbox.open()
    outbox.add(lines(10))
    await outbox.commit()
    assert await runner.send_batch() == 4
    await runner.flush()
    assert sink.lines == [f"m,device=d v={float(i)} {i}" for i in range(10)]
    assert [len(b) for b in sink.batches] == [4, 4, 2]
    assert runner.cursor == 10 and runner.written == 10 and runner.lag == 0
    await outbox.close()
    again = SqliteOutbox(path=tmp_path / "o.sqlite", budget_bytes=1 << 30)
    assert again.open(["influxdb"]) == {"influxdb": 10}
    again.close()


async def test_one_refused_row_is_quarantined_and_its_neighbours_go_through(outbox) -> None:
    sink = RecordingSink(poison="v=13.0")
    runner = SinkRunner(sink, outbox=outbox, batch_size=32, flush_interval=1.0, clock=FakeClock())
    await outbox.open()
    outbox.add(lines(40))
    await outbox.commit()
    await runner.flush()
    written = sink.lines
    assert len(written) == 39 and len(set(written)) == 39
    assert not any("v=13.0" in line for line in written)
    assert written == sorted(written, key=lambda line: int(line.rsplit(" ", 1)[1]))
    assert runner.quarantined == 1 and runner.written == 39 and runner.cursor == 40
    assert outbox.store.quarantined("influxdb") == 1
    assert runner.quarantined == 1 and runner.stats()["quarantined_total"] == 1
    assert "400" in runner.last_error
    # halving found it in a handful of writes, not one per row
    assert sink.attempts <= 2 * 6 + 2


def test_the_retry_delay_waits_out_retry_after_and_otherwise_backs_off() -> None:
    from gateway.outbox import MemoryOutbox

    w = OutboxWriter(store=MemoryOutbox(max_rows=10), commit_interval=1.0, commit_rows=10,
                     max_staged=10, clock=FakeClock())
    runner = SinkRunner(RecordingSink(), outbox=w, batch_size=10, flush_interval=1.0,
                        clock=FakeClock())
    told = SinkRetryable("influxdb", "HTTP 429", 429, retry_after=7.5)
    assert all(runner.retry_delay(told) >= 7.5 for _ in range(5))
    assert runner.retry_delay(SinkRetryable("influxdb", "HTTP 503", 503, retry_after=10_000)) == 300
    runner._backoff.reset()
    plain = [runner.retry_delay(SinkRetryable("influxdb", "refused")) for _ in range(12)]
    assert max(plain) <= 30 and plain[0] <= 0.5  # capped, growing from 0.5 s, with jitter
    assert len(set(plain)) > 1


async def test_retryable_failures_are_retried_until_the_rows_go_out(outbox) -> None:
    sink = RecordingSink(fail=2, retry_after=0.05)
    runner = SinkRunner(sink, outbox=outbox, batch_size=5, flush_interval=0.05,
                        clock=FakeClock())
    runner._backoff.initial = 0.01
    await outbox.open()
    outbox.add(lines(5))
    await outbox.commit()
    task = asyncio.create_task(runner.run())
    try:
        async with asyncio.timeout(5):
            while runner.written < 5:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert runner.errors == 2 and sink.attempts == 4 and not runner.failing
    # while failing, an attempt carries one row; once it is taken, the rest goes in a batch
    assert [len(b) for b in sink.batches] == [1, 4] and len(sink.lines) == 5


def test_a_backlog_drains_at_a_multiple_of_the_live_rate() -> None:
    from gateway.outbox import MemoryOutbox

    w = OutboxWriter(store=MemoryOutbox(max_rows=10), commit_interval=1.0, commit_rows=10,
                     max_staged=10, clock=FakeClock())
    runner = SinkRunner(RecordingSink(), outbox=w, batch_size=10, flush_interval=1.0,
                        clock=FakeClock(), drain_rate_multiple=4, drain_min_rate=500)
    w.live_rate = 1000.0
    assert runner.drain_rate() == 4000
    w.live_rate = 10.0  # a quiet site still drains at the floor
    assert runner.drain_rate() == 500
    unlimited = SinkRunner(RecordingSink(), outbox=w, batch_size=10, flush_interval=1.0,
                           clock=FakeClock(), drain_rate_multiple=None)
    assert unlimited.drain_rate() is None


async def test_only_a_backlog_is_paced_a_burst_of_live_rows_is_not(tmp_path) -> None:
    from gateway.outbox import MemoryOutbox

    clock = FakeClock()
    w = OutboxWriter(store=MemoryOutbox(max_rows=10**6), commit_interval=1.0, commit_rows=10**6,
                     max_staged=10**6, clock=clock)
    runner = SinkRunner(RecordingSink(), outbox=w, batch_size=100, flush_interval=1.0,
                        clock=clock, drain_rate_multiple=4)
    await w.open()
    w.add(lines(10_000))  # a burst, far more than a batch
    await w.commit()
    assert runner.lag == 10_000 and not runner.draining  # fresh rows: sent at full speed
    clock.advance(6.0)  # five flush intervals later they are still unsent: a backlog
    assert runner.draining and runner.stats()["draining"] == 1
    await runner.flush()
    assert not runner.draining


async def test_rows_found_in_the_file_at_start_are_a_backlog(outbox) -> None:
    SinkRunner(RecordingSink(), outbox=outbox, batch_size=100, flush_interval=1.0,
               clock=FakeClock())
    await outbox.open()
    outbox.add(lines(500))
    await outbox.commit()  # ... and the gateway stops before the sink sent them
    await outbox.close()
    again = OutboxWriter(store=SqliteOutbox(path=outbox.store.path, budget_bytes=1 << 30),
                         commit_interval=1.0, commit_rows=10_000, max_staged=100_000,
                         clock=FakeClock())
    runner = SinkRunner(RecordingSink(), outbox=again, batch_size=100, flush_interval=1.0,
                        clock=FakeClock(), drain_rate_multiple=4)
    await again.open()
    assert runner.lag == 500 and runner.draining
    await again.close()


class MaxRandom:
    """The longest delay full jitter can pick, every time (the worst case)."""

    def uniform(self, low: float, high: float) -> float:
        return high


def test_retries_are_at_most_5_s_apart_however_long_the_outage() -> None:
    # Resuming within 5 s of the upstream's return: no wait between attempts is longer.
    from gateway.outbox import MemoryOutbox

    w = OutboxWriter(store=MemoryOutbox(max_rows=10), commit_interval=1.0, commit_rows=10,
                     max_staged=10, clock=FakeClock())
    runner = SinkRunner(RecordingSink(), outbox=w, batch_size=10, flush_interval=30.0,
                        clock=FakeClock())
    runner._backoff._rng = MaxRandom()
    delays = [runner.retry_delay(SinkRetryable("influxdb", "refused")) for _ in range(40)]
    assert max(delays) == 5.0 and delays[:4] == [0.5, 1.0, 2.0, 4.0]


async def test_a_down_upstream_gets_one_row_per_try_and_full_batches_once_back(
        outbox, free_port) -> None:
    """A real InfluxDB client against a loopback receiver that is down, then up."""
    from aiohttp import web

    from gateway.config.models import InfluxConfig
    from gateway.upstream.influx import InfluxSink

    port = free_port()
    sink = InfluxSink(InfluxConfig(url=f"http://127.0.0.1:{port}", org="o", bucket="b",
                                   token={"env": "UNUSED"}, timeout=2), token="t")
    tried: list[int] = []
    real_write = sink.write

    async def counted(items):
        tried.append(len(items))
        await real_write(items)

    sink.write = counted
    runner = SinkRunner(sink, outbox=outbox, batch_size=50, flush_interval=0.05, clock=FakeClock())
    runner._backoff.initial = 0.01
    await outbox.open()
    outbox.add(lines(120))
    await outbox.commit()
    got: list[str] = []

    async def write(request: web.Request) -> web.Response:
        got.extend((await request.text()).splitlines())
        return web.Response(status=204)

    task = asyncio.create_task(runner.run())
    server = None
    try:
        async with asyncio.timeout(10):
            while len(tried) < 4:  # the upstream is down: a few failed tries
                await asyncio.sleep(0.01)
        assert tried[0] == 50 and set(tried[1:]) == {1} and not runner.written
        app = web.Application()
        app.router.add_post("/api/v2/write", write)
        server = web.AppRunner(app)
        await server.setup()
        await web.TCPSite(server, "127.0.0.1", port).start()
        async with asyncio.timeout(15):
            while runner.written < 120:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await sink.close()
        if server is not None:
            await server.cleanup()
    assert got == [f"m,device=d v={float(i)} {i}" for i in range(120)]
    # the one-row try that got through, then full batches again
    assert tried[-4:] == [1, 50, 50, 19] and set(tried[1:-3]) == {1} and not runner.failing


async def test_new_rows_wake_the_sink_no_timer_and_no_commit_needed(outbox) -> None:
    sink = RecordingSink()
    # a flush interval of an hour: only the new rows themselves can wake the runner
    runner = SinkRunner(sink, outbox=outbox, batch_size=100, flush_interval=3600.0,
                        clock=FakeClock())
    await outbox.open()
    task = asyncio.create_task(runner.run())
    try:
        outbox.add(lines(5))
        await wait_until(lambda: runner.written == 5, 5, "the rows sent")
        assert outbox.committed_id == 0  # sent before their commit (the writer task is not running)
        outbox.add(lines(3, 5))
        await wait_until(lambda: runner.written == 8, 5, "the next rows sent")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await outbox.commit() == 0  # all confirmed: nothing for the disk
    assert outbox.store.rows == 0 and runner.cursor == 8
