"""Alarm latency: from a reading crossing a threshold being handed to the pipeline to
the alarm event arriving at an MQTT subscriber, under background load.

Set-up: a real Mosquitto and a subscriber process (``bench.mqtt_probe``) on the
servers' core; the gateway on its own core with its MQTT link and a null
upstream sink. A paced feeder puts 1,000 readings/s from 100 synthetic 10-port
cabinets (below every limit). Meanwhile every 20 ms one (device, port) of 200
gets a power value over the limit, and 10 ms later one back under it minus the
hysteresis, so each raise is a new transition (``raised`` the first time,
``repeated`` after). Every raise carries a unique value, which the alarm JSON
echoes; the send time (``time.monotonic()`` just before ``pipeline.put``) and
the subscriber's arrival stamp (the same system-wide clock) give the latency.

Also reported: the part inside the gateway, from ``put`` to the alarm
manager's transition (an extra listener stamps it).

Rule kinds: ``threshold`` (above) and ``event`` (a ``forced_open`` DeviceEvent
put on one of 320 door channels, each raising a new momentary alarm; the event's
``value`` attribute, echoed in the alarm, carries the unique number). Kinds whose
alarm waits on purpose (held, absence, confirm, count windows) measure their
timers, not the gateway, and are left out. ``RULE_KINDS`` is the hook for more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    SITE_ID,
    Figure,
    at_most,
    ev_cabinet_fields,
    info,
    load_site,
    null_series,
    on_server_cpus,
    percentile,
    running,
    wait_until,
)
from bench.throughput import value_pool

NAME = "latency"
TARGET_P99_MS = 50.0
BACKGROUND_PER_S = 1000
BACKGROUND_DEVICES = 100
BG_CHANNELS = 10
ALARM_DEVICES = 50
ALARM_CHANNELS = 4  # 200 (device, port) keys
ALARM_EVERY = 0.020  # seconds between raises
DOOR_DEVICES = 80
DOOR_CHANNELS = 4  # 320 doors: a momentary alarm stays open until acked, so one per raise
POWER_LIMIT = 1000.0
RAISES = ("raised", "repeated")


def site(mqtt_port: int) -> dict[str, Any]:
    """Background cabinets and alarm cabinets (synthetic, fed by the benchmark), one rule."""
    devices = [
        {"id": f"bg-{i:03d}", "type": "synthetic", "kind": "ev_charging",
         "fields": ev_cabinet_fields(), "channels": BG_CHANNELS, "poll_interval": 86400,
         "location": {"building": str(i // 10 + 1), "floor": "B1"}}
        for i in range(BACKGROUND_DEVICES)
    ] + [
        {"id": f"al-{i:03d}", "type": "synthetic", "kind": "ev_charging",
         "fields": ev_cabinet_fields(), "channels": ALARM_CHANNELS, "poll_interval": 86400,
         "location": {"building": str(i // 10 + 1), "floor": "B2"}}
        for i in range(ALARM_DEVICES)
    ] + [
        {"id": f"door-{i:03d}", "type": "synthetic", "kind": "door_access",
         "fields": ["door_open"], "events": ["forced_open", "granted"], "channels": DOOR_CHANNELS,
         "poll_interval": 86400, "location": {"building": str(i // 10 + 1), "floor": "1"}}
        for i in range(DOOR_DEVICES)
    ]
    return {
        "site": {"id": SITE_ID},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port},
        "local_series": null_series(),
        "devices": devices,
        "rules": [
            {"id": "over-power", "type": "threshold", "select": {"kinds": ["ev_charging"]},
             "field": "power", "above": POWER_LIMIT, "hysteresis": 100, "severity": 2},
            {"id": "over-temperature", "type": "threshold", "select": {"kinds": ["ev_charging"]},
             "field": "temperature", "above": 70, "hysteresis": 5},
            {"id": "door-forced", "type": "event", "select": {"kinds": ["door_access"]},
             "event": ["forced_open"], "severity": 1},
        ],
    }


async def background(pipeline, per_second: int) -> None:
    """Put ``per_second`` readings a second, 10 at a time, evenly paced, until cancelled."""
    from gateway.readings import Reading

    pool = value_pool(max_power=POWER_LIMIT - 200)
    devices = [f"bg-{i:03d}" for i in range(BACKGROUND_DEVICES)]
    loop = asyncio.get_running_loop()
    period = BG_CHANNELS / per_second
    start = loop.time()
    n = 0
    while True:
        device = devices[n % len(devices)]
        ts = time.time()
        await pipeline.put([Reading(device, ch, pool[(n + ch) % len(pool)], ts)
                            for ch in range(1, BG_CHANNELS + 1)])
        n += 1
        delay = start + n * period - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


async def threshold_alarms(gateway, count: int, sent: dict[float, float]) -> None:
    """Raise and clear over-power on many ports; ``sent`` maps each raise's value to its put time."""
    from gateway.readings import Reading

    keys = [(f"al-{d:03d}", ch) for d in range(ALARM_DEVICES) for ch in range(1, ALARM_CHANNELS + 1)]
    put = gateway.pipeline.put
    for i in range(count):
        device, channel = keys[i % len(keys)]
        value = POWER_LIMIT + 100.0 + i  # unique: the alarm JSON echoes it
        reading = Reading(device, channel, {"power": value, "temperature": 30.0}, time.time())
        sent[value] = time.monotonic()
        await put([reading])
        await asyncio.sleep(ALARM_EVERY / 2)
        await put([Reading(device, channel, {"power": 50.0, "temperature": 30.0}, time.time())])
        await asyncio.sleep(ALARM_EVERY / 2)


async def event_alarms(gateway, count: int, sent: dict[float, float]) -> None:
    """``forced_open`` events on distinct doors; ``sent`` maps each event's value to its put time."""
    from gateway.readings import DeviceEvent

    keys = [(f"door-{d:03d}", ch) for d in range(DOOR_DEVICES) for ch in range(1, DOOR_CHANNELS + 1)]
    put = gateway.pipeline.put
    for i in range(min(count, len(keys))):
        device, channel = keys[i]
        value = 5000.0 + i  # unique: the event rule echoes the ``value`` attribute
        event = DeviceEvent(device, channel, "forced_open", time.time(), {"value": value})
        sent[value] = time.monotonic()
        await put([event])
        await asyncio.sleep(ALARM_EVERY)


#: Rule kind -> coroutine(gateway, count, sent) provoking ``count`` alarms of that kind.
RULE_KINDS: dict[str, Callable[[Any, int, dict[float, float]], Awaitable[None]]] = {
    "threshold": threshold_alarms,
    "event": event_alarms,
}


class Probe:
    """The subscriber process and the arrivals it reports (value -> arrival time)."""

    def __init__(self, port: int, topic: str):
        self.port = port
        self.topic = topic
        self.arrivals: dict[float, float] = {}
        self.messages = 0
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task | None = None

    async def __aenter__(self) -> "Probe":
        with on_server_cpus():
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.mqtt_probe", "--port", str(self.port),
                "--topic", self.topic, cwd=ROOT, stdout=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None
        async with asyncio.timeout(10):
            line = await self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"MQTT probe did not start: {line!r}")
        self._reader = asyncio.create_task(self._read(), name="bench-probe-reader")
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            arrived, _topic, payload = json.loads(line)
            self.messages += 1
            event = json.loads(payload)
            if event.get("event") in RAISES:
                value = event["alarm"].get("value")
                if isinstance(value, (int, float)):
                    self.arrivals.setdefault(float(value), arrived)

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


def _ms(values: list[float]) -> list[float]:
    return [v * 1000 for v in values]


async def run(opts) -> list[Figure]:
    """p50 / p99 alarm latency per rule kind, under 1,000 readings/s."""
    from servers import Mosquitto

    from gateway.app import Gateway

    count = 40 if opts.quick else 300
    figures: list[Figure] = []
    with on_server_cpus():
        broker = Mosquitto()
        broker.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-latency-") as d:
            gateway = Gateway(load_site(site(broker.port), Path(d)))
            assert gateway.mqtt is not None
            internal: dict[float, float] = {}

            def stamp(t) -> None:
                if t.event in RAISES and isinstance(t.alarm.get("value"), float):
                    internal.setdefault(t.alarm["value"], time.monotonic())

            gateway.alarms.add_listener(stamp)
            async with Probe(broker.port, f"community/{SITE_ID}/alarm_events") as probe, \
                    running(gateway):
                await wait_until(lambda: gateway.mqtt.connected, 10, "the gateway's MQTT link")
                await wait_until(lambda: all(r.health.polls for r in gateway.runners), 10,
                                 "the first polls")
                bg = asyncio.create_task(background(gateway.pipeline, BACKGROUND_PER_S),
                                         name="bench-background")
                try:
                    await asyncio.sleep(0.5 if opts.quick else 2.0)  # background settles
                    processed0, t0 = gateway.pipeline.readings, time.monotonic()
                    for kind, provoke in RULE_KINDS.items():
                        sent: dict[float, float] = {}
                        await provoke(gateway, count, sent)
                        with contextlib.suppress(TimeoutError):
                            await wait_until(lambda: len(probe.arrivals.keys() & sent.keys())
                                             >= len(sent), 5, "the alarms at the subscriber")
                        figures += _figures(kind, sent, probe.arrivals, internal)
                    load = (gateway.pipeline.readings - processed0) / (time.monotonic() - t0)
                finally:
                    bg.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await bg
        figures.append(info(NAME, "background load during the run", load, "readings/s",
                            f"target {BACKGROUND_PER_S:,}/s from {BACKGROUND_DEVICES} cabinets, "
                            "plus the alarm readings"))
    finally:
        broker.close()
    return figures


def _figures(kind: str, sent: dict[float, float], arrivals: dict[float, float],
             internal: dict[float, float]) -> list[Figure]:
    got = [v for v in sent if v in arrivals]
    lat = _ms([arrivals[v] - sent[v] for v in got])
    inside = _ms([internal[v] - sent[v] for v in sent if v in internal])
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    lost = len(sent) - len(got)
    note = f"{len(got)} of {len(sent)} alarms arrived" + (f" ({lost} MISSING)" if lost else "")
    return [
        info(NAME, f"{kind}: put -> MQTT subscriber p50", p50, "ms", note),
        at_most(NAME, f"{kind}: put -> MQTT subscriber p99", p99, TARGET_P99_MS, "ms",
                f"max {max(lat, default=float('nan')):.1f} ms; "
                f"{sum(v > TARGET_P99_MS for v in lat)} over {TARGET_P99_MS:g} ms"),
        info(NAME, f"{kind}: put -> alarm manager p99", percentile(inside, 99), "ms",
             f"p50 {percentile(inside, 50):.2f} ms: queue + rules inside the gateway"),
    ] + ([Figure(NAME, f"{kind}: alarms lost", lost, "alarms", "= 0", False)] if lost else [])
