"""Power cuts under load (issue 16.7): the state folder on tests/cutfs.py, a FUSE
filesystem that loses whatever was not fsynced when it is killed.

The workload of tests/test_power_cut.py, cut many times: 2 synthetic devices x 20
channels at 50 ms (800 readings/s), an over-power rule raising and clearing alarms,
the InfluxDB upstream down (every reading waits in the outbox) in even rounds and up
in odd ones (readings go out before their commit, most never reach the disk). Each
round: start the gateway on what the last cut left, wait for load, cut at a random
moment (the gateway and the filesystem killed together), mount again and check:

- acknowledged readings lost: outbox rows a reader saw before the cut (SQLite
  publishes a FULL commit after its fsync) that are neither there after it nor
  confirmed by the upstream (the sink's cursor passed them);
- alarm transitions lost: transitions a reader saw before the cut, missing after;
- corrupt files: ``PRAGMA integrity_check`` of the outbox and the alarm state, and
  files moved aside by the gateway; failed restarts: a start that commits nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.common import ROOT, SITE_ID, TOKEN_ENV, Figure, at_most, info, on_server_cpus

NAME = "powercut"


def _ids(path: Path, query: str, *, unpacked: bool = False) -> set[int]:
    """The first column's values, or with ``unpacked`` the row ids in the outbox blocks
    it reads."""
    from gateway.outbox.blocks import unpack

    if not path.exists():
        return set()
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
        try:
            if unpacked:
                return {row[0] for (body,) in con.execute(query) for row in unpack(body)}
            return {i for (i,) in con.execute(query)}
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return set()
            raise


def _cursor(state: Path) -> int:
    path = state / "outbox.sqlite"
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
        try:
            row = con.execute("SELECT min(last_id) FROM cursors").fetchone()
        except sqlite3.OperationalError:
            return 0
    return row[0] or 0


def _seen(state: Path) -> tuple[set[int], set[int]]:
    return (_ids(state / "outbox.sqlite", "SELECT body FROM blocks", unpacked=True),
            _ids(state / "alarms.sqlite3", "SELECT seq FROM transitions"))


def _intact(path: Path) -> bool:
    if not path.exists():
        return True
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
        return con.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def run(opts) -> list[Figure]:
    from cutfs import CutMount
    from servers import VictoriaMetrics

    cuts = 3 if opts.quick else 20
    rng = random.Random(16)
    lost_rows = lost_seqs = corrupt = failed_starts = acked_total = seqs_total = 0
    with tempfile.TemporaryDirectory(prefix="bench-powercut-") as d:
        tmp = Path(d)
        with on_server_cpus():
            vm = VictoriaMetrics()
            vm.start()
        fs = CutMount(tmp / "backing", tmp / "mnt")
        state = tmp / "mnt" / "state"
        site = {
            "site": {"id": SITE_ID}, "state_dir": str(state),
            "influxdb": {"url": vm.url, "org": "o", "bucket": "b", "token": {"env": TOKEN_ENV}},
            "devices": [{"id": f"cab-{i}", "type": "synthetic", "kind": "ev_charging",
                         "fields": ["power", "voltage"], "channels": 20, "poll_interval": 0.05}
                        for i in (1, 2)],
            "rules": [{"id": "over-power", "type": "threshold",
                       "select": {"kinds": ["ev_charging"]}, "field": "power", "above": 50,
                       "hysteresis": 0.5}],
        }
        path = tmp / "site.yaml"
        path.write_text(yaml.safe_dump(site))
        log = tmp / "gateway.log"
        acked: tuple[set[int], set[int]] = (set(), set())
        try:
            for cut in range(cuts + 1):
                fs.mount()
                ok = _intact(state / "outbox.sqlite") and _intact(state / "alarms.sqlite3")
                corrupt += not ok
                rows, seqs = _seen(state)
                confirmed = _cursor(state)
                lost_rows += len({i for i in acked[0] - rows if i > confirmed})
                lost_seqs += len(acked[1] - seqs)
                if cut == cuts:
                    break
                if cut % 2 == 0 and vm.running:
                    await asyncio.to_thread(vm.stop)
                elif cut % 2 and not vm.running:
                    with on_server_cpus():
                        await asyncio.to_thread(vm.start)
                offset = log.stat().st_size if log.exists() else 0
                with open(log, "ab") as out:
                    proc = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "gateway", "run", str(path), cwd=ROOT,
                        stdout=out, stderr=out)
                try:
                    started = await _wait(lambda: b"starting" in log.read_bytes()[offset:], 20)
                    failed_starts += not started
                    await asyncio.sleep(1.0 + rng.uniform(0.0, 0.5))  # load, then a cut anywhere
                    acked = _seen(state)
                    acked_total += len(acked[0])
                    seqs_total += len(acked[1])
                finally:
                    proc.kill()
                    await proc.wait()
                    fs.cut()
        finally:
            fs.cut()
            vm.stop()
        moved = len(list((tmp / "backing").glob("**/*.corrupt-*")))
    note = (f"{cuts} cuts under load (800 readings/s, upstream down / up in turn); "
            f"{acked_total:,} acknowledged rows and {seqs_total:,} transitions checked")
    return [
        at_most(NAME, "acknowledged readings lost in power cuts", lost_rows, 0, "rows", note),
        at_most(NAME, "alarm transitions lost in power cuts", lost_seqs, 0, "transitions",
                "today (alarm store synchronous=NORMAL): every transition since the last "
                "checkpoint"),
        at_most(NAME, "corrupt or moved-aside files / failed restarts after a cut",
                corrupt + moved + failed_starts, 0, "",
                f"corrupt {corrupt}, moved aside {moved}, failed restarts {failed_starts}"),
    ]
