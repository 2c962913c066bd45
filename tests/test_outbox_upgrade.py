"""An outbox written by the version before blocks (one SQLite row per reading) after an
upgrade: converted to blocks at open, in one transaction, and every owed row sent."""

from __future__ import annotations

import contextlib
import sqlite3

import pytest

from gateway.outbox import EVENT, READING, SqliteOutbox, read_summary
from harness import running_gateway, wait_until, write_site
from outbox_v1 import write_v1_outbox


def v1_rows(first: int, last: int) -> list[tuple]:
    """``(id, kind, device, ts, line, doc)`` as the old pipeline stored them; every 10th
    an event, some without a document."""
    return [(i, EVENT if i % 10 == 0 else READING, f"dev-{i % 3}", 1_700_000_000.0 + i / 4,
             f"m,device=dev-{i % 3} v={i / 7!r} {1_700_000_000_000 + i}",
             None if i % 4 == 0 else f'{{"device":"dev-{i % 3}","v":{i / 7!r}}}')
            for i in range(first, last + 1)]


def tables(path) -> set[str]:
    with contextlib.closing(sqlite3.connect(path)) as con:
        return {n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_a_file_of_the_version_before_is_converted_and_keeps_every_row_and_cursor(
        tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    old = v1_rows(41, 4500)  # 1..40 confirmed and purged before the upgrade
    write_v1_outbox(path, old, {"influxdb": 100, "mqtt-telemetry": 40}, head=4500, dropped=3)
    # the report reads the old file as it is (read-only: no conversion)
    before = read_summary(path, now=1_700_000_000.0 + 4500)
    assert (before["rows"], before["head"], before["dropped"]) == (4460, 4500, 3)
    assert before["sinks"]["influxdb"]["lag_rows"] == 4400
    assert "rows" in tables(path)
    s = SqliteOutbox(path=path, budget_bytes=1 << 30)
    assert s.open(["influxdb", "mqtt-telemetry"]) == {"influxdb": 100, "mqtt-telemetry": 40}
    assert s.converted == 4460 and s.rows == 4460 and s.head == 4500 and s.dropped == 3
    assert "rows" not in tables(path)
    got = []
    after = 40
    while batch := s.read(after, 1000, "line"):
        got += batch
        after = batch[-1][0]
    assert got == [(r[0], r[4]) for r in old]  # every row, its own id, in order
    assert s.read(40, 5000, "doc") == [(r[0], r[2], r[5]) for r in old]
    assert s.oldest_ts(100) == old[60][3]
    assert s.append([(READING, "d", 1_700_005_000.0, "m v=1 1", None)]) == 4501  # ids go on
    s.close()
    after = read_summary(path, now=1_700_000_000.0 + 4500)
    assert (after["rows"], after["head"], after["dropped"]) == (4461, 4501, 3)
    assert after["sinks"]["influxdb"]["lag_rows"] == 4401
    assert after["sinks"]["mqtt-telemetry"]["oldest_unsent_age_seconds"] == 4500 - 41 / 4


def test_an_empty_file_of_the_version_before_keeps_its_head(tmp_path) -> None:
    # everything was sent before the upgrade: ids still never start again at 1
    path = tmp_path / "outbox.sqlite"
    write_v1_outbox(path, [], {"influxdb": 77}, head=77)
    s = SqliteOutbox(path=path, budget_bytes=1 << 30)
    assert s.open(["influxdb"]) == {"influxdb": 77}
    assert (s.converted, s.rows, s.head) == (0, 0, 77)
    assert s.append([(READING, "d", 1.0, "m v=1 1", None)]) == 78
    s.close()


def test_a_conversion_cut_short_loses_nothing_and_goes_on_at_the_next_open(tmp_path,
                                                                          monkeypatch) -> None:
    from gateway.outbox import store as store_module

    path = tmp_path / "outbox.sqlite"
    write_v1_outbox(path, v1_rows(1, 100), {"influxdb": 0}, head=100)
    calls = 0
    real_pack = store_module.pack

    def failing_pack(rows):  # a power cut / crash in the middle of the conversion
        nonlocal calls
        calls += 1
        if calls == 2:
            raise sqlite3.OperationalError("disk I/O error")
        return real_pack(rows)

    monkeypatch.setattr(store_module, "CONVERT_BLOCK_ROWS", 30)
    monkeypatch.setattr(store_module, "pack", failing_pack)
    s = SqliteOutbox(path=path, budget_bytes=1 << 30)
    s.open(["influxdb"])  # (the system refused: opened again at the next use)
    with contextlib.closing(sqlite3.connect(path)) as con:  # each row in one table or the other
        assert con.execute("SELECT min(id), count(*) FROM rows").fetchone() == (31, 70)
        assert con.execute("SELECT first_id, id, rows FROM blocks").fetchall() == [(1, 30, 30)]
    assert s.converted == 30
    monkeypatch.setattr(store_module, "pack", real_pack)
    assert [r[0] for r in s.read(0, 1000, "line")] == list(range(1, 101))  # converted now
    assert s.converted == 100 and "rows" not in tables(path) and s.head == 100
    with contextlib.closing(sqlite3.connect(path)) as con:
        assert [r[:3] for r in con.execute("SELECT first_id, id, rows FROM blocks")] == [
            (1, 30, 30), (31, 60, 30), (61, 90, 30), (91, 100, 10)]
    s.close()


async def test_a_gateway_upgraded_on_an_owed_backlog_sends_it(tmp_path, unique_id) -> None:
    state = tmp_path / "state"
    state.mkdir()
    old = [(i, READING, "m1", 1_700_000_000.0 + i, f"old,device=m1 v={i} {i}", None)
           for i in range(1, 2001)]
    write_v1_outbox(state / "outbox.sqlite", old, {"local-file": 500}, head=2000)
    series = tmp_path / "series.lp"
    raw = {"site": {"id": unique_id}, "local_series": {"path": str(series)},
           "devices": [{"id": "m1", "type": "synthetic", "kind": "meter", "fields": ["power"],
                        "poll_interval": 0.05}]}

    def sent() -> list[str]:
        return series.read_text().splitlines() if series.exists() else []

    async with running_gateway(write_site(tmp_path, raw)) as gw:
        await wait_until(lambda: len([x for x in sent() if x.startswith("old,")]) >= 1500, 10,
                         "the old backlog sent")
        await wait_until(lambda: any(x.startswith("meter,") for x in sent()), 10, "new readings")
        assert gw.outbox.store.converted == 2000
    lines = [x for x in sent() if x.startswith("old,")]
    assert lines == [r[4] for r in old[500:]]  # each owed row once, in order; none confirmed before
    assert max(int(x.split()[-1]) for x in sent() if x.startswith("meter,")) > 0


@pytest.mark.parametrize("payload", ["line", "doc"])
def test_memory_and_sqlite_read_alike_after_a_conversion(tmp_path, payload) -> None:
    from gateway.outbox import MemoryOutbox

    path = tmp_path / "outbox.sqlite"
    old = v1_rows(1, 300)
    write_v1_outbox(path, old, {"influxdb": 0}, head=300)
    s = SqliteOutbox(path=path, budget_bytes=1 << 30)
    s.open(["influxdb"])
    m = MemoryOutbox(max_rows=10_000)
    m.open(["influxdb"])
    m.append([r[1:] for r in old])
    for after in (0, 1, 137, 299, 300):
        assert s.read(after, 50, payload) == m.read(after, 50, payload)
        assert s.oldest_ts(after) == m.oldest_ts(after)
    s.close()
