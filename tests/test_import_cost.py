"""Memory on a Pi (issue 16): a running gateway holds only the modules its site uses.

The charging site (configs/charging-site.yaml: a Modbus cabinet, InfluxDB and MQTT
telemetry upstreams, the local HTTP API) runs in a fresh interpreter; once it listens
and has polled, none of the modules below may be loaded. Each is megabytes of a Pi's
memory: the HTTP API's server (microdot, the metrics, the console) loads at the API's
first connection, other device types' drivers only for sites that have such devices,
pydantic's URL/email types not at all. aiohttp (~16 MiB with its server half) and
prometheus_client (~12 MiB; /metrics writes its text itself) are never loaded, not even
once the API has answered /healthz, /metrics, /api/devices and the console's login page
(issue 16).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from console_support import write_users

ROOT = Path(__file__).resolve().parents[1]

NOT_AT_START = ("aiohttp", "prometheus_client", "gateway.operations.http_api",
                "gateway.operations.metrics", "gateway.console.routes", "drivers.mqtt",
                "drivers.serial_frames", "drivers.sia_dc09", "drivers.synthetic",
                "pydantic.networks", "simulators", "influxdb_client", "pymodbus.server")

# Never, not even after the requests below.
NEVER = ("aiohttp", "aiohttp.web", "multidict", "yarl", "prometheus_client")
PATHS = ("/healthz", "/metrics", "/api/devices", "/console/login")

# Runs the site as `run` does, reports the modules loaded once the API listens and the
# cabinet was polled (a failed poll counts: no cabinet runs here), then asks each of
# PATHS and reports again: the first connection loads the API's server and is answered.
SCRIPT = """
import asyncio, json, sys, urllib.request
from gateway.runtime.app import Gateway
from gateway.runtime.site import load_site

WATCH = {watch!r}

def loaded():
    return sorted(m for m in WATCH if m in sys.modules)

async def main():
    gateway = Gateway(load_site({path!r}))
    task = asyncio.create_task(gateway.run())
    async with asyncio.timeout(60):
        while not (gateway.http.listening and (gateway.runners[0].health.polls
                                               or gateway.runners[0].health.errors)):
            await asyncio.sleep(0.05)
    before = loaded()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
    def ask(path):
        try:
            return opener.open("http://{listen}" + path, timeout=30).status
        except urllib.error.HTTPError as exc:  # 503: the cabinet is offline
            return exc.code
    status = {{path: await asyncio.to_thread(ask, path) for path in {paths!r}}}
    print(json.dumps({{"before": before, "status": status, "after": loaded()}}))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

asyncio.run(main())
"""


def test_charging_site_loads_only_what_it_uses(tmp_path, free_port) -> None:
    raw = yaml.safe_load((ROOT / "configs" / "charging-site.yaml").read_text())
    listen = f"127.0.0.1:{free_port()}"
    raw["http"]["listen"] = listen
    raw["mqtt"]["port"] = free_port()  # nothing listens there: retried, as on a Pi
    raw["influxdb"]["url"] = f"http://127.0.0.1:{free_port()}"
    raw["buses"][0]["port"] = free_port()
    raw["state_dir"] = str(tmp_path / "state")
    raw["console"] = {"users_file": str(write_users(tmp_path / "users.yaml"))}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw))
    code = SCRIPT.format(watch=NOT_AT_START + NEVER, path=str(path), listen=listen,
                         paths=PATHS)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["before"] == [], report
    # The API still answers its first request, with its server loaded for it.
    assert report["status"]["/healthz"] in (200, 503), report  # 503: no cabinet here
    assert [report["status"][p] for p in PATHS[1:]] == [200, 200, 200], report
    assert {"gateway.operations.http_api", "gateway.console.routes"} <= set(report["after"]), report
    assert not set(NEVER) & set(report["after"]), report
    # /metrics was answered without prometheus_client (~12 MiB): the gateway writes it
    assert "gateway.operations.metrics" in report["after"], report
