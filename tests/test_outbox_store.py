"""The outbox store and writer on their own: cursors, purge, budget, quarantine, crashes, full disk."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from gateway.clock import FakeClock
from gateway.errors import OutboxError
from gateway.outbox import (BUFFER_OVERFLOW, EVENT, OUTBOX_WRITE_FAILED, READING, MemoryOutbox,
                            OutboxWriter, SqliteOutbox, read_summary)


def rows(n: int, start: int = 0, kind: int = READING, device: str = "d1") -> list[tuple]:
    """``n`` rows whose line carries their number (so a test can tell which survived)."""
    return [(kind, device, 1_700_000_000.0 + i, f"m,device={device} v={float(i)} {i}",
             f'{{"v":{i}}}') for i in range(start, start + n)]


def noisy_rows(n: int, start: int = 0, kind: int = READING, device: str = "d1") -> list[tuple]:
    """Like ``rows``, with 100 random bytes in each line: they do not compress away."""
    return [(kind, device, ts, line.replace(" v=", f" x=\"{os.urandom(50).hex()}\",v="), doc)
            for kind, device, ts, line, doc in rows(n, start, kind, device)]


def numbers(read: list[tuple]) -> list[int]:
    return [int(r[1].rsplit(" ", 1)[1]) for r in read]


@pytest.fixture(params=["sqlite", "memory"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = SqliteOutbox(path=tmp_path / "outbox.sqlite", budget_bytes=64 * 1024 * 1024)
    else:
        s = MemoryOutbox(max_rows=1_000_000)
    yield s
    s.close()


def test_rows_flow_in_id_order_and_are_purged_once_every_sink_has_them(store) -> None:
    cursors = store.open(["influxdb", "mqtt-telemetry"])
    assert cursors == {"influxdb": 0, "mqtt-telemetry": 0}
    assert store.append(rows(4)) == 4  # two commits (the SQLite store purges a commit whole)
    head = store.append(rows(6, 4))
    assert head == 10 and store.rows == 10
    got = store.read(0, 4, "line")
    assert [r[0] for r in got] == [1, 2, 3, 4] and numbers(got) == [0, 1, 2, 3]
    assert store.read(0, 2, "doc") == [(1, "d1", '{"v":0}'), (2, "d1", '{"v":1}')]
    store.advance("influxdb", 4)
    assert [r[0] for r in store.read(4, 100, "line")] == list(range(5, 11))
    assert store.oldest_ts(4) == 1_700_000_004.0 and store.oldest_ts(10) is None
    assert store.purge(4) == 4 and store.rows == 6
    assert store.read(0, 100, "line")[0][0] == 5


def test_a_commit_is_purged_whole_once_every_row_of_it_is_confirmed(tmp_path) -> None:
    # The SQLite store keeps a commit's rows in one block: confirmed rows of a block whose
    # last row is not confirmed stay until it is, and are not read again meanwhile.
    s = SqliteOutbox(path=tmp_path / "outbox.sqlite", budget_bytes=1 << 30)
    s.open(["influxdb"])
    s.append(rows(10))
    s.append(rows(5, 10))
    assert s.purge(4) == 0 and s.rows == 15
    assert [r[0] for r in s.read(4, 3, "line")] == [5, 6, 7]
    assert s.purge(12) == 10 and s.rows == 5  # the first commit's 10 rows, not 11 and 12
    assert [r[0] for r in s.read(0, 100, "line")] == [11, 12, 13, 14, 15]
    assert [r[0] for r in s.read(12, 100, "line")] == [13, 14, 15]
    assert s.purge(15) == 5 and s.rows == 0 and s.read(0, 10, "line") == []
    s.close()


def test_cursors_survive_a_restart_new_sinks_start_at_the_head_stale_ones_go(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    s = SqliteOutbox(path=path, budget_bytes=1 << 30)
    s.open(["influxdb", "old-sink"])
    s.append(rows(5))
    s.advance("influxdb", 3)
    s.close()
    s = SqliteOutbox(path=path, budget_bytes=1 << 30)
    cursors = s.open(["influxdb", "mqtt-telemetry"])
    assert cursors == {"influxdb": 3, "mqtt-telemetry": 5}
    assert read_summary(path)["sinks"].keys() == {"influxdb", "mqtt-telemetry"}
    s.close()


def test_an_id_is_never_reused_after_everything_was_purged(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    s = SqliteOutbox(path=path, budget_bytes=1 << 30)
    s.open(["influxdb"])
    s.append(rows(3))
    s.advance("influxdb", 3)
    s.purge(3)
    s.close()
    s = SqliteOutbox(path=path, budget_bytes=1 << 30)
    assert s.open(["influxdb"]) == {"influxdb": 3}
    assert s.append(rows(1)) == 4  # not 1: the cursor at 3 would skip it
    assert s.read(3, 10, "line")[0][0] == 4
    s.close()


def test_a_crash_between_commit_and_cursor_move_sends_the_rows_again(tmp_path) -> None:
    # A real process commits, "sends" a batch, moves the cursor over half of it, and
    # dies without closing anything (os._exit: no checkpoint, no cleanup).
    path = tmp_path / "outbox.sqlite"
    script = textwrap.dedent(f"""
        import os
        from gateway.outbox import SqliteOutbox
        s = SqliteOutbox(path={str(path)!r}, budget_bytes=1 << 30)
        s.open(["influxdb"])
        s.append([(0, "d", float(i), f"m v={{i}} {{i}}", None) for i in range(100)])
        s.read(0, 100, "line")   # the batch went out ...
        s.advance("influxdb", 50)  # ... but only half the cursor move happened
        os._exit(9)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    assert (tmp_path / "outbox.sqlite-wal").exists()  # nothing was checkpointed
    s = SqliteOutbox(path=path, budget_bytes=1 << 30)
    assert s.open(["influxdb"]) == {"influxdb": 50}
    assert s.rows == 100
    assert [r[0] for r in s.read(50, 1000, "line")] == list(range(51, 101))
    s.close()


def test_past_the_budget_the_oldest_readings_go_and_events_stay(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    s = SqliteOutbox(path=path, budget_bytes=128 * 1024)
    s.open(["influxdb"])
    s.append(rows(1, 0, kind=EVENT, device="door"))  # the oldest row of all is an event
    for k in range(20):
        s.append(noisy_rows(200, 1 + k * 200))
    s.append(rows(1, 5000, kind=EVENT, device="door"))
    assert s.used_bytes() > s.budget_bytes
    dropped = s.enforce_budget()
    assert s.used_bytes() <= s.budget_bytes
    assert dropped == sorted(dropped) and dropped[0] == 2  # id 1 is the event
    left = s.read(0, 100_000, "line")
    ids = [r[0] for r in left]
    assert ids[0] == 1 and "door" in left[0][1]  # the event survived
    assert ids[1] == dropped[-1] + 1  # what remains of the readings is the newest part
    assert "door" in left[-1][1]
    assert len(ids) + len(dropped) == 4002 and s.rows == len(ids)
    s.close()
    s = SqliteOutbox(path=path, budget_bytes=128 * 1024)
    s.open(["influxdb"])
    assert s.dropped == len(dropped)  # the count outlives a restart
    s.close()


def test_events_are_never_dropped_even_over_the_budget(store) -> None:
    store.open(["influxdb"])
    if isinstance(store, MemoryOutbox):
        store.budget_rows = 10
    else:
        store.budget_bytes = 16 * 1024
    store.append(rows(300, kind=EVENT, device="camera"))
    assert store.enforce_budget() == []
    assert store.rows == 300


def test_quarantine_keeps_the_refused_rows_after_they_are_purged(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    s = SqliteOutbox(path=path, budget_bytes=1 << 30)
    s.open(["influxdb"])
    s.append(rows(10))
    assert s.quarantine("influxdb", [3, 7], 400, "field type conflict", 1.0) == 2
    s.advance("influxdb", 10)
    s.purge(10)
    assert s.quarantined() == 2 and s.quarantined("influxdb") == 2
    s.close()
    with sqlite3.connect(path) as con:
        kept = con.execute("SELECT row_id, line, status, error FROM quarantine ORDER BY row_id").fetchall()
    assert kept == [(3, "m,device=d1 v=2.0 2", 400, "field type conflict"),
                    (7, "m,device=d1 v=6.0 6", 400, "field type conflict")]
    assert read_summary(path)["quarantined"] == 2


def test_a_damaged_file_is_moved_aside_and_a_new_one_started(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    s = SqliteOutbox(path=path, budget_bytes=1 << 30)
    assert s.open(["influxdb"]) == {"influxdb": 0}
    assert s.append(rows(1)) == 1
    s.close()
    assert [p.name for p in tmp_path.glob("outbox.sqlite.corrupt-*")]


def test_two_gateways_cannot_share_one_outbox(tmp_path) -> None:
    a = SqliteOutbox(path=tmp_path / "outbox.sqlite", budget_bytes=1 << 30)
    a.open(["influxdb"])
    b = SqliteOutbox(path=tmp_path / "outbox.sqlite", budget_bytes=1 << 30)
    with pytest.raises(OutboxError, match="in use by another gateway"):
        b.open(["influxdb"])
    a.close()


def test_the_summary_reads_a_file_that_is_being_written(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    s = SqliteOutbox(path=path, budget_bytes=1 << 30)
    s.open(["influxdb", "mqtt-telemetry"])
    s.append(rows(10))
    s.advance("influxdb", 10)
    summary = read_summary(path, now=1_700_000_100.0)  # s is still open, its WAL unmerged
    assert summary["rows"] == 10 and summary["oldest_age_seconds"] == 100.0
    assert summary["sinks"]["influxdb"]["lag_rows"] == 0
    assert summary["sinks"]["mqtt-telemetry"] == {
        "cursor": 0, "lag_rows": 10, "oldest_unsent_age_seconds": 100.0, "quarantined": 0}
    s.close()
    with pytest.raises(OutboxError, match="no such file"):
        read_summary(tmp_path / "missing.sqlite")


# -- the writer ------------------------------------------------------------------------------


class Position:
    """The writer's view of a sink runner, without a sink."""

    def __init__(self, name: str):
        self.name = name
        self.cursor = 0
        self.oldest_ts = None
        self.notified = 0
        self.lost_rows = 0
        self.quarantined = 0

    def start_at(self, cursor: int) -> None:
        self.cursor = cursor

    def notify(self, head: int) -> None:
        self.notified = head

    def lost(self, n: int) -> None:
        self.lost_rows += n


def writer_for(store, *, max_staged: int = 100_000, commit_rows: int = 1000):
    alarms: list[tuple[str, bool]] = []
    w = OutboxWriter(store=store, commit_interval=1.0, commit_rows=commit_rows,
                     max_staged=max_staged, clock=FakeClock(),
                     on_alarm=lambda rule, active, message: alarms.append((rule, active)))
    sink = Position("influxdb")
    w.attach(sink)
    return w, sink, alarms


async def test_a_row_is_accepted_once_committed_and_the_sinks_hear_of_it(tmp_path) -> None:
    w, sink, _ = writer_for(SqliteOutbox(path=tmp_path / "o.sqlite", budget_bytes=1 << 30))
    await w.open()
    w.add(rows(5))
    assert w.committed_id == 0 and w.staged == 5  # staged, not yet accepted
    assert await w.commit() == 5
    assert w.committed_id == 5 and sink.notified == 5 and w.stats()["committed_total"] == 5
    await w.close()


def disk_cursor(path, sink: str = "influxdb") -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        return con.execute("SELECT last_id FROM cursors WHERE sink = ?", (sink,)).fetchone()[0]


async def test_rows_go_out_before_their_commit_and_confirmed_ones_never_reach_the_disk(
        tmp_path) -> None:
    path = tmp_path / "o.sqlite"
    store = SqliteOutbox(path=path, budget_bytes=1 << 30)
    w, sink, _ = writer_for(store)
    await w.open()
    w.add(rows(10))
    assert sink.notified == 10 and w.committed_id == 0  # the sink is woken at once ...
    assert [r[0] for r in await w.read(0, 100, "line")] == list(range(1, 11))  # ... and reads
    sink.cursor = 6
    await w.advance("influxdb", 6)  # confirmed before the commit
    assert disk_cursor(path) == 0  # no row on disk to move past: nothing written
    assert await w.commit() == 4  # only what the sink has not confirmed is written
    assert [r[0] for r in store.read(0, 100, "line")] == [7, 8, 9, 10]
    assert w.committed_id == 10 and w.stats()["skipped_rows_total"] == 6
    sink.cursor = 10
    await w.advance("influxdb", 10)  # past rows on disk: written at once (no resend after a crash)
    assert disk_cursor(path) == 10
    w.add(rows(5, 10))
    sink.cursor = 15
    await w.advance("influxdb", 15)
    assert await w.commit() == 0 and store.head == 10  # confirmed in time: the disk is spared
    assert disk_cursor(path) == 10  # a cursor on disk never passes the rows on disk
    await w.close()
    again = SqliteOutbox(path=path, budget_bytes=1 << 30)  # ids never go back after a restart
    w2, _, _ = writer_for(again)
    await w2.open()
    w2.add(rows(1, 15))
    assert w2.head == 11 and (await w2.read(10, 10, "line"))[0][0] == 11
    await w2.close()


async def test_rows_of_a_commit_under_way_can_still_be_read(tmp_path) -> None:
    w, sink, _ = writer_for(SqliteOutbox(path=tmp_path / "o.sqlite", budget_bytes=1 << 30))
    await w.open()
    w.add(rows(10))
    commit = asyncio.create_task(w.commit())
    await asyncio.sleep(0)  # the commit took the rows; its thread is writing them
    assert w.staged == 0 and w.committed_id == 0
    assert [r[0] for r in await w.read(3, 100, "line")] == list(range(4, 11))
    assert await commit == 10
    await w.close()


async def test_a_full_disk_keeps_rows_staged_drops_the_oldest_and_recovers(tmp_path) -> None:
    # SQLite's own page limit gives the real "database or disk is full" error.
    store = SqliteOutbox(path=tmp_path / "o.sqlite", budget_bytes=1 << 30)
    w, sink, alarms = writer_for(store)
    await w.open()
    for k in range(8):  # 8 commits (blocks) of rows that do not compress away
        w.add(noisy_rows(500, k * 500))
        await w.commit()
    pages = store._con.execute("PRAGMA page_count").fetchone()[0]
    store._con.execute(f"PRAGMA max_page_count={pages}")
    w.add(rows(500, 4000))
    assert await w.commit() == 0  # the disk is full: nothing lost, nothing accepted
    assert w.staged == 500 and w.failing and "full" in w.failing
    assert (OUTBOX_WRITE_FAILED, True) in alarms and (BUFFER_OVERFLOW, True) in alarms
    assert store.budget_bytes < 1 << 30  # shrunk to what the disk holds
    assert w.dropped > 0 and sink.lost_rows == w.dropped  # the oldest readings make room
    for _ in range(5):  # each failed try makes more room (the writer task retries with backoff)
        if await w.commit():
            break
    assert w.staged == 0 and w.failing is None and (OUTBOX_WRITE_FAILED, False) in alarms
    left = numbers(store.read(0, 10_000, "line"))
    assert left[-1] == 4499 and left[0] == w.dropped  # oldest gone, newest kept, in order
    assert len(left) + w.dropped == 4500
    await w.close()


async def test_a_file_that_cannot_be_opened_leaves_the_gateway_on_memory(tmp_path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    w, sink, alarms = writer_for(SqliteOutbox(path=blocker / "o.sqlite", budget_bytes=1 << 30))
    await w.open()
    assert alarms == [(OUTBOX_WRITE_FAILED, True)]
    assert isinstance(w.store, MemoryOutbox) and w.stats()["degraded"] == 1
    w.add(rows(3))
    assert await w.commit() == 3 and await w.read(0, 10, "line")
    assert alarms == [(OUTBOX_WRITE_FAILED, True)]  # still degraded: not durable
    await w.close()


async def test_staged_rows_past_the_memory_bound_shed_the_oldest_readings() -> None:
    w, sink, alarms = writer_for(MemoryOutbox(max_rows=10**6), max_staged=1000, commit_rows=1000)
    await w.open()
    w.add(rows(1, kind=EVENT, device="door"))
    w.add(rows(1100, 1))
    assert w.staged <= 1000 and w.dropped > 100
    assert sink.lost_rows == w.dropped and (BUFFER_OVERFLOW, True) in alarms
    await w.commit()
    left = w.store.read(0, 10_000, "line")
    assert "door" in left[0][1] and numbers(left)[-1] == 1100


async def test_the_overflow_alarm_clears_once_the_outbox_is_back_under_half_its_budget() -> None:
    store = MemoryOutbox(max_rows=1000)
    w, sink, alarms = writer_for(store)
    await w.open()
    w.add(rows(1500))
    await w.commit()
    await w._maintain()
    assert (BUFFER_OVERFLOW, True) in alarms and store.rows == 900
    sink.cursor = 1400  # the sink caught up with most of it
    w._purged_at = -100.0
    await w._maintain()
    assert store.rows < 500 and alarms[-1] == (BUFFER_OVERFLOW, False)


async def test_the_live_rate_follows_what_the_pipeline_adds() -> None:
    clock = FakeClock()
    w = OutboxWriter(store=MemoryOutbox(max_rows=10**6), commit_interval=1.0, commit_rows=10**6,
                     max_staged=10**6, clock=clock)
    await w.open()
    for _ in range(60):
        clock.advance(1.0)
        w.add(rows(1000))
        w._measure_rate()
    assert 990 < w.live_rate <= 1000
    await asyncio.sleep(0)


# -- the CLI ---------------------------------------------------------------------------------


def test_the_cli_shows_depth_lag_and_quarantine_of_a_running_outbox(tmp_path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("site: {id: cli}\nstate_dir: state\noutbox: {max_mb: 10}\n"
                    "influxdb: {url: 'http://127.0.0.1:9', org: o, bucket: b, token: {env: T}}\n"
                    "mqtt: {host: 127.0.0.1, telemetry: true}\n")
    s = SqliteOutbox(path=tmp_path / "state" / "outbox.sqlite", budget_bytes=10 << 20)
    s.open(["influxdb", "mqtt-telemetry"])
    s.append(rows(500))
    s.advance("mqtt-telemetry", 500)
    s.quarantine("influxdb", [7], 400, "field type conflict", 1.0)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gateway", "outbox", *args, str(site)],
                              capture_output=True, text=True)

    out = cli()  # while the store is open, as with a gateway running
    assert out.returncode == 0, out.stderr
    assert "rows waiting: 500" in out.stdout and "quarantined: 1" in out.stdout
    assert "sink influxdb: cursor 0, 500 rows behind" in out.stdout
    assert "sink mqtt-telemetry: cursor 500, up to date" in out.stdout
    # the process holding the outbox (here: this one) and what it writes to disk
    assert f"gateway pid {os.getpid()}:" in out.stdout and "written to disk per hour" in out.stdout
    s.close()
    summary = json.loads(cli("--json").stdout)
    assert summary["rows"] == 500 and summary["budget_bytes"] == 10 << 20
    assert not (tmp_path / "state" / "outbox.sqlite-shm").exists()  # read without a trace
    # (JSON with a running gateway, the text and the exit codes: test_outbox_report.py,
    # in-process; each run here costs a Python start-up)


def test_owed_readings_cost_the_sd_card_few_bytes_each(tmp_path) -> None:
    # Issue 16.3: during an uplink outage every reading is committed. The bench's load
    # (synthetic devices of 20 channels, each reading its InfluxDB line and its MQTT
    # JSON, random full-precision values), 10 commits of 1,000 readings: what reaches the
    # WAL, frames and all, stays under 30 B a reading (the checkpoint writes it once more:
    # the target is 60 B in all). One row per reading took about 250 B here.
    import random
    from datetime import datetime, timezone

    rng = random.Random(163)
    path = tmp_path / "outbox.sqlite"
    s = SqliteOutbox(path=path, budget_bytes=1 << 30)
    s.open(["influxdb", "mqtt-telemetry"])
    t0 = 1_796_145_280.0
    for second in range(10):
        batch = []
        for device in range(50):
            ts = t0 + second + device / 1000
            iso = datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")
            for channel in range(1, 21):
                power = rng.uniform(0, 100)
                batch.append((READING, f"dev-{device:04d}", ts,
                              f"ev_charging,building=1,channel={channel},device=dev-{device:04d},"
                              f"site=bench,unit={device // 10 % 10 + 1} power={power!r} "
                              f"{int(ts * 1e9)}",
                              json.dumps({"device": f"dev-{device:04d}", "channel": channel,
                                          "ts": iso.replace("+00:00", "Z"),
                                          "values": {"power": power}}, separators=(",", ":"))))
        s.append(batch)
    wal = os.path.getsize(f"{path}-wal")
    assert s.rows == 10_000 and wal / 10_000 <= 30, f"{wal / 10_000:.0f} B per reading"
    assert len(s.read(0, 20_000, "doc")) == 10_000
    s.close()
