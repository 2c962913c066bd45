"""The daemon as a real process: refuses a bad config, stops cleanly on SIGTERM and flushes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from harness import cabinet_site, wait_until, write_site
from simulators.charging_cabinet import CabinetModel
from simulators.modbus_server import CabinetServer


async def test_run_refuses_a_bad_config(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("site: {id: x}\ndevices: [{id: d, type: modbus, bus: nowhere, profile: ev-cabinet}]\n")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", "run", str(path),
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"bad.yaml" in err and b"devices[0].bus" in err


async def test_sigterm_stops_cleanly_and_flushes(tmp_path, victoria, unique_id) -> None:
    model = CabinetModel(ports=2, scenario="normal", scenario_port=1, seed=5)
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv:
        raw = cabinet_site(unique_id, bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": srv.port},
                           influx_url=victoria.url, poll_interval=0.1, rules=[])
        raw["devices"][0]["channels"] = 2
        path = write_site(tmp_path, raw)
        env = dict(os.environ, TEST_INFLUX_TOKEN="t")
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", "run", str(path),
                                                    env=env, stderr=asyncio.subprocess.PIPE)
        log = b""

        async def read_log() -> None:
            nonlocal log
            while line := await proc.stderr.readline():
                log += line

        reader = asyncio.create_task(read_log())
        await wait_until(lambda: b"starting" in log, 10, "gateway start")
        # Rows go out as they come (issue 16: no flush timer), so the stop's flush only
        # has what is in flight at that moment; it must still stop cleanly and in time.
        await asyncio.sleep(1.0)  # let it poll ~10 times
        stop = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            rc = await proc.wait()
            await reader
        assert rc == 0
        assert time.monotonic() - stop < 5
        assert b"stopped" in log
    # Points written a moment ago may not be searchable yet (even after a flush): poll.
    await victoria.wait_for_series_async(
        f'ev_charging_voltage{{site="{unique_id}"}}',
        lambda series: len(series) == 2 and all(len(s["values"]) >= 5 for s in series), timeout=5)


def test_run_imports_only_what_a_plain_site_uses() -> None:
    # Memory on a Pi (issue 16): `run` loads neither the other commands' modules
    # (simulators, with pymodbus' server) nor an HTTP client or server library unless
    # the config asks for the HTTP API or a webhook; InfluxDB is written without one.
    code = ("import sys; from gateway.cli import _parser; _parser(only_run=True); "
            "import gateway.runtime.app, gateway.upstream.factory; "
            "print([m for m in ('aiohttp', 'influxdb_client', 'simulators', 'prometheus_client', "
            "'pymodbus.server') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
