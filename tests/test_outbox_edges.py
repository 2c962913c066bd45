"""The outbox where a slip loses data quietly: the flush at shutdown, a commit cut short by
cancellation, and the budget's deletions with events between the readings."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import sqlite3
import threading

import pytest

from gateway.clock import FakeClock
from gateway.errors import OutboxError
from gateway.outbox import EVENT, READING, OutboxWriter, SqliteOutbox, read_summary
from harness import running_gateway, wait_until, write_site


def rows(n: int, start: int = 0, kind: int = READING, device: str = "d1") -> list[tuple]:
    return [(kind, device, 1_700_000_000.0 + i, f"m,device={device} v={float(i)} {i}", None)
            for i in range(start, start + n)]


def noisy(n: int, start: int = 0) -> list[tuple]:
    """Readings with 100 random bytes in each line: the outbox's compression leaves them
    their size, so a few thousand pass a small budget."""
    return [(kind, device, ts, line.replace(" v=", f" x=\"{os.urandom(50).hex()}\",v="), doc)
            for kind, device, ts, line, doc in rows(n, start)]


def one_per_commit(s: SqliteOutbox, batch: list[tuple]) -> None:
    """Append each row in its own commit: its own block, purged or dropped alone."""
    for row in batch:
        s.append([row])


class Position:
    """A sink's position as the writer sees it, without a sink."""

    def __init__(self, name: str = "influxdb"):
        self.name = name
        self.cursor = 0
        self.oldest_ts = None
        self.lost_rows = 0
        self.quarantined = 0

    def start_at(self, cursor: int) -> None:
        self.cursor = cursor

    def notify(self, head: int) -> None:
        pass

    def lost(self, n: int) -> None:
        self.lost_rows += n

    def stats(self) -> dict:
        return {"buffered": 0, "cursor": self.cursor, "oldest_unsent_age_seconds": 0.0,
                "quarantined": 0}


def writer(store, *, commit_rows: int = 1000) -> OutboxWriter:
    w = OutboxWriter(store=store, commit_interval=60.0, commit_rows=commit_rows,
                     max_staged=100_000, clock=FakeClock())
    w.attach(Position())
    return w


async def test_the_flush_at_shutdown_commits_every_staged_row(tmp_path) -> None:
    store = SqliteOutbox(path=tmp_path / "o.sqlite", budget_bytes=1 << 30)
    w = writer(store)
    await w.open()
    w.add(rows(7))  # fewer than commit_rows, long before the commit interval: all staged
    w.add(rows(1, 7, kind=EVENT, device="door"))
    assert w.staged == 8 and store.rows == 0
    await w.flush()
    assert w.staged == 0 and w.committed_id == 8 and w.accepted == 8
    await w.close()
    reopened = SqliteOutbox(path=tmp_path / "o.sqlite", budget_bytes=1 << 30)
    reopened.open(["influxdb"])
    assert [r[0] for r in reopened.read(0, 100, "line")] == list(range(1, 9))
    reopened.close()


class FailingAppend(SqliteOutbox):
    """A store whose next append blocks in its thread until told, then fails (a disk
    error that arrives while the gateway is being stopped)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_next = True

    def append_rows(self, rows, cursors):  # the writer's commit
        if self.fail_next:
            self.fail_next = False
            self.entered.set()
            self.release.wait(10)
            raise OutboxError(str(self.path), "commit failed: disk I/O error")
        return super().append_rows(rows, cursors)


async def test_a_commit_that_fails_while_cancelled_keeps_its_rows_for_the_flush(tmp_path) -> None:
    store = FailingAppend(path=tmp_path / "o.sqlite", budget_bytes=1 << 30)
    w = writer(store)
    await w.open()
    w.add(rows(5))
    commit = asyncio.create_task(w.commit())
    await wait_until(store.entered.is_set, 5, "commit running in its thread")
    commit.cancel()  # the stop arrives while the disk is busy ...
    await asyncio.sleep(0)
    store.release.set()  # ... and then the commit fails
    try:
        await commit
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the cancellation was swallowed")
    assert w.staged == 5 and w.accepted == 0  # staged again, in order, not lost
    await w.flush()  # the flush at shutdown commits them
    assert w.staged == 0 and w.accepted == 5
    assert [r[0] for r in store.read(0, 100, "line")] == [1, 2, 3, 4, 5]
    await w.close()


def test_the_budget_deletes_only_readings_even_between_them(tmp_path) -> None:
    # Events interleaved with the readings the budget drops, in their own commits and in
    # the readings' (a block written again with its events only): every event stays.
    s = SqliteOutbox(path=tmp_path / "o.sqlite", budget_bytes=128 * 1024)
    s.open(["influxdb"])
    events = 0
    for k in range(20):
        s.append(noisy(100, k * 200) + rows(1, 20_000 + k, kind=EVENT, device="door")
                 + noisy(99, k * 200 + 100))
        s.append(rows(1, 10_000 + k, kind=EVENT, device="door"))
        events += 2
    assert s.used_bytes() > s.budget_bytes
    dropped = s.enforce_budget()
    assert dropped and s.used_bytes() <= s.budget_bytes
    left = s.read(0, 100_000, "line")
    assert sum("device=door" in line for _, line in left) == events  # no event went
    assert len(left) + len(dropped) == 20 * 201 and s.rows == len(left)
    assert not set(dropped) & {i for i, line in left}
    s.close()


async def test_a_stopped_gateway_has_sent_every_reading_it_took(tmp_path, unique_id) -> None:
    # The commit interval is longer than the run: every reading is still staged when the
    # stop comes, so only the shutdown's flush can get them to the sink.
    series = tmp_path / "series.lp"
    raw = {"site": {"id": unique_id}, "local_series": {"path": str(series)},
           "outbox": {"commit_interval": 60, "commit_rows": 1_000_000},
           "devices": [{"id": "m1", "type": "synthetic", "kind": "meter", "fields": ["power"],
                        "poll_interval": 0.01}]}
    async with running_gateway(write_site(tmp_path, raw)) as gw:
        await wait_until(lambda: gw.pipeline.readings >= 20, 5, "readings taken")
    taken = gw.pipeline.readings + gw.pipeline.events
    lines = series.read_text().splitlines()
    assert taken >= 20 and len(lines) == taken


# -- the store's counts and boundaries (found by mutation testing) --------------------------


def test_purge_deletes_up_to_and_including_its_id_in_slices_and_counts_them(tmp_path,
                                                                             monkeypatch) -> None:
    from gateway.outbox import store as store_module

    monkeypatch.setattr(store_module, "DELETE_SLICE", 3)  # several slices from a few rows
    s = SqliteOutbox(path=tmp_path / "o.sqlite", budget_bytes=1 << 30)
    s.open(["influxdb"])
    one_per_commit(s, rows(10))
    assert s.head == 10
    assert s.purge(1) == 1 and s.rows == 9  # exactly the first row
    assert [r[0] for r in s.read(0, 100, "line")][0] == 2
    assert s.purge(8) == 7 and s.rows == 2  # ids 2..8 over three slices
    assert [r[0] for r in s.read(0, 100, "line")] == [9, 10]
    s.close()


def test_the_budget_drops_down_to_its_low_water_not_much_further(tmp_path) -> None:
    s = SqliteOutbox(path=tmp_path / "o.sqlite", budget_bytes=128 * 1024)
    s.open(["influxdb"])
    for k in range(20):
        s.append(noisy(200, k * 200))
    first = len(s.enforce_budget())
    assert first and s.dropped == first
    assert s.used_bytes() <= s.budget_bytes
    # what is left is about the low water mark (90 %): not a wholesale clear-out
    assert s.used_bytes() > 0.6 * s.budget_bytes and s.rows > 1000
    for k in range(20, 30):
        s.append(noisy(200, k * 200))
    second = len(s.enforce_budget())
    assert second and s.dropped == first + second  # a running count
    s.close()


def test_a_full_disk_is_told_apart_from_other_failures() -> None:
    import errno
    import sqlite3

    from gateway.outbox.store import _is_disk_full

    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL
    assert _is_disk_full(full)
    assert _is_disk_full(sqlite3.OperationalError("database or disk is full"))  # no code given
    assert _is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert _is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    locked = sqlite3.OperationalError("database is locked")
    locked.sqlite_errorcode = sqlite3.SQLITE_BUSY
    assert not _is_disk_full(locked)
    assert not _is_disk_full(sqlite3.DatabaseError("file is not a database"))
    assert not _is_disk_full(OSError(errno.EIO, "Input/output error"))


def test_errors_say_what_was_being_done(tmp_path) -> None:
    s = SqliteOutbox(path=tmp_path / "o.sqlite", budget_bytes=1 << 20)
    s.open(["influxdb"])
    s.append(rows(10))
    assert s.usage() == s.used_bytes() / (1 << 20) and 0 < s.usage() < 1
    s._con.execute("DROP TABLE blocks")  # a damaged file, seen by each operation in turn
    for call, doing in ((lambda: s.append(rows(1)), "commit failed"),
                        (lambda: s.read(0, 10, "line"), "read failed"),
                        (lambda: s.purge(5), "purge failed"),
                        (lambda: s.oldest_ts(0), "read failed"),
                        (lambda: s.quarantine("influxdb", [1], 400, "bad", 1.0), "quarantine failed")):
        try:
            call()
        except OutboxError as exc:
            assert exc.detail.startswith(doing) and not exc.disk_full, exc.detail
        else:
            raise AssertionError(f"{doing}: no error")
    s._con.execute("DROP TABLE cursors")
    try:
        s.advance("influxdb", 3)
    except OutboxError as exc:
        assert exc.detail.startswith("cursor update failed")
    else:
        raise AssertionError("no error")
    s.close()


# -- the in-memory outbox (the fallback when the file cannot be opened) ----------------------


def test_memory_rows_that_carry_their_ids_keep_them_and_the_head_follows() -> None:
    from gateway.outbox import MemoryOutbox

    m = MemoryOutbox(max_rows=100)
    assert m.open(["influxdb"]) == {"influxdb": 0}
    carried = [(*r, i) for r, i in zip(rows(3), (4, 5, 9))]
    assert m.append_rows(carried, {"influxdb": 9}) == 9 and m.head == 9 and m.rows == 3
    assert m.read(4, 1, "doc") == [(5, "d1", None)]
    assert m.purge(9) == 3 and m.rows == 0
    assert m.append_rows([(*rows(1, 3)[0], 7)], {}) == 9 and m.head == 9  # an older id: kept
    assert m.append(rows(2, 10)) == 11  # new ids go on after the head
    assert [r[0] for r in m.read(0, 10, "line")] == [7, 10, 11] and m.rows == 3
    assert m.open(["influxdb", "mqtt"]) == {"influxdb": 11, "mqtt": 11}


def test_memory_quarantine_keeps_the_refused_rows_per_sink_bounded(monkeypatch) -> None:
    from gateway.outbox import MemoryOutbox, memory

    monkeypatch.setattr(memory, "QUARANTINE_KEEP", 3)
    m = MemoryOutbox(max_rows=100)
    m.open(["influxdb", "mqtt"])
    m.append(rows(6))
    assert m.quarantine("influxdb", [2, 4], 400, "bad", 1.0) == 2
    assert (m.quarantined(), m.quarantined("influxdb"), m.quarantined("mqtt")) == (2, 2, 0)
    m.quarantine("mqtt", [5], None, "refused", 2.0)
    assert (m.quarantined(), m.quarantined("influxdb"), m.quarantined("mqtt")) == (3, 2, 1)
    m.quarantine("mqtt", [6], None, "refused", 3.0)  # past the bound: the oldest goes
    assert (m.quarantined(), m.quarantined("influxdb"), m.quarantined("mqtt")) == (3, 1, 2)
    assert [(q[0], q[1][0]) for q in m._quarantine] == [("influxdb", 4), ("mqtt", 5), ("mqtt", 6)]


def test_memory_starts_empty_with_no_byte_budget_and_drops_only_past_its_rows() -> None:
    from gateway.outbox import MemoryOutbox

    m = MemoryOutbox(max_rows=10)
    # what the writer's stats show for it: rows, not bytes
    assert (m.path, m.rows, m.head, m.dropped, m.budget_bytes, m.used_bytes()) == (
        "memory", 0, 0, 0, 0, 0)
    m.open(["influxdb"])
    m.append(rows(10))
    assert m.enforce_budget() == [] and m.usage() == 1.0  # at the budget: nothing goes
    m.append(rows(1, 10))
    assert m.enforce_budget() == [1, 2] and m.rows == 9 and m.dropped == 2  # down to 90 %
    m.append(rows(2, 11))
    assert m.enforce_budget() == [3, 4] and m.dropped == 4  # a running count


# -- the store: slices, budget edges, summary, deferred open, salvage (mutation testing) -----


def deletes(s: SqliteOutbox) -> list[str]:
    """Record the DELETE statements the store runs from now on (SQLite's own trace)."""
    seen: list[str] = []
    s._con.set_trace_callback(lambda sql: seen.append(sql) if sql.startswith("DELETE") else None)
    return seen


def test_purge_goes_in_slices_of_delete_slice_ids(tmp_path, monkeypatch) -> None:
    from gateway.outbox import store as store_module

    monkeypatch.setattr(store_module, "DELETE_SLICE", 3)
    s = SqliteOutbox(path=tmp_path / "o.sqlite", budget_bytes=1 << 30)
    s.open(["influxdb"])
    one_per_commit(s, rows(12))
    s.purge(1)
    seen = deletes(s)
    assert s.purge(7) == 6 and seen == ["DELETE FROM blocks WHERE id <= 4",
                                        "DELETE FROM blocks WHERE id <= 7"]
    seen.clear()
    assert s.purge(7) == 0 and seen == []  # nothing at or below: no statement
    assert s.purge(9) == 2 and seen == ["DELETE FROM blocks WHERE id <= 9"]
    s.close()


def test_append_rows_counts_every_row_it_keeps(tmp_path) -> None:
    s = SqliteOutbox(path=tmp_path / "o.sqlite", budget_bytes=1 << 30)
    s.open(["influxdb"])
    assert s.append_rows([(*r, i) for r, i in zip(rows(2), (1, 2))], {"influxdb": 2}) == 2
    assert s.append_rows([(*r, i) for r, i in zip(rows(3, 2), (3, 4, 5))], {}) == 5
    assert s.rows == 5 and s.head == 5
    s.close()


def test_the_budget_drops_nothing_at_or_under_it_and_one_row_at_a_time_when_rows_are_few(
        tmp_path) -> None:
    s = SqliteOutbox(path=tmp_path / "o.sqlite", budget_bytes=1 << 30)
    s.open(["influxdb"])
    # five rows of a page each (random: they do not compress), each its own commit:
    # dropping one frees a page
    one_per_commit(s, [(READING, "d1", 1.0 + i, f"m v={i} " + os.urandom(2400).hex(), None)
                       for i in range(5)])
    assert s.enforce_budget() == []  # far under
    s.budget_bytes = s.used_bytes()
    assert s.enforce_budget() == []  # exactly at it
    s.budget_bytes = int(s.used_bytes() / 0.95)
    assert s.enforce_budget() == []  # between the low water and the budget
    s.budget_bytes = s.used_bytes() - 1
    assert s.enforce_budget() == [1] and s.rows == 4  # 10 % of 5 rows: one
    s.close()


def denied(s: SqliteOutbox) -> None:
    """Every statement from now on fails (SQLite's authorizer, a real refusal)."""
    import sqlite3

    s._con.set_authorizer(lambda *args: sqlite3.SQLITE_DENY)


def test_every_operation_names_itself_in_its_error(tmp_path) -> None:
    s = SqliteOutbox(path=tmp_path / "o.sqlite", budget_bytes=1)
    s.open(["influxdb"])
    s.append(rows(3))
    denied(s)
    for call, doing in ((lambda: s.append_rows([(*rows(1, 3)[0], 4)], {}), "commit failed"),
                        (s.enforce_budget, "budget failed"),
                        (s.quarantined, "read failed"),
                        (s.used_bytes, "read failed")):
        try:
            call()
        except OutboxError as exc:
            assert exc.detail.startswith(doing) and exc.path == str(s.path), exc.detail
        else:
            raise AssertionError(f"{doing}: no error")
    s._con.set_authorizer(None)
    s.close()


def test_a_full_disk_is_known_by_its_code_or_its_text() -> None:
    import sqlite3

    from gateway.outbox.store import _is_disk_full

    coded = sqlite3.OperationalError("write failed")
    coded.sqlite_errorcode = sqlite3.SQLITE_FULL
    assert _is_disk_full(coded)


def test_the_summary_of_a_file_in_use_and_of_a_closed_one(tmp_path) -> None:
    path = tmp_path / "o.sqlite"
    s = SqliteOutbox(path=path, budget_bytes=1 << 30)
    s.open(["influxdb", "mqtt"])
    for k in range(3):  # three commits of 100
        s.append(rows(100, k * 100))
    s.purge(200)  # free pages: the file is larger than what it uses
    s.advance("influxdb", 250)
    s.quarantine("influxdb", [260, 261], 400, "bad", 1.0)
    s._con.execute("INSERT INTO meta(key, value) VALUES ('dropped', 7)")
    first_ts = 1_700_000_000.0 + 200  # row 201's
    summary = read_summary(path, now=first_ts + 50.5)
    assert summary["path"] == str(path) and summary["head"] == 300 and summary["rows"] == 100
    assert summary["oldest_age_seconds"] == 50.5 and summary["dropped"] == 7
    assert summary["quarantined"] == 2 and summary["used_bytes"] == s.used_bytes()
    wal = os.path.getsize(f"{path}-wal")
    assert wal and summary["file_bytes"] == path.stat().st_size + wal
    assert summary["sinks"] == {
        "influxdb": {"cursor": 250, "lag_rows": 50, "oldest_unsent_age_seconds": 0.5,
                     "quarantined": 2},
        "mqtt": {"cursor": 0, "lag_rows": 100, "oldest_unsent_age_seconds": 50.5,
                 "quarantined": 0}}
    # a clock behind the rows' timestamps: ages are never negative
    assert read_summary(path, now=first_ts - 10)["oldest_age_seconds"] == 0.0
    s.close()
    summary = read_summary(path, now=first_ts)
    assert summary["file_bytes"] == path.stat().st_size and summary["rows"] == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.sqlite", "o.sqlite.lock"]  # no trace


def test_the_summary_says_why_it_cannot_read(tmp_path) -> None:
    import pytest

    for path, detail in ((tmp_path / "missing.sqlite", "no such file"),
                         (tmp_path, "cannot open: "),
                         (tmp_path / "text.sqlite", "cannot read: file is not a database")):
        if path.name == "text.sqlite":
            path.write_bytes(b"not a database" * 400)
        with pytest.raises(OutboxError) as caught:
            read_summary(path)
        assert caught.value.path == str(path) and caught.value.detail.startswith(detail)


class Refusing(SqliteOutbox):
    """A file the system will not let the store open now (SQLite's OperationalError, as
    on a full disk), until ``refuse`` is cleared. tests/test_state_files.py fills a real
    disk for this (root, a tmpfs mount); here the refusal alone is injected."""

    refuse = True
    at = "_connect"  # or "_register": the file opens, then the first write is refused

    def _connect(self):
        self._refused("_connect")
        return super()._connect()

    def _register(self, sinks):
        self._refused("_register")
        return super()._register(sinks)

    def _refused(self, where: str) -> None:
        import sqlite3

        if self.refuse and self.at == where:
            raise sqlite3.OperationalError("database or disk is full")


def written(path, *, appended: int, cursor: int) -> SqliteOutbox:
    s = SqliteOutbox(path=path, budget_bytes=1 << 30)
    s.open(["influxdb", "mqtt"])
    s.append(rows(appended))
    s.advance("influxdb", cursor)
    s._con.execute("INSERT INTO meta(key, value) VALUES ('dropped', 3)")
    return s


@pytest.mark.parametrize("at", ["_connect", "_register"])
def test_a_file_that_cannot_be_opened_now_tells_its_cursors_and_opens_later(tmp_path, at,
                                                                          caplog) -> None:
    path = tmp_path / "o.sqlite"
    written(path, appended=10, cursor=4).close()
    r = Refusing(path=path, budget_bytes=1 << 30)
    r.at = at
    assert (r.head, r.rows, r.dropped) == (0, 0, 0)  # what the stats show before the open
    with caplog.at_level(logging.ERROR, logger="gateway.outbox.store"):
        assert r.open(["influxdb", "mqtt", "new"]) == {"influxdb": 4, "mqtt": 0, "new": 10}
    assert "cannot be opened now (database or disk is full)" in caplog.text
    assert (r.head, r.rows, r.dropped) == (10, 10, 3)
    if at == "_connect":
        assert not os.path.exists(f"{path}-shm") and not os.path.exists(f"{path}-wal")  # no trace
    try:
        r.append(rows(1, 10))
    except OutboxError as exc:
        assert exc.disk_full and exc.detail.startswith("commit failed"), exc.detail
    else:
        raise AssertionError("a refused file took a commit")
    r.refuse = False  # room again: the next use opens the file
    assert r.append(rows(1, 10)) == 11 and r.rows == 11
    r.close()


def test_rows_and_cursors_still_in_the_wal_are_read_too(tmp_path) -> None:
    import shutil

    path = tmp_path / "o.sqlite"
    written(path, appended=10, cursor=4).close()  # checkpointed into the file
    s = SqliteOutbox(path=path, budget_bytes=1 << 30)
    s.open(["influxdb", "mqtt"])
    s.append(rows(5, 10))
    s.advance("influxdb", 12)  # both only in the WAL while s is open
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(path, copy / "o.sqlite")
    shutil.copy(f"{path}-wal", copy / "o.sqlite-wal")
    s.close()
    r = Refusing(path=copy / "o.sqlite", budget_bytes=1 << 30)
    assert r.open(["influxdb", "mqtt"]) == {"influxdb": 12, "mqtt": 0}
    assert (r.head, r.rows) == (15, 15)
    r.close()


def test_a_file_that_cannot_be_opened_or_read_starts_every_sink_at_its_head(tmp_path) -> None:
    r = Refusing(path=tmp_path / "none" / "o.sqlite", budget_bytes=1 << 30)
    assert r.open(["influxdb"]) == {"influxdb": 0}  # no file yet: no error either
    r.refuse = False
    assert r.append(rows(2)) == 2
    r.close()
    text = tmp_path / "text.sqlite"
    text.write_bytes(b"not a database" * 400)
    r = Refusing(path=text, budget_bytes=1 << 30)
    assert r.open(["influxdb"]) == {"influxdb": 0} and r.head == 0
    r.close()


def test_a_store_not_open_or_closed_refuses_to_work(tmp_path) -> None:
    s = SqliteOutbox(path=tmp_path / "o.sqlite", budget_bytes=1 << 30)
    for step in ("never opened", "closed"):
        try:
            s.read(0, 10, "line")
        except OutboxError as exc:
            assert exc.detail == "not open" and exc.path == str(tmp_path / "o.sqlite"), exc
        else:
            raise AssertionError(f"{step}: read without a file")
        s.open(["influxdb"])
        s.close()
    assert not (tmp_path / "o.sqlite-wal").exists()  # closed means checkpointed and let go
    r = Refusing(path=tmp_path / "r.sqlite", budget_bytes=1 << 30)
    r.open(["influxdb"])  # refused: opened at the next use ...
    r.close()  # ... unless closed first
    r.refuse = False
    try:
        r.append(rows(1))
    except OutboxError as exc:
        assert exc.detail.endswith("not open"), exc.detail
    else:
        raise AssertionError("a closed store opened its file again")


def test_the_second_gateway_is_told_which_outbox_is_taken(tmp_path) -> None:
    import stat

    path = tmp_path / "o.sqlite"
    a = SqliteOutbox(path=path, budget_bytes=1 << 30)
    old = os.umask(0o022)
    try:
        a.open(["influxdb"])
    finally:
        os.umask(old)
    # readable by all: `community-gateway outbox` may run as another user to find the holder
    assert stat.S_IMODE(os.stat(f"{path}.lock").st_mode) == 0o644
    b = SqliteOutbox(path=path, budget_bytes=1 << 30)
    try:
        b.open(["influxdb"])
    except OutboxError as exc:
        assert (exc.path, exc.detail) == (str(path), "in use by another gateway process")
    else:
        raise AssertionError("two stores on one file")
    a.close()
    b.open(["influxdb"])  # released at the close
    b.close()


def test_close_checkpoints_the_wal_even_with_a_reader_and_never_raises(tmp_path) -> None:
    path = tmp_path / "o.sqlite"
    s = SqliteOutbox(path=path, budget_bytes=1 << 30)
    s.open(["influxdb"])
    s.append(rows(50))
    reader = sqlite3.connect(path)  # another connection: the close is not the last one
    reader.execute("SELECT count(*) FROM blocks").fetchone()
    s.close()
    assert os.path.getsize(f"{path}-wal") == 0  # cut back by the store's own checkpoint
    reader.close()
    s.open(["influxdb"])
    denied(s)  # the checkpoint fails: the close still closes
    s.close()
    s.open(["influxdb"])
    assert s.rows == 50
    s.close()


def test_the_budget_counts_every_slice_it_deletes(tmp_path, monkeypatch) -> None:
    from gateway.outbox import store as store_module

    monkeypatch.setattr(store_module, "DELETE_SLICE", 3)
    s = SqliteOutbox(path=tmp_path / "o.sqlite", budget_bytes=128 * 1024)
    s.open(["influxdb"])
    for k in range(20):
        s.append(noisy(200, k * 200))
    dropped = s.enforce_budget()
    assert len(dropped) > 3 and s.dropped == len(dropped)
    assert s.rows == 4000 - len(dropped) == len(s.read(0, 10_000, "line"))
    s.close()


def test_open_makes_the_folders_and_tells_a_full_disk_from_a_folder_it_cannot_make(
        tmp_path, monkeypatch) -> None:
    from pathlib import Path

    s = SqliteOutbox(path=tmp_path / "a" / "b" / "o.sqlite", budget_bytes=1 << 30)
    assert s.open(["influxdb"]) == {"influxdb": 0}  # both folders made
    s.close()
    (tmp_path / "file").write_text("")
    s = SqliteOutbox(path=tmp_path / "file" / "o.sqlite", budget_bytes=1 << 30)
    try:
        s.open(["influxdb"])
    except OutboxError as exc:
        assert exc.detail.startswith("open failed: [Errno 17] File exists") and not exc.disk_full
    else:
        raise AssertionError("opened under a file")

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "mkdir", full)  # a full disk said for a folder that exists
    s = SqliteOutbox(path=tmp_path / "a" / "b" / "o.sqlite", budget_bytes=1 << 30)
    assert s.open(["influxdb"]) == {"influxdb": 0}
    s.close()


def test_a_block_whose_bytes_do_not_decode_is_skipped_logged_and_counted(tmp_path,
                                                                          caplog) -> None:
    # Damage the page checks at open did not catch (the last overflow page of a block,
    # whose chain pointer is never read): the sinks go on past it, and it is said.
    s = SqliteOutbox(path=tmp_path / "o.sqlite", budget_bytes=1 << 30)
    s.open(["influxdb"])
    for k in range(3):
        s.append(rows(10, k * 10))
    s._con.execute("UPDATE blocks SET body = x'01ffffffff' WHERE id = 20")
    with caplog.at_level(logging.ERROR, logger="gateway.outbox.store"):
        assert [r[0] for r in s.read(0, 100, "line")] == [*range(1, 11), *range(21, 31)]
        assert s.oldest_ts(10) == 1_700_000_020.0  # row 21's: the block is passed over
    assert s.bad_blocks == 1  # counted once (the block's rows stay cached as none)
    assert "block ending at row 20 cannot be read" in caplog.text
    assert read_summary(tmp_path / "o.sqlite")["sinks"]["influxdb"]["lag_rows"] == 30
    s.close()


# -- survivors of the blocks redesign's mutation run ------------------------------------------


def half_converted(path) -> None:
    """A file whose conversion stopped midway: blocks hold ids 1..20 (the block of 11..20
    with the oldest timestamps: devices' clocks need not follow the ids), the old table
    ids 21..40; the cursor of influxdb is inside the first block."""
    from gateway.outbox.blocks import INSERT_BLOCK, pack
    from gateway.outbox.store import SCHEMA
    from outbox_v1 import write_v1_outbox

    write_v1_outbox(path, [(i, READING, "d", 3000.0 + i, f"m v={i} {i}", None)
                           for i in range(21, 41)], {"influxdb": 5}, head=40)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as con:
        con.executescript(SCHEMA)
        con.execute(INSERT_BLOCK, pack([(READING, "d", 2000.0 + i, f"m v={i} {i}", None, i)
                                        for i in range(1, 11)]))
        con.execute(INSERT_BLOCK, pack([(READING, "d", 1000.0 + i, f"m v={i} {i}", None, i)
                                        for i in range(11, 21)]))


def test_the_summary_and_a_deferred_open_count_both_tables_of_a_half_converted_file(
        tmp_path) -> None:
    path = tmp_path / "o.sqlite"
    half_converted(path)
    summary = read_summary(path, now=10_000.0)
    assert (summary["rows"], summary["head"]) == (40, 40)
    assert summary["oldest_age_seconds"] == 10_000.0 - 1011.0
    influx = summary["sinks"]["influxdb"]
    assert influx["lag_rows"] == 5 + 10 + 20  # the rest of its block, the next one, the old table's
    assert influx["oldest_unsent_age_seconds"] == 10_000.0 - 1011.0  # the block after, not its own
    r = Refusing(path=path, budget_bytes=1 << 30)
    assert r.open(["influxdb"]) == {"influxdb": 5}
    assert (r.head, r.rows) == (40, 40)  # blocks' rows plus the old table's
    r.refuse = False
    r.close()


def test_the_head_comes_from_the_newest_block_or_is_zero_for_a_file_never_written(
        tmp_path) -> None:
    from gateway.outbox.blocks import INSERT_BLOCK, pack
    from gateway.outbox.store import SCHEMA
    from outbox_v1 import write_v1_outbox

    blocks_only = tmp_path / "blocks.sqlite"  # no meta head (a salvage's file, say)
    with contextlib.closing(sqlite3.connect(blocks_only, isolation_level=None)) as con:
        con.executescript(SCHEMA)
        con.execute(INSERT_BLOCK, pack([(*r, i) for i, r in enumerate(rows(5), 1)]))
    assert read_summary(blocks_only)["head"] == 5
    never = tmp_path / "v1.sqlite"  # no sqlite_sequence row: no row was ever written
    write_v1_outbox(never, [], {"influxdb": 0})
    assert read_summary(never)["head"] == 0
    s = SqliteOutbox(path=never, budget_bytes=1 << 30)
    assert s.open(["influxdb"]) == {"influxdb": 0} and s.head == 0
    assert s.append(rows(1)) == 1
    s.close()


def test_a_read_across_blocks_stops_at_its_limit_without_unpacking_further(tmp_path) -> None:
    s = SqliteOutbox(path=tmp_path / "o.sqlite", budget_bytes=1 << 30)
    s.open(["influxdb"])
    for k in range(4):
        s.append(rows(10, k * 10))
    assert [r[0] for r in s.read(0, 15, "line")] == list(range(1, 16))
    s._cache.clear()
    s._con.execute("UPDATE blocks SET body = x'01ffffffff' WHERE id IN (20, 30)")
    assert [r[0] for r in s.read(0, 10, "line")] == list(range(1, 11))
    assert s.bad_blocks == 0  # the limit was reached in block 10: block 20 was not read
    assert [r[0] for r in s.read(0, 100, "line")] == list(range(1, 11)) + list(range(31, 41))
    assert s.bad_blocks == 2  # each bad block counted
    s.close()


def test_the_block_cache_keeps_the_last_four_blocks_read(tmp_path) -> None:
    s = SqliteOutbox(path=tmp_path / "o.sqlite", budget_bytes=1 << 30)
    s.open(["influxdb"])
    for k in range(5):
        s.append(rows(10, k * 10))
    assert len(s.read(0, 100, "line")) == 50  # blocks 10..50 read: block 10 left the cache
    s._con.execute("UPDATE blocks SET body = x'01ffffffff' WHERE id = 10")
    assert [r[0] for r in s.read(0, 100, "line")] == list(range(11, 51))
    assert s.bad_blocks == 1
    s.close()


def test_purge_of_an_empty_store_deletes_nothing(tmp_path) -> None:
    s = SqliteOutbox(path=tmp_path / "o.sqlite", budget_bytes=1 << 30)
    s.open(["influxdb"])
    assert s.purge(10) == 0 and s.rows == 0
    s.close()


def test_the_budget_with_only_events_left_drops_nothing_and_says_so(tmp_path) -> None:
    s = SqliteOutbox(path=tmp_path / "o.sqlite", budget_bytes=1024)
    s.open(["influxdb"])
    s.append(rows(50, kind=EVENT))
    assert s.used_bytes() > s.budget_bytes
    assert s.enforce_budget() == []
    s.close()


def test_the_budget_names_the_readings_it_drops_even_from_blocks_that_do_not_decode(
        tmp_path) -> None:
    s = SqliteOutbox(path=tmp_path / "o.sqlite", budget_bytes=1 << 30)
    s.open(["influxdb"])
    s.append(rows(10))  # ids 1..10, readings only, in a row
    s.append(rows(2, 10) + rows(1, 12, kind=EVENT) + rows(2, 13))  # 11, 12, event 13, 14, 15
    s._con.execute("UPDATE blocks SET body = x'01ffffffff' WHERE id = 10")
    s.budget_bytes = s.used_bytes() // 2  # only a little room: both blocks go
    dropped = s.enforce_budget()
    # the first block's ids come from its columns (no need to unpack it); the second's
    # are its readings' ids, read from its rows
    assert dropped == [*range(1, 11), 11, 12, 14, 15]
    assert [r[0] for r in s.read(0, 100, "line")] == [13]
    s.close()


def test_a_block_rewritten_by_the_budget_is_not_read_from_the_cache_as_it_was(tmp_path) -> None:
    s = SqliteOutbox(path=tmp_path / "o.sqlite", budget_bytes=1 << 30)
    s.open(["influxdb"])
    s.append(noisy(20) + rows(1, 20, kind=EVENT))  # the event is the last row: same block id
    s.budget_bytes = s.used_bytes() // 2
    assert s.enforce_budget() == list(range(1, 21))
    assert [r[0] for r in s.read(0, 100, "line")] == [21]
    s.close()


def test_the_conversion_counts_every_row_it_moves(tmp_path, monkeypatch, caplog) -> None:
    from gateway.outbox import store
    from outbox_v1 import write_v1_outbox

    monkeypatch.setattr(store, "CONVERT_BLOCK_ROWS", 4)
    path = tmp_path / "o.sqlite"
    write_v1_outbox(path, [(i, READING, "d", 1000.0 + i, f"m v={i} {i}", None)
                           for i in range(1, 11)], {"influxdb": 0}, head=10)
    s = SqliteOutbox(path=path, budget_bytes=1 << 30)
    with caplog.at_level(logging.WARNING, logger="gateway.outbox.store"):
        s.open(["influxdb"])
    assert s.converted == 10 and s.rows == 10
    assert f"{path}: 10 rows of the previous file format converted to blocks" in caplog.text
    s.close()
