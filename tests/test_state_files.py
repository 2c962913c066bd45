"""Damaged state files and a full disk never stop the gateway (issue 10.3).

The files are damaged for real (pages overwritten with random bytes, a file cut
in half, a file that never was a database) and the disk is filled for real (a
tmpfs; root only, as CI runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml

from gateway.alarms.manager import AlarmManager
from gateway.alarms.store import FILE_NAME, AlarmStore
from gateway.clock import FakeClock
from gateway.outbox import READING, OutboxWriter, SqliteOutbox
from harness import wait_until
from state_damage import damage, fill, tiny_disk

ROWS = 20_000
STORE_WRITE_FAILED = "alarm_store_write_failed"  # the alarm while the file cannot be written


def outbox_rows(n: int, start: int = 0) -> list[tuple]:
    return [(READING, "d1", 1_700_000_000.0 + i, f"m,device=d1 v={float(i)} {i}", None)
            for i in range(start, start + n)]


def write_outbox(path: Path, n: int = ROWS, cursor: int = 100) -> None:
    store = SqliteOutbox(path=path, budget_bytes=1 << 30)
    store.open(["local"])
    for start in range(0, n, 500):  # commits of 500: a block each, spread over the file
        store.append(outbox_rows(min(500, n - start), start))
    store.advance("local", cursor)
    store.close()


async def write_alarms(state_dir: Path, transitions: int = 400) -> str:
    """An alarm file with one open alarm and a few hundred transitions (several pages)."""
    clock = FakeClock()
    store = AlarmStore(state_dir=state_dir, clock=clock)
    manager = AlarmManager(clock=clock, listeners=[store.on_transition])
    await store.open()
    alarm = manager.activate(rule="r", severity=2, device="d", kind="k", channel=None,
                             location={}, message="m", value=1.0, ts=clock.time(), momentary=True)
    for i in range(transitions // 2):
        manager.shelve(alarm.id, by="op", note=f"looking {i} " + "x" * 200, minutes=5)
        manager.unshelve(alarm.id, by="op")
    await store.flush_once()
    await store.close()
    return alarm.id


# -- the gateway as a process ----------------------------------------------------------------


def site_file(tmp_path: Path, port: int, **extra) -> Path:
    raw = {
        "site": {"id": "damaged"},
        "state_dir": str(tmp_path / "state"),
        "http": {"listen": f"127.0.0.1:{port}"},
        "local_series": {"path": str(tmp_path / "series.lp")},
        "devices": [{"id": "meter-a", "type": "synthetic", "kind": "meter", "fields": ["power"],
                     "poll_interval": 0.05}],
        "rules": [{"id": "always", "type": "threshold", "select": {"devices": ["meter-a"]},
                   "field": "power", "above": -1, "severity": 2}],
        **extra,
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


class GatewayProcess:
    """``python -m gateway run SITE`` with its log collected."""

    def __init__(self, site: Path):
        self.site = site
        self.log = ""
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task | None = None

    async def __aenter__(self) -> "GatewayProcess":
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "run", str(self.site),
            stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.log += line.decode(errors="replace")

    async def stop(self) -> int:
        assert self.proc is not None and self._reader is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            rc = await self.proc.wait()
            await self._reader
        return rc

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.stop()


async def api_alarms(session: aiohttp.ClientSession, port: int) -> list[dict] | None:
    try:
        async with session.get(f"http://127.0.0.1:{port}/api/alarms?history=0") as r:
            return (await r.json())["alarms"] if r.status == 200 else None
    except aiohttp.ClientError:
        return None


@pytest.mark.parametrize("how", ["garbage", "truncated", "not-sqlite"])
async def test_the_gateway_runs_on_damaged_state_files(tmp_path, free_port, how) -> None:
    state = tmp_path / "state"
    await write_alarms(state)
    write_outbox(state / "outbox.sqlite")
    damage(state / FILE_NAME, how)
    damage(state / "outbox.sqlite", how)
    port = free_port()
    async with GatewayProcess(site_file(tmp_path, port)) as gw, aiohttp.ClientSession() as s:
        found: dict[str, dict] = {}

        async def poll() -> bool:
            alarms = await api_alarms(s, port) or []
            found.update({a["rule"]: a for a in alarms})
            return {"alarm_history_lost", "outbox_damaged", "always"} <= set(found)

        deadline = asyncio.get_running_loop().time() + 20
        while not await poll():
            assert gw.proc.returncode is None, f"the gateway exited:\n{gw.log}"
            assert asyncio.get_running_loop().time() < deadline, f"no alarms:\n{gw.log}\n{found}"
            await asyncio.sleep(0.1)
        [alarms_aside] = [p for p in state.iterdir() if p.name.startswith(f"{FILE_NAME}.corrupt-")
                          and not p.name.endswith(("-wal", "-shm"))]
        [outbox_aside] = [p for p in state.iterdir() if p.name.startswith("outbox.sqlite.corrupt-")
                          and not p.name.endswith(("-wal", "-shm"))]
        assert alarms_aside.name in gw.log and outbox_aside.name in gw.log
        assert alarms_aside.name in found["alarm_history_lost"]["message"]
        assert "lost" in found["alarm_history_lost"]["message"]
        salvage = found["outbox_damaged"]["details"]
        assert salvage["moved_to"] == str(outbox_aside)
        assert salvage["salvaged_rows"] + salvage["unreadable_rows"] <= ROWS
        # the new files are whole, and in use
        for name in (FILE_NAME, "outbox.sqlite"):
            with contextlib.closing(sqlite3.connect(f"file:{state / name}?mode=ro", uri=True)) as c:
                assert c.execute("PRAGMA quick_check").fetchone() == ("ok",)
        assert await gw.stop() == 0
    assert "Traceback" not in gw.log


# -- the outbox's salvage ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_a_damaged_outbox_keeps_every_row_that_can_be_read(tmp_path, how, caplog) -> None:
    path = tmp_path / "outbox.sqlite"
    write_outbox(path, cursor=100)
    damage(path, how)
    store = SqliteOutbox(path=path, budget_bytes=1 << 30)
    cursors = store.open(["local"])  # today: "database disk image is malformed"
    report = store.salvage
    assert report is not None and report.moved_to.exists()
    assert 0 < report.copied < ROWS and report.unreadable > 0
    assert report.copied + report.unreadable == ROWS  # every id is either salvaged or counted
    kept = store.read(0, ROWS, "line")
    assert len(kept) == report.copied == store.rows
    # each salvaged row is the row that was written, in order, under its own id
    assert all(line == f"m,device=d1 v={float(i - 1)} {i - 1}" for i, line in kept)
    assert cursors == {"local": 100}  # the cursor page was readable: kept
    assert store.append(outbox_rows(1, ROWS)) == ROWS + 1  # ids go on, never reused
    store.close()
    with contextlib.closing(sqlite3.connect(path)) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert str(report.copied) in caplog.text and report.moved_to.name in caplog.text


def test_an_outbox_that_is_not_a_database_is_replaced(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    write_outbox(path)
    damage(path, "not-sqlite")
    store = SqliteOutbox(path=path, budget_bytes=1 << 30)
    assert store.open(["local"]) == {"local": 0}
    assert store.salvage.copied == 0 and store.salvage.tail_lost  # nothing to read, said so
    assert store.append(outbox_rows(1)) == 1
    store.close()


# -- a full disk at open ------------------------------------------------------------------------


async def test_a_full_disk_at_open_restores_what_it_can_and_writes_once_there_is_room(
        tmp_path) -> None:
    with tiny_disk(tmp_path / "disk") as disk:
        state = disk / "state"
        alarm_id = await write_alarms(state, transitions=4)
        write_outbox(state / "outbox.sqlite", n=500, cursor=10)
        filler = fill(disk)

        raised: list[tuple[str, bool]] = []
        clock = FakeClock()
        store = AlarmStore(state_dir=state, clock=clock,
                           on_alarm=lambda rule, active, message: raised.append((rule, active)))
        manager = AlarmManager(clock=clock, listeners=[store.on_transition])
        records = await store.open()  # today: StateFileError, and `run` exits 2
        assert [r["id"] for r in records] == [alarm_id] and store.unwritable
        [alarm] = manager.restore(records)

        outbox = OutboxWriter(store=SqliteOutbox(path=state / "outbox.sqlite", budget_bytes=1 << 30),
                              commit_interval=1.0, commit_rows=1000, max_staged=10_000, clock=clock)
        await outbox.open()  # today: an in-memory outbox for good
        assert isinstance(outbox.store, SqliteOutbox) and outbox.committed_id == 500
        outbox.add(outbox_rows(3, 500))
        assert await outbox.commit() == 0 and outbox.staged == 3  # no room: kept, not lost

        writer = asyncio.create_task(store.run())
        try:
            await wait_until(lambda: (STORE_WRITE_FAILED, True) in raised, 5, "store alarm")
            manager.ack(alarm.id, by="guard")  # closes it (momentary): must reach the file
            filler.unlink()
            await wait_until(lambda: (STORE_WRITE_FAILED, False) in raised, 15, "written again")
            await store.wait_written()
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            await store.close()
        assert await outbox.commit() == 3 and outbox.committed_id == 503
        await outbox.close()
        reopened = AlarmStore(state_dir=state, clock=clock)
        assert await reopened.open() == []  # the ack (and close) was written
        assert [h["event"] for h in await reopened.history(alarm_id=alarm_id, limit=2)] == [
            "closed", "acked"]
        await reopened.close()


async def test_a_full_disk_with_no_state_file_yet_starts_and_catches_up(tmp_path) -> None:
    with tiny_disk(tmp_path / "disk") as disk:
        filler = fill(disk)
        clock = FakeClock()
        store = AlarmStore(state_dir=disk / "state", clock=clock)
        manager = AlarmManager(clock=clock, listeners=[store.on_transition])
        assert await store.open() == [] and store.unwritable
        writer = asyncio.create_task(store.run())
        try:
            manager.activate(rule="r", severity=1, device="d", kind="k", channel=None,
                             location={}, message="m", value=None, ts=clock.time())
            filler.unlink()
            await wait_until(lambda: store.written == 1, 15, "written once there is room")
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            await store.close()
        assert os.path.getsize(disk / "state" / FILE_NAME) > 0


def test_damage_helpers_really_damage(tmp_path) -> None:
    # The premise of the tests above: these files fail SQLite's own checks.
    for how in ("garbage", "truncated", "not-sqlite"):
        path = tmp_path / f"{how}.sqlite"
        write_outbox(path, n=5000)
        damage(path, how)
        with pytest.raises(sqlite3.DatabaseError), contextlib.closing(sqlite3.connect(path)) as c:
            result = c.execute("PRAGMA integrity_check").fetchall()
            c.execute("SELECT count(*) FROM rows").fetchall()
            if result != [("ok",)]:
                raise sqlite3.DatabaseError(json.dumps(result)[:200])
