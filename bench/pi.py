"""Fast and gentle on a Raspberry Pi (issue 16): latency to the upstream, stalls and
missed polls, bytes written to the SD card, memory and startup.

Workloads (synthetic devices: one reading per channel and poll, so a device of 20
channels is the issue's "20 registers"; the durable SQLite outbox as shipped; an
InfluxDB v2 sink and the MQTT telemetry sink on at once, to a real Mosquitto and to
``bench.upstream_probe``, which stamps each reading's arrival):

- ``latency``: 100 devices x 20 at 1 s (2,000 readings/s). Reading (its poll's
  timestamp) -> arrival at the upstream, p50 / p99, per sink.
- ``stalls``: 100 x 20 at 100 ms, and 1,000 x 20 at 1 s (20,000 readings/s each).
  Event-loop lag (a probe task in the gateway's loop asks to wake every 10 ms and
  records how late it woke) p99 / max, and poll slots missed (polls expected from
  the interval over the window minus polls made).
- ``sd``: 50 x 20 at 1 s (1,000 readings/s): bytes the process wrote to storage
  (``/proc/self/io`` write_bytes: WAL, checkpoints, alarm state, all) per reading.
  ``sd_outage``: the same with both upstreams unreachable (every reading owed, so committed);
  the same target (issue 16.3).
- ``memory``: ``python -m gateway run`` in its own process: the charging site
  (configs/charging-site.yaml, a simulated cabinet on Modbus TCP, InfluxDB and MQTT
  telemetry upstreams), and 1,000 devices (4 channels x 6 fields at 1 s) with an
  InfluxDB upstream: VmRSS after startup; startup = process start -> first poll
  (the first reading's timestamp as the upstream sees it).

"Today" in each note is the figure before issue 16, from the issue's own report
(ThingsBoard comparison) or this bench run on the commit before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

from bench.common import (
    ROOT,
    SITE_ID,
    TOKEN_ENV,
    Figure,
    at_most,
    info,
    load_site,
    on_server_cpus,
    percentile,
    rss_kib,
    running,
    wait_until,
)

NAME = "pi"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _write_bytes() -> int:
    with open("/proc/self/io", "rb") as f:
        for line in f:
            if line.startswith(b"write_bytes:"):
                return int(line.split()[1])
    return 0


@contextlib.asynccontextmanager
async def upstreams() -> AsyncIterator[tuple[Any, "Probe"]]:
    """Mosquitto and the upstream probe, on the servers' core."""
    from servers import Mosquitto

    with on_server_cpus():
        broker = Mosquitto()
        broker.start()
    try:
        async with Probe.started(broker.port) as probe:
            yield broker, probe
    finally:
        broker.stop()


class Probe:
    """``bench.upstream_probe`` in a child process."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int):
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    @classmethod
    @contextlib.asynccontextmanager
    async def started(cls, mqtt_port: int) -> AsyncIterator["Probe"]:
        with on_server_cpus():
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.upstream_probe", "--mqtt-port", str(mqtt_port),
                cwd=ROOT, stdout=asyncio.subprocess.PIPE)
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 15)
            if not line.startswith(b"ready"):
                raise RuntimeError(f"upstream probe did not start: {line!r}")
            yield cls(proc, int(line.split()[1]))
        finally:
            proc.terminate()
            await proc.wait()

    async def _call(self, method: str, path: str) -> Any:
        def call():
            req = urllib.request.Request(self.url + path, method=method)
            with _OPENER.open(req, timeout=30) as resp:
                body = resp.read()
            return json.loads(body) if body else None
        return await asyncio.to_thread(call)

    async def stats(self) -> dict[str, Any]:
        return await self._call("GET", "/stats")

    async def reset(self) -> None:
        await self._call("POST", "/reset")


def synthetic_site(devices: int, channels: int, interval: float, *, mqtt_port: int,
                   influx_url: str, fields: list[str] | None = None) -> dict[str, Any]:
    """``devices`` synthetic devices of ``channels`` readings, both upstream sinks, a rule."""
    return {
        "site": {"id": SITE_ID},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "telemetry": {}},
        "influxdb": {"url": influx_url, "org": "o", "bucket": "b", "token": {"env": TOKEN_ENV}},
        "devices": [
            {"id": f"dev-{i:04d}", "type": "synthetic", "kind": "ev_charging",
             "fields": fields or ["power"], "channels": channels, "poll_interval": interval,
             "location": {"building": str(i // 100 + 1), "unit": str(i // 10 % 10 + 1)}}
            for i in range(devices)
        ],
        "rules": [{"id": "over-power", "type": "threshold", "select": {"kinds": ["ev_charging"]},
                   "field": "power", "above": 99, "hysteresis": 5}],
    }


class LoopProbe:
    """Asks to wake every ``interval`` in the gateway's loop; records how late it woke."""

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.lags: list[float] = []

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(self.interval)
            self.lags.append(max(0.0, loop.time() - asked - self.interval))


async def _window(gateway, probe: Probe | None, warmup: float, window: float) -> dict[str, Any]:
    """Run the gateway for ``warmup`` then measure over ``window``."""
    await wait_until(lambda: all(r.health.polls for r in gateway.runners), 60, "first polls")
    await asyncio.sleep(warmup)
    loop_probe = LoopProbe()
    lag_task = asyncio.create_task(loop_probe.run())
    if probe is not None:
        await probe.reset()
    polls0 = sum(r.health.polls for r in gateway.runners)
    missed0 = sum(getattr(r.health, "missed_slots", 0) for r in gateway.runners)
    readings0, bytes0 = gateway.pipeline.readings, _write_bytes()
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(window)
    elapsed = time.monotonic() - t0
    out = {
        "seconds": elapsed,
        "polls": sum(r.health.polls for r in gateway.runners) - polls0,
        "missed": (sum(getattr(r.health, "missed_slots", 0) for r in gateway.runners) - missed0
                   if hasattr(gateway.runners[0].health, "missed_slots") else None),
        "readings": gateway.pipeline.readings - readings0,
        "bytes": _write_bytes() - bytes0,
        "cpu": (time.process_time() - cpu0) / elapsed,
        "lag_p99": percentile(loop_probe.lags, 99),
        "lag_max": max(loop_probe.lags, default=float("nan")),
    }
    lag_task.cancel()
    if probe is not None:
        await asyncio.sleep(1.0)  # the window's last readings arrive
        out["upstream"] = await probe.stats()
    return out


def _times(opts, full: float) -> tuple[float, float]:
    """(warm-up, window): the quick run's are the smoke test's, seconds each."""
    if opts.quick:
        return 0.5, opts.window
    return 3.0, max(opts.window, full)


def _scale(opts, devices: int) -> int:
    """The quick run (a smoke test) polls a tenth of the devices."""
    return max(1, devices // 10) if opts.quick else devices


def _ms(seconds: float | None) -> float:
    return float("nan") if seconds is None else seconds * 1000


async def latency(opts, broker, probe: Probe, tmp: Path) -> list[Figure]:
    site = synthetic_site(100, 20, 1.0, mqtt_port=broker.port, influx_url=probe.url)
    from gateway.runtime.app import Gateway

    gateway = Gateway(load_site(site, tmp))
    async with running(gateway):
        w = await _window(gateway, probe, *_times(opts, 20.0))
    up = w["upstream"]
    figs = []
    load = f"100 devices x 20 at 1 s: {w['readings'] / w['seconds']:,.0f} readings/s, " \
           f"gateway CPU {w['cpu']:.0%}"
    for kind, label, today in (("mqtt", "MQTT telemetry", "754 / 1210 ms"),
                               ("influx", "InfluxDB", "~750 / ~1200 ms (1 s commit + 1 s flush)")):
        s = up[kind]
        p50, p99 = _ms(s["p50"]), _ms(s["p99"])
        figs.append(Figure(NAME, f"reading -> {label} p50 / p99", p99, "ms",
                           "p50 <= 100, p99 <= 250 ms", p50 <= 100 and p99 <= 250,
                           f"{p50:.0f} / {p99:.0f} ms (max {_ms(s['max']):.0f}); {s['count']:,} "
                           f"readings in {s['messages']:,} messages; {load}; today {today}"))
    figs.append(info(NAME, "bytes written per reading at 2,000 readings/s",
                     w["bytes"] / max(1, w["readings"]), "B",
                     f"{w['bytes'] / w['seconds'] * 3600 / 1e6:.1f} MB/h"))
    return figs


async def stalls(opts, broker, probe: Probe, tmp: Path) -> list[Figure]:
    from gateway.runtime.app import Gateway

    figs = []
    for devices, interval, today in ((100, 0.1, "0.7-2.8 % missed, stalls 100-180 ms"),
                                     (1000, 1.0, "")):
        devices = _scale(opts, devices)
        site = synthetic_site(devices, 20, interval, mqtt_port=broker.port, influx_url=probe.url)
        gateway = Gateway(load_site(site, tmp))
        async with running(gateway):
            w = await _window(gateway, probe, *_times(opts, 20.0))
        expected = devices * w["seconds"] / interval
        if w["missed"] is not None:  # the runners count the slots they skip
            missed = w["missed"] / (w["polls"] + w["missed"]) * 100
            expected = w["polls"] + w["missed"]
        else:  # before issue 16: polls made against the slots in the window
            missed = max(0.0, 1 - w["polls"] / expected) * 100
        name = f"{devices} x 20 at {interval * 1000:g} ms"
        lag = _ms(w["lag_p99"])
        up = w["upstream"]
        figs.append(Figure(NAME, f"{name}: loop lag p99 / missed poll slots", lag, "ms",
                           "lag p99 <= 20 ms, 0 missed", lag <= 20 and missed == 0,
                           f"lag p99 {lag:.1f} ms (max {_ms(w['lag_max']):.0f}); missed "
                           f"{missed:.2f} % ({w['polls']:,.0f} of {expected:,.0f}); "
                           f"{w['readings'] / w['seconds']:,.0f} readings/s; gateway CPU "
                           f"{w['cpu']:.0%}; MQTT {up['mqtt']['messages'] / w['seconds']:,.0f} "
                           f"messages/s, p99 {_ms(up['mqtt']['p99']):.0f} ms; InfluxDB p99 "
                           f"{_ms(up['influx']['p99']):.0f} ms" + (f"; today {today}" if today else "")))
    return figs


async def sd_writes(opts, broker, probe: Probe, tmp: Path) -> list[Figure]:
    from gateway.runtime.app import Gateway

    site = synthetic_site(50, 20, 1.0, mqtt_port=broker.port, influx_url=probe.url)
    gateway = Gateway(load_site(site, tmp))
    async with running(gateway):
        w = await _window(gateway, probe, *_times(opts, 60.0))
        stats = gateway.outbox.stats()
    per = w["bytes"] / max(1, w["readings"])
    return [at_most(NAME, "bytes written to disk per reading at 1,000 readings/s", per, 60, "B",
                    f"{w['bytes'] / w['seconds'] * 3600 / 1e6:.1f} MB/h, "
                    f"{w['bytes'] / w['seconds'] * 86400 / 1e9:.2f} GB/day; 50 x 20 at 1 s, "
                    f"{w['seconds']:.0f} s; rows written to the outbox "
                    f"{stats.get('written_rows_total', 'n/a')}, never written (confirmed first) "
                    f"{stats.get('skipped_rows_total', 'n/a')}; today ~600 B (8.6 GB/day)")]


async def sd_writes_outage(opts, broker, probe: Probe, tmp: Path) -> list[Figure]:
    """The same load with both upstreams unreachable: every reading is owed, so committed."""
    from gateway.runtime.app import Gateway
    from servers import free_port

    site = synthetic_site(50, 20, 1.0, mqtt_port=free_port(),
                          influx_url=f"http://127.0.0.1:{free_port()}")
    gateway = Gateway(load_site(site, tmp))
    async with running(gateway):
        w = await _window(gateway, None, *_times(opts, 60.0))
        stats = gateway.outbox.stats()
    per = w["bytes"] / max(1, w["readings"])
    return [at_most(NAME, "bytes written to disk per reading at 1,000 readings/s, upstreams down",
                    per, 60, "B", f"{w['bytes'] / w['seconds'] * 3600 / 1e6:.1f} MB/h while the "
                                  f"outage lasts; rows written to the outbox "
                                  f"{stats.get('written_rows_total', 'n/a')}: each owed reading "
                                  f"is committed, a compressed block per commit (WAL, then "
                                  f"checkpointed); today 540 B (1.9 GB/h)")]


async def _gateway_process(site: dict[str, Any], tmp: Path, probe: Probe,
                           seconds: float, ask: tuple[str, ...] = ()
                           ) -> tuple[float, float | None, float | None]:
    """``python -m gateway run`` on ``site``: (VmRSS MiB after ``seconds``, startup s,
    VmRSS MiB 2 s after its HTTP API answered each path of ``ask``, if any)."""
    folder = Path(tempfile.mkdtemp(dir=tmp))
    site = {**site, "state_dir": str(folder / "state")}
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    await probe.reset()
    started = time.time()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "run", str(path), cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        await asyncio.sleep(seconds)
        rss = rss_kib(proc.pid) / 1024
        first = (await probe.stats())["first_ts"]
        served = None
        if ask:  # what a Prometheus scrape or an open console costs: the server loads
            base = "http://" + site["http"]["listen"]
            for path in ask:
                await asyncio.to_thread(_get, base + path)
            await asyncio.sleep(2.0)
            served = rss_kib(proc.pid) / 1024
    finally:
        proc.terminate()
        await proc.wait()
    return rss, None if first is None else first - started, served


def _get(url: str) -> int:
    """The status of a GET (an error status is an answer too)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            answer.read()
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def memory(opts, broker, probe: Probe, tmp: Path) -> list[Figure]:
    from bench.memory import FIELDS
    from servers import free_port

    seconds = 3.0 if opts.quick else 15.0
    charging = yaml.safe_load((ROOT / "configs" / "charging-site.yaml").read_text())
    charging["mqtt"]["port"] = broker.port
    charging["influxdb"]["url"] = probe.url
    charging["influxdb"]["token"] = {"env": TOKEN_ENV}
    from bench.modbus import sim_host

    figs = []
    async with sim_host("--tcp", "1", "--ports", "4") as (where, _):
        charging["buses"][0]["port"] = where["tcp"][0]
        charging["http"]["listen"] = f"127.0.0.1:{free_port()}"
        rss, startup, served = await _gateway_process(charging, tmp, probe, seconds,
                                                      ask=API_PATHS)
    figs.append(at_most(NAME, "RSS: charging site, InfluxDB + MQTT upstreams", rss, 50, "MiB",
                        f"after {seconds:g} s; today 79 MB (75 at 10 devices)"))
    figs.append(at_most(NAME, "RSS: charging site once its HTTP API answered", served, 50, "MiB",
                        f"2 s after GET {', '.join(API_PATHS)}; 60 MiB on aiohttp "
                        f"+ prometheus_client (1 Dec)"))
    figs.append(at_most(NAME, "startup: process start -> first poll (charging site)",
                        float("nan") if startup is None else startup, 1.0, "s",
                        "the first reading's timestamp at the upstream"))
    big = synthetic_site(_scale(opts, 1000), 4, 1.0, mqtt_port=broker.port, influx_url=probe.url, fields=FIELDS)
    del big["mqtt"]
    rss, startup, _ = await _gateway_process(big, tmp, probe, seconds * 2)  # 1,000 devices start slower
    figs.append(at_most(NAME, f"RSS: {_scale(opts, 1000):,} devices (4 x 6 fields at 1 s), "
                              f"InfluxDB upstream", rss,
                        80, "MiB", f"after {seconds * 2:g} s; startup -> first poll "
                                   f"{startup if startup is not None else float('nan'):.2f} s; "
                                   f"today 103.7 MiB (bench memory, null sink)"))
    return figs


# What a Prometheus scrape and a look at the devices ask of the API.
API_PATHS = ("/healthz", "/metrics", "/api/devices")

PARTS = {"latency": latency, "stalls": stalls, "sd": sd_writes, "sd_outage": sd_writes_outage,
         "memory": memory}


async def run(opts) -> list[Figure]:
    parts = os.environ.get("BENCH_PI_PARTS", ",".join(PARTS)).split(",")
    figs: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bench-pi-") as d:
        async with upstreams() as (broker, probe):
            for part in parts:
                figs += await PARTS[part](opts, broker, probe, Path(d))
    return figs
