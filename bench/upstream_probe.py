"""An upstream stand-in in its own process: stamps when each reading arrives.

- HTTP: ``POST /api/v2/write`` (the InfluxDB v2 write API the gateway's InfluxDB
  sink speaks) answers 204; each line's timestamp (the reading's, ns) against the
  arrival time gives that reading's latency.
- MQTT (``--mqtt-port``): subscribes to ``community/+/telemetry/#`` at QoS 1; each
  message is a JSON array of reading objects whose ``ts`` (ms) gives the latency.
- ``GET /stats`` answers the latencies so far (count, p50, p99, max per upstream)
  and the earliest reading timestamp seen; ``POST /reset`` starts a new window.

Arrival times are ``time.time()``, the clock the gateway stamps readings with
(the same machine). Prints ``ready PORT`` once listening (and subscribed).

    python -m bench.upstream_probe --mqtt-port 1883
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import datetime

from aiohttp import web


class Samples:
    def __init__(self) -> None:
        self.lat: dict[str, list[float]] = {"influx": [], "mqtt": []}
        self.rows = {"influx": 0, "mqtt": 0}
        self.messages = {"influx": 0, "mqtt": 0}
        self.first_ts: float | None = None

    def add(self, kind: str, now: float, stamps: list[float]) -> None:
        self.messages[kind] += 1
        self.rows[kind] += len(stamps)
        self.lat[kind].extend(now - ts for ts in stamps)
        if stamps:
            low = min(stamps)
            if self.first_ts is None or low < self.first_ts:
                self.first_ts = low

    def stats(self) -> dict:
        out: dict = {"first_ts": self.first_ts}
        for kind, values in self.lat.items():
            data = sorted(values)
            n = len(data)
            out[kind] = {"rows": self.rows[kind], "messages": self.messages[kind], "count": n,
                         "p50": data[n // 2] if n else None,
                         "p99": data[min(n - 1, int(n * 0.99))] if n else None,
                         "max": data[-1] if n else None}
        return out


async def main(args: argparse.Namespace) -> None:
    samples = Samples()

    async def write(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        stamps = []
        for line in body.split(b"\n"):
            if line:
                stamps.append(int(line.rsplit(b" ", 1)[1]) / 1e9)
        samples.add("influx", now, stamps)
        return web.Response(status=204)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(samples.stats())

    async def reset(request: web.Request) -> web.Response:
        samples.__init__()
        return web.Response(status=204)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/api/v2/write", write)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
    tasks = []
    if args.mqtt_port:
        subscribed = asyncio.Event()
        tasks.append(asyncio.create_task(_mqtt(args.mqtt_port, samples, subscribed)))
        await subscribed.wait()
    sys.stdout.write(f"ready {port}\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


async def _mqtt(port: int, samples: Samples, subscribed: asyncio.Event) -> None:
    import aiomqtt

    parse = datetime.fromisoformat
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"bench-up-{time.monotonic_ns()}",
                              max_queued_incoming_messages=0) as client:
        await client.subscribe("community/+/telemetry/#", qos=1)
        subscribed.set()
        async for message in client.messages:
            now = time.time()
            docs = json.loads(message.payload)
            if isinstance(docs, dict):  # one object per message (the gateway before issue 16)
                docs = [docs]
            samples.add("mqtt", now, [parse(d["ts"]).timestamp() for d in docs])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--mqtt-port", type=int, default=0)
    try:
        asyncio.run(main(ap.parse_args()))
    except KeyboardInterrupt:
        pass
