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


class RawPublisher:
    """A minimal MQTT 3.1.1 publisher on a socket (CONNECT, PUBLISH QoS 1, PUBACKs read in
    bulk): the load must cost far less than the hub it measures, which paho cannot."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._reader = reader
        self._writer = writer
        self._next_id = 0
        self.sent = 0
        self.acked = 0
        self._acks: asyncio.Task | None = None

    @classmethod
    async def connect(cls, port: int, client_id: str) -> "RawPublisher":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        cid = client_id.encode()
        body = (b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid)
        writer.write(b"\x10" + _length(len(body)) + body)
        connack = await reader.readexactly(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise RuntimeError(f"CONNACK refused: {connack!r}")
        self = cls(reader, writer)
        self._acks = asyncio.create_task(self._read_acks())
        return self

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self._next_id = self._next_id % 65535 + 1
        t = topic.encode()
        body = len(t).to_bytes(2, "big") + t + self._next_id.to_bytes(2, "big") + payload
        self._writer.write(bytes([0x32 | int(retain)]) + _length(len(body)) + body)
        self.sent += 1

    async def drain(self, max_unacked: int) -> None:
        await self._writer.drain()
        while self.sent - self.acked > max_unacked:
            await asyncio.sleep(0.001)

    async def _read_acks(self) -> None:
        while True:
            data = await self._reader.read(65536)
            if not data:
                return
            self.acked += len(data) // 4  # PUBACK: 0x40 0x02 id id

    async def close(self) -> None:
        await self.drain(0)
        self._writer.write(b"\xe0\x00")
        await self._writer.drain()
        assert self._acks is not None
        self._acks.cancel()
        self._writer.close()


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


async def run(args: argparse.Namespace) -> int:
    sites = list(range(args.first, args.first + args.gateways))
    sent = 0
    counts: dict[tuple[int, int], int] = {}
    client = await RawPublisher.connect(args.port, f"bench-load-{args.first}")
    for n in sites:
        base = f"{PREFIX}/{site_id(n)}"
        client.publish(f"{base}/info", info(n, args.health_interval), retain=True)
        client.publish(f"{base}/status", b"online", retain=True)
        client.publish(f"{base}/health", health(n, args.health_interval), retain=True)
    await client.drain(0)
    start = time.monotonic()
    next_health = start + args.health_interval
    batch = max(1, int(args.rate / 50))  # 50 batches a second
    i = 0
    while time.monotonic() - start < args.seconds:
        tick = time.monotonic()
        for _ in range(batch):
            n = sites[i % len(sites)]
            k = (i // len(sites)) % args.alarms
            i += 1
            counts[(n, k)] = count = counts.get((n, k), 0) + 1
            now = time.time()
            state = alarm(n, k, count, now)
            base = f"{PREFIX}/{site_id(n)}"
            # ts to the ms may repeat for the same alarm at high rates: make it unique
            event = {"event": "raised" if count == 1 else "repeated",
                     "ts": iso(now)[:-1] + f"{count % 1000:03d}Z", "alarm": state}
            client.publish(f"{base}/alarms/{state['id']}", json.dumps(state).encode(), retain=True)
            client.publish(f"{base}/alarm_events", json.dumps(event).encode())
        sent += batch
        if time.monotonic() >= next_health:
            next_health += args.health_interval
            for n in sites:
                client.publish(f"{PREFIX}/{site_id(n)}/health", health(n, args.health_interval),
                               retain=True)
        await client.drain(MAX_IN_FLIGHT)
        delay = 1 / 50 - (time.monotonic() - tick)
        if delay > 0:
            await asyncio.sleep(delay)
    seconds = time.monotonic() - start
    await client.close()
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
