"""MQTT traffic of many simulated gateways, for the hub benchmark (a process of its own).

    python -m bench.hub_load --port 1883 --gateways 500 --first 0 --rate 3000 --seconds 10

Each simulated gateway publishes what a real one does (gateway.runtime.site_status,
gateway.runtime.mqtt_link): retained ``info``, ``status`` and ``health`` (every
``--health-interval`` s), and per alarm transition the retained ``alarms/<id>``
state then the ``alarm_events`` message, both QoS 1. Each gateway cycles through
``--alarms`` open alarms (``repeated`` transitions), so the hub holds
gateways x alarms open alarms. Each alarm carries ``details.sent`` (wall clock at
publish) so the hub side can measure publish-to-live latency.

Prints one JSON line at the end: {"published_events": N, "seconds": S}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import datetime, timezone

import aiomqtt

PREFIX = "community"
MAX_IN_FLIGHT = 4000


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def site_id(n: int) -> str:
    return f"gw-{n:04d}"


def place(n: int) -> dict:
    return {"subdistrict": "Riverside", "community": f"community-{n % 10}",
            "compound": f"compound-{n % 50}", "buildings": [str(n)]}


def info(n: int, interval: float) -> bytes:
    return json.dumps({"site": site_id(n), "name": site_id(n), "hierarchy": place(n),
                       "version": "bench", "health_interval": interval,
                       "devices": [{"id": f"dev-{k}", "kind": "door", "type": "mqtt",
                                    "location": {"building": str(n)}} for k in range(20)],
                       "ts": iso(time.time())}).encode()


def health(n: int, interval: float) -> bytes:
    return json.dumps({"site": site_id(n), "ts": iso(time.time()), "interval": interval,
                       "devices": {"total": 20, "online": 20, "offline": 0},
                       "alarms": {"open": 0, "unacked_urgent": 0}}).encode()


def alarm(n: int, k: int, count: int, now: float) -> dict:
    return {"id": f"{site_id(n)}-a{k}", "rule": "door-forced", "severity": 1 + k % 4,
            "state": "active", "acked": False, "device": f"dev-{k}", "kind": "door",
            "location": {"building": str(n), "floor": str(k)}, "message": "door forced",
            "value": None, "first_ts": iso(now), "last_ts": iso(now), "count": count,
            "latched": False, "condition": False, "shelved_until": None, "escalated": 0,
            "details": {"sent": now}}


async def run(args: argparse.Namespace) -> int:
    sites = list(range(args.first, args.first + args.gateways))
    sent = 0
    counts: dict[tuple[int, int], int] = {}
    async with aiomqtt.Client("127.0.0.1", args.port, identifier=f"bench-load-{args.first}",
                              max_inflight_messages=MAX_IN_FLIGHT) as client:
        for n in sites:
            base = f"{PREFIX}/{site_id(n)}"
            await client.publish(f"{base}/info", info(n, args.health_interval), qos=1, retain=True)
            await client.publish(f"{base}/status", b"online", qos=1, retain=True)
            await client.publish(f"{base}/health", health(n, args.health_interval), qos=1,
                                 retain=True)
        start = time.monotonic()
        next_health = start + args.health_interval
        batch = max(1, int(args.rate / 50))  # 50 batches a second
        i = 0
        inflight: set[asyncio.Future] = set()
        while time.monotonic() - start < args.seconds:
            tick = time.monotonic()
            pending = []
            for _ in range(batch):
                n = sites[i % len(sites)]
                k = (i // len(sites)) % args.alarms
                i += 1
                counts[(n, k)] = count = counts.get((n, k), 0) + 1
                now = time.time()
                state = alarm(n, k, count, now)
                base = f"{PREFIX}/{site_id(n)}"
                event = {"event": "raised" if count == 1 else "repeated", "ts": iso(now),
                         "alarm": state}
                # ts to the ms may repeat for the same alarm at high rates: make it unique
                event["ts"] = iso(now)[:-1] + f"{count % 1000:03d}Z"
                pending.append(client.publish(f"{base}/alarms/{state['id']}",
                                              json.dumps(state).encode(), qos=1, retain=True))
                pending.append(client.publish(f"{base}/alarm_events", json.dumps(event).encode(),
                                              qos=1))
            # PUBACKs are awaited in the background: only the number in flight is bounded
            inflight.update(asyncio.ensure_future(c) for c in pending)
            if len(inflight) > MAX_IN_FLIGHT:
                done, _ = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                inflight.difference_update(done)
            inflight = {t for t in inflight if not t.done()}
            sent += batch
            if time.monotonic() >= next_health:
                next_health += args.health_interval
                await asyncio.gather(*(client.publish(f"{PREFIX}/{site_id(n)}/health",
                                                      health(n, args.health_interval), qos=1,
                                                      retain=True) for n in sites))
            delay = 1 / 50 - (time.monotonic() - tick)
            if delay > 0:
                await asyncio.sleep(delay)
        if inflight:
            await asyncio.wait(inflight)
        seconds = time.monotonic() - start
    print(json.dumps({"published_events": sent, "seconds": seconds}), flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--gateways", type=int, default=500)
    ap.add_argument("--first", type=int, default=0, help="number of the first simulated gateway")
    ap.add_argument("--rate", type=float, default=1000, help="alarm transitions per second")
    ap.add_argument("--alarms", type=int, default=10, help="open alarms per gateway")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--health-interval", type=float, default=5)
    return asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
