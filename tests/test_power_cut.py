"""A real power cut: the state folder on a filesystem that loses what was not fsynced.

``kill -9`` keeps the page cache, so it cannot show a missing fsync. Here the
gateway's state folder (outbox, alarm state) is on ``tests/cutfs.py``, a FUSE
filesystem that holds writes in memory until they are fsynced; the cut kills the
gateway and the filesystem together, so whatever reached no fsync is gone. Under
load (800 readings/s, the upstream down so every reading waits in the outbox, a rule
raising and clearing alarms), cut, mount again, check, start again:

- every reading whose commit the outbox acknowledged (visible to a reader before the
  cut: SQLite publishes a FULL commit only after its fsync) is still there;
- every alarm transition the alarm store acknowledged is still there;
- neither file is corrupt (``PRAGMA integrity_check``), none was moved aside, and
  the gateway starts on them and goes on committing.

Needs /dev/fuse and Debian's fuse3 (``scripts/test.sh`` installs it); as root.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from cutfs import CutMount
from gateway.outbox.blocks import unpack
from harness import wait_until, write_site

CUTS = 2  # the bench cuts many more times (python -m bench --only powercut)


def site(unique_id: str, state: Path, influx_url: str) -> dict:
    return {
        "site": {"id": unique_id},
        "state_dir": str(state),
        "influxdb": {"url": influx_url, "org": "o", "bucket": "b",
                     "token": {"env": "TEST_INFLUX_TOKEN"}},
        # 2 x 20 channels every 50 ms: 800 readings/s, each a bounded random walk
        "devices": [{"id": f"cab-{i}", "type": "synthetic", "kind": "ev_charging",
                     "fields": ["power", "voltage"], "channels": 20, "poll_interval": 0.05}
                    for i in (1, 2)],
        # the walks cross 50 now and then: alarms raised and cleared all along
        "rules": [{"id": "over-power", "type": "threshold", "select": {"kinds": ["ev_charging"]},
                   "field": "power", "above": 50, "hysteresis": 0.5}],
        "outbox": {"commit_interval": 0.1},
    }


def committed(state: Path) -> tuple[set[int], set[int]]:
    """Outbox row ids and alarm transition numbers a reader sees now (read-only)."""
    rows: set[int] = set()
    seqs: set[int] = set()
    outbox, alarms = state / "outbox.sqlite", state / "alarms.sqlite3"
    if outbox.exists():
        rows = _ids(outbox, "SELECT body FROM blocks", unpacked=True)
    if alarms.exists():
        seqs = _ids(alarms, "SELECT seq FROM transitions")
    return rows, seqs


def _ids(path: Path, query: str, *, unpacked: bool = False) -> set[int]:
    """The first column's values, or with ``unpacked`` the row ids in the blocks it reads."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
        try:
            if unpacked:
                return {row[0] for (body,) in con.execute(query) for row in unpack(body)}
            return {i for (i,) in con.execute(query)}
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # the gateway is creating the file right now
                return set()
            raise


def intact(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",), f"{path} is corrupt"


async def spawn(path: Path, log: Path) -> asyncio.subprocess.Process:
    with open(log, "ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "run", str(path), stdout=out, stderr=out,
            env=dict(os.environ, TEST_INFLUX_TOKEN="t"))


async def test_a_power_cut_under_load_keeps_every_acknowledged_reading_and_alarm(
        tmp_path, victoria, unique_id) -> None:
    fs = CutMount(tmp_path / "backing", tmp_path / "mnt")
    state = tmp_path / "mnt" / "state"
    await asyncio.to_thread(victoria.stop)  # the upstream is down: every reading waits on disk
    log = tmp_path / "gateway.log"
    path = write_site(tmp_path, site(unique_id, state, victoria.url))
    rng = random.Random(16)
    try:
        for cut in range(CUTS):
            fs.mount()
            if cut:  # what the last cut left: whole files, and everything acknowledged
                intact(state / "outbox.sqlite")
                intact(state / "alarms.sqlite3")
                rows, seqs = committed(state)
                assert acked_rows <= rows, f"{len(acked_rows - rows)} acknowledged readings lost"
                assert acked_seqs <= seqs, f"{len(acked_seqs - seqs)} alarm transitions lost"
            before = len(committed(state)[0])
            proc = await spawn(path, log)
            try:
                # under load: readings committed and alarms raised since this start
                await wait_until(lambda: len(committed(state)[0]) >= before + 2000
                                 and committed(state)[1], 20, "load on the outbox and the alarms")
                await asyncio.sleep(rng.uniform(0.0, 0.5))  # cut anywhere in a commit cycle
                acked_rows, acked_seqs = committed(state)
            finally:
                proc.kill()  # the power goes: the gateway ...
                await proc.wait()
                fs.cut()  # ... and whatever was not fsynced
        fs.mount()
        intact(state / "outbox.sqlite")
        intact(state / "alarms.sqlite3")
        rows, seqs = committed(state)
        assert acked_rows <= rows, f"{len(acked_rows - rows)} acknowledged readings lost"
        assert acked_seqs <= seqs, f"{len(acked_seqs - seqs)} alarm transitions lost"
        # and the gateway starts on what the cut left, and goes on
        before = len(rows)
        proc = await spawn(path, log)
        try:
            await wait_until(lambda: len(committed(state)[0]) > before, 20, "commits after the cut")
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    finally:
        fs.cut()
    text = log.read_bytes()
    assert b"Traceback" not in text and b"damaged" not in text, text.decode(errors="replace")[-3000:]
    assert not list(state.parent.glob("**/*.corrupt-*")) and not list(
        (tmp_path / "backing").glob("**/*.corrupt-*")), "a file was moved aside"
