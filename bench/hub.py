"""The hub (``community-gateway hub``): alarm events ingested per second from many
gateways, and the latency from a gateway's publish to the hub's live picture.

ingest: simulated gateways (bench/hub_load.py, two processes on the servers' cores)
publish retained info, status and health, then alarm transitions as real gateways
do (retained state + event, QoS 1), offered above the target rate. The hub (this
process, its core) takes each message into its live picture and writes every
transition to its SQLite history; the figure is transitions written per second.
Target (issue 11): >= 5,000/s with 500 gateways.

latency: 200 gateways at a moderate rate; the time from a simulated gateway's
publish (wall clock in the alarm) to the alarm held in the hub's live picture,
which is what /api/alarms serves. Target: p99 <= 1 s. The HTTP round trip on
top is measured apart (GET /api/alarms?site=..., a few hundred open alarms).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (Figure, at_least, at_most, cpu_seconds, info, on_server_cpus,
                          percentile, wait_until)

BENCH = "hub"


def _hub_config(port: int, http_port: int, state: Path):
    from gateway.hub.config import HubConfig

    return HubConfig.model_validate({
        "hub": {"id": "bench"}, "broker": {"host": "127.0.0.1", "port": port},
        "scope": {"subdistrict": "Riverside"}, "state_dir": str(state),
        "http": {"listen": f"127.0.0.1:{http_port}"},
        "alarms": {"silent_after_intervals": 100}})


async def _load(port: int, *, gateways: int, first: int, rate: float, seconds: float,
                alarms: int) -> asyncio.subprocess.Process:
    with on_server_cpus():
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.hub_load", "--port", str(port), "--gateways",
            str(gateways), "--first", str(first), "--rate", str(rate), "--seconds", str(seconds),
            "--alarms", str(alarms), stdout=asyncio.subprocess.PIPE)


async def _phase(port: int, *, gateways: int, rate: float, seconds: float, alarms: int,
                 tmp: Path, name: str) -> dict:
    """Run a hub against ``gateways`` simulated gateways offered ``rate`` transitions/s."""
    import aiohttp

    from gateway.hub.service import Hub
    from servers import free_port

    http_port = free_port()
    hub = Hub(_hub_config(port, http_port, tmp / name))
    latencies: list[float] = []
    handle = hub.on_message

    prefix = len("community/")

    def timed(topic: str, payload: bytes) -> None:
        handle(topic, payload)
        # what the API now serves: the alarm state just taken (no second JSON decode here,
        # so the probe adds next to nothing to the hub's CPU)
        site_id, _, rest = topic[prefix:].partition("/")
        if rest.startswith("alarms/") and payload:
            alarm = hub.live.sites[site_id].alarms.get(rest[7:])
            if alarm is not None:
                latencies.append(time.time() - alarm["details"]["sent"])

    hub.link._on_message = timed  # the bench's probe on the hub's one entry point
    task = asyncio.create_task(hub.run(), name=f"bench-hub-{name}")
    http_ms: list[float] = []
    try:
        await wait_until(hub.link.synced.is_set, 15, "the hub's first sync")
        w0, t0, cpu0 = hub.history.written + hub.history.duplicates, time.perf_counter(), \
            cpu_seconds()
        procs = [await _load(port, gateways=gateways // 2, first=k * (gateways // 2),
                             rate=rate / 2, seconds=seconds, alarms=alarms) for k in range(2)]
        await wait_until(lambda: len(hub.live.in_scope()) >= gateways, 30, "every gateway's info")
        latencies.clear()  # from here the load is steady (the gateways' start is behind)
        finished = asyncio.ensure_future(asyncio.gather(*(p.wait() for p in procs)))
        async with aiohttp.ClientSession() as session:
            while not finished.done():  # the API answering while the load runs
                start = time.perf_counter()
                async with session.get(f"http://127.0.0.1:{http_port}/api/alarms",
                                       params={"site": "gw-0001"}) as response:
                    await response.read()
                http_ms.append((time.perf_counter() - start) * 1000)
                await asyncio.wait([finished], timeout=0.2)
        published = 0
        for p in procs:
            out = await p.stdout.read()
            published += json.loads(out.decode().strip().splitlines()[-1])["published_events"]
        # the load is over: what is still in flight arrives, then the history catches up
        def taken() -> int:
            return hub.history.written + hub.history.duplicates + hub.history.pending - w0

        last, still = taken(), time.perf_counter()
        while taken() < published and time.perf_counter() - still < 2.0:
            await asyncio.sleep(0.05)
            if taken() != last:
                last, still = taken(), time.perf_counter()
        await hub.history.wait_written()
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds() - cpu0
        taken = hub.history.written + hub.history.duplicates - w0
        return {"published": published, "taken": taken, "elapsed": elapsed, "cpu": cpu,
                "latencies": list(latencies), "http_ms": http_ms,
                "open": len(hub.live.open_alarms()), "duplicates": hub.history.duplicates,
                "skipped": hub.live.skipped}
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


@contextlib.contextmanager
def _broker():
    """A fresh Mosquitto per phase (no retained state from the one before)."""
    from servers import Mosquitto

    with on_server_cpus():
        # Mosquitto holds at most 1000 QoS 1 messages queued per client by default, even
        # for a connected one, and drops the rest; and it sends 20 at a time before their
        # PUBACKs. A hub's broker raises both (docs/hub.md, "The broker").
        broker = Mosquitto(extra_config=["max_queued_messages 1000000",
                                         "max_inflight_messages 1000"])
        broker.start()
    try:
        yield broker
    finally:
        broker.close()


async def run(opts) -> list[Figure]:
    figures: list[Figure] = []
    seconds = 3.0 if opts.quick else 20.0
    offered = 1000 if opts.quick else 8000
    with tempfile.TemporaryDirectory(prefix="bench-hub-") as d:
        tmp = Path(d)
        many = 40 if opts.quick else 500
        with _broker() as broker:
            ingest = await _phase(broker.port, gateways=many, rate=offered, seconds=seconds,
                                  alarms=10, tmp=tmp, name="ingest")
        rate = ingest["taken"] / ingest["elapsed"]
        per_event = ingest["cpu"] / max(ingest["taken"], 1)
        figures.append(at_least(
            BENCH, f"alarm transitions ingested, {many} gateways", rate, 5000, "events/s",
            f"{ingest['published']:,} published, {ingest['taken']:,} in the history "
            f"({ingest['duplicates']} duplicates, {ingest['skipped']} skipped) in "
            f"{ingest['elapsed']:.1f} s; hub CPU {ingest['cpu'] / ingest['elapsed']:.0%} of a "
            f"core, {per_event * 1e6:.0f} us a transition (2 MQTT messages), so "
            f"~{1 / per_event:,.0f}/s on a whole core; offered {offered:,}/s; "
            f"{ingest['open']:,} open alarms held"))
        some = 20 if opts.quick else 200
        with _broker() as broker:
            steady = await _phase(broker.port, gateways=some, rate=200 if opts.quick else 1000,
                                  seconds=seconds, alarms=5, tmp=tmp, name="latency")
        lat = steady["latencies"]
        figures.append(at_most(
            BENCH, f"publish to hub live picture p99, {some} gateways",
            percentile(lat, 99) * 1000, 1000, "ms",
            f"p50 {percentile(lat, 50) * 1000:.0f} ms over {len(lat):,} alarm states at "
            f"{steady['published'] / max(seconds, 1e-9):,.0f} transitions/s"))
        figures.append(info(
            BENCH, "GET /api/alarms?site= under load p99", percentile(steady["http_ms"], 99),
            "ms", f"p50 {percentile(steady['http_ms'], 50):.1f} ms, "
                  f"{len(steady['http_ms'])} requests, {steady['open']:,} open alarms"))
    return figures
