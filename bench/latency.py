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
``value`` attribute, echoed in the alarm, carries the unique number). Every other
kind has its own synthetic devices, one channel each, so an alarm is told by its
(rule, device) and a sample is the first raise of it after the sample began:

- ``count``: ``COUNT_N`` ``denied`` events put back to back; from the last put.
- ``rate``: two readings with a steep rise; from the second put.
- ``forced``: a contact opening with no grant; from the opening's put.
- ``held``, ``absence``, ``confirm`` wait on purpose (``for`` / ``then.for``,
  ``TIMED_FOR`` s): from the moment the condition falls due (the triggering put
  + the duration) to the subscriber, i.e. the gateway's own overhead including
  its timer (``alarms.tick_interval``); their target is 50 ms + the tick.

``RULE_KINDS`` is the hook for more.
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
KIND_DEVICES = 40  # devices (one channel each) per kind below; at most one sample each
TIMED_FOR = 0.5  # held ``for``, absence ``for``, confirm ``then.for``: short, to run quickly
COUNT_N = 3
RATE_ABOVE = 5.0  # units/s
TIMED_KINDS = ("held", "absence", "confirm")
#: kind -> (device prefix, device kind, fields, events) of its synthetic devices
KIND_SETUP = {
    "held": ("held", "bench_door", ["door_open"], None),
    "count": ("cnt", "bench_terminal", ["online"], ["denied", "granted"]),
    "absence": ("abs", "bench_radar", ["presence"], None),
    "rate": ("rate", "bench_cabinet", ["temperature"], None),
    "confirm": ("conf", "bench_radar", ["motion"], ["fall"]),
    "forced": ("frc", "bench_door", ["door_open"], ["granted", "exit_button"]),
}


def kind_devices(kind: str) -> list[str]:
    """The ids of the synthetic devices one rule kind's samples use."""
    return [f"{KIND_SETUP[kind][0]}-{i:03d}" for i in range(KIND_DEVICES)]


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
    ] + [
        {"id": dev, "type": "synthetic", "kind": dkind, "fields": fields, "channels": 1,
         "poll_interval": 86400, "location": {"building": "9", "floor": "1"},
         **({"events": events} if events else {})}
        for kind, (_prefix, dkind, fields, events) in KIND_SETUP.items()
        for dev in kind_devices(kind)
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
            {"id": "lat-held", "type": "held", "select": {"devices": kind_devices("held")},
             "field": "door_open", "equals": 1, "for": TIMED_FOR},
            {"id": "lat-count", "type": "count", "select": {"devices": kind_devices("count")},
             "event": ["denied"], "count": COUNT_N, "window": 60},
            {"id": "lat-absence", "type": "absence", "select": {"devices": kind_devices("absence")},
             "for": TIMED_FOR},
            {"id": "lat-rate", "type": "rate", "select": {"devices": kind_devices("rate")},
             "field": "temperature", "above": RATE_ABOVE},
            {"id": "lat-confirm", "type": "confirm", "select": {"devices": kind_devices("confirm")},
             "first": {"event": "fall"}, "then": {"field": "motion", "equals": 0, "for": TIMED_FOR}},
            {"id": "lat-forced", "type": "forced", "select": {"devices": kind_devices("forced")},
             "field": "door_open", "equals": 1, "within": 5},
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


# The kinds below fill ``sent`` with (rule, device) -> (after, start): the sample is
# the first raise of that alarm arriving after ``after`` (monotonic, just before the
# sample's first put); its latency counts from ``start``.

async def held_alarms(gateway, count: int, sent: dict) -> None:
    """``door_open`` = 1 on distinct doors; from the put + ``for`` (when it falls due)."""
    from gateway.readings import Reading

    put = gateway.pipeline.put
    for device in kind_devices("held")[:count]:
        after = time.monotonic()
        await put([Reading(device, 1, {"door_open": 1.0}, time.time())])
        sent[("lat-held", device)] = (after, after + TIMED_FOR)
        await asyncio.sleep(ALARM_EVERY)


async def count_alarms(gateway, count: int, sent: dict) -> None:
    """``COUNT_N`` ``denied`` events put back to back on distinct terminals; from the last put."""
    from gateway.readings import DeviceEvent

    put = gateway.pipeline.put
    for device in kind_devices("count")[:count]:
        after = time.monotonic()
        for _ in range(COUNT_N - 1):
            await put([DeviceEvent(device, 1, "denied", time.time(), {})])
        start = time.monotonic()
        await put([DeviceEvent(device, 1, "denied", time.time(), {})])
        sent[("lat-count", device)] = (after, start)
        await asyncio.sleep(ALARM_EVERY)


async def absence_alarms(gateway, count: int, sent: dict) -> None:
    """A reading from each of distinct silent devices (clearing the alarm their silence
    since start-up raised), then silence; from the put + ``for``."""
    from gateway.readings import Reading

    devices = kind_devices("absence")[:count]
    # Counting starts at start-up: wait until each device's first silence is raised,
    # so that raise can't be taken for a sample's.
    await wait_until(lambda: all(gateway.alarms.find("lat-absence", d, None) for d in devices),
                     10, "the start-up absence alarms")
    await asyncio.sleep(0.1)  # their MQTT messages arrive before any sample starts
    put = gateway.pipeline.put
    for device in devices:
        after = time.monotonic()
        await put([Reading(device, 1, {"presence": 1.0}, time.time())])
        sent[("lat-absence", device)] = (after, after + TIMED_FOR)
        await asyncio.sleep(ALARM_EVERY)


async def rate_alarms(gateway, count: int, sent: dict) -> None:
    """Two readings with a steep rise on distinct cabinets; from the second put."""
    from gateway.readings import Reading

    put = gateway.pipeline.put
    for device in kind_devices("rate")[:count]:
        after = time.monotonic()
        await put([Reading(device, 1, {"temperature": 20.0}, time.time())])
        await asyncio.sleep(ALARM_EVERY / 2)
        start = time.monotonic()
        await put([Reading(device, 1, {"temperature": 80.0}, time.time())])
        sent[("lat-rate", device)] = (after, start)
        await asyncio.sleep(ALARM_EVERY / 2)


async def confirm_alarms(gateway, count: int, sent: dict) -> None:
    """No motion, then a ``fall`` event on distinct radars; from the fall's put + ``then.for``."""
    from gateway.readings import DeviceEvent, Reading

    put = gateway.pipeline.put
    for device in kind_devices("confirm")[:count]:
        after = time.monotonic()
        await put([Reading(device, 1, {"motion": 0.0}, time.time())])
        start = time.monotonic()
        await put([DeviceEvent(device, 1, "fall", time.time(), {})])
        sent[("lat-confirm", device)] = (after, start + TIMED_FOR)
        await asyncio.sleep(ALARM_EVERY)


async def forced_alarms(gateway, count: int, sent: dict) -> None:
    """A closed contact, then an opening with no grant on distinct doors; from the opening."""
    from gateway.readings import Reading

    put = gateway.pipeline.put
    for device in kind_devices("forced")[:count]:
        after = time.monotonic()
        await put([Reading(device, 1, {"door_open": 0.0}, time.time())])
        await asyncio.sleep(ALARM_EVERY / 2)
        start = time.monotonic()
        await put([Reading(device, 1, {"door_open": 1.0}, time.time())])
        sent[("lat-forced", device)] = (after, start)
        await asyncio.sleep(ALARM_EVERY / 2)


#: Rule kind -> coroutine(gateway, count, sent) provoking ``count`` alarms of that kind.
RULE_KINDS: dict[str, Callable[[Any, int, dict], Awaitable[None]]] = {
    "threshold": threshold_alarms,
    "event": event_alarms,
    "held": held_alarms,
    "count": count_alarms,
    "absence": absence_alarms,
    "rate": rate_alarms,
    "confirm": confirm_alarms,
    "forced": forced_alarms,
}


def latencies(sent: dict, arrivals: dict[float, float],
              by_alarm: dict[tuple[str, str], list[float]]) -> dict[object, float]:
    """Each sample that arrived -> its latency in seconds (value- or alarm-matched)."""
    out: dict[object, float] = {}
    for key, stamp in sent.items():
        if isinstance(stamp, tuple):
            after, start = stamp
            hit = next((t for t in by_alarm.get(key, ()) if t >= after), None)
            if hit is not None:
                out[key] = hit - start
        elif key in arrivals:
            out[key] = arrivals[key] - stamp
    return out


class Probe:
    """The subscriber process and the arrivals it reports (value -> arrival time)."""

    def __init__(self, port: int, topic: str):
        self.port = port
        self.topic = topic
        self.arrivals: dict[float, float] = {}
        self.by_alarm: dict[tuple[str, str], list[float]] = {}  # (rule, device) -> raises
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
                self.by_alarm.setdefault((event["alarm"].get("rule"), event["alarm"].get("device")),
                                         []).append(arrived)
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

    from gateway.runtime.app import Gateway

    count = 40 if opts.quick else 300
    kind_count = 20 if opts.quick else KIND_DEVICES
    figures: list[Figure] = []
    with on_server_cpus():
        broker = Mosquitto()
        broker.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-latency-") as d:
            gateway = Gateway(load_site(site(broker.port), Path(d)))
            assert gateway.mqtt is not None
            internal: dict[float, float] = {}
            internal_by_alarm: dict[tuple[str, str], list[float]] = {}
            tick = gateway.site.config.alarms.tick_interval

            def stamp(t) -> None:
                if t.event in RAISES:
                    now = time.monotonic()
                    internal_by_alarm.setdefault((t.alarm["rule"], t.alarm["device"]), []).append(now)
                    if isinstance(t.alarm.get("value"), float):
                        internal.setdefault(t.alarm["value"], now)

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
                        sent: dict = {}
                        await provoke(gateway, count if kind in ("threshold", "event")
                                      else kind_count, sent)
                        with contextlib.suppress(TimeoutError):
                            await wait_until(lambda: len(latencies(sent, probe.arrivals,
                                                                   probe.by_alarm)) >= len(sent),
                                             5, "the alarms at the subscriber")
                        figures += _figures(kind, sent,
                                            latencies(sent, probe.arrivals, probe.by_alarm),
                                            latencies(sent, internal, internal_by_alarm),
                                            tick if kind in TIMED_KINDS else None)
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


def _figures(kind: str, sent: dict, arrived: dict[object, float],
             inside_gw: dict[object, float], tick: float | None) -> list[Figure]:
    """A kind's rows; ``tick`` (the timer's interval) for kinds that wait on purpose."""
    lat = _ms(list(arrived.values()))
    inside = _ms(list(inside_gw.values()))
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    lost = len(sent) - len(arrived)
    target = TARGET_P99_MS if tick is None else TARGET_P99_MS + tick * 1000
    if tick is None:
        label, part = f"{kind}: put -> MQTT subscriber", "queue + rules inside the gateway"
    else:
        label = f"{kind} ({TIMED_FOR:g} s, from due): due -> MQTT subscriber"
        part = "timer + rules inside the gateway"
    note = f"{len(arrived)} of {len(sent)} alarms arrived" + (f" ({lost} MISSING)" if lost else "")
    if tick is not None:
        note += f"; from the put + {TIMED_FOR:g} s, includes the timer (tick {tick:g} s)"
    return [
        info(NAME, f"{label} p50", p50, "ms", note),
        at_most(NAME, f"{label} p99", p99, target, "ms",
                f"max {max(lat, default=float('nan')):.1f} ms; "
                f"{sum(v > target for v in lat)} over {target:g} ms"),
        info(NAME, f"{label.split(':')[0]}: {'put' if tick is None else 'due'} -> alarm manager p99",
             percentile(inside, 99), "ms", f"p50 {percentile(inside, 50):.2f} ms: {part}"),
    ] + ([Figure(NAME, f"{kind}: alarms lost", lost, "alarms", "= 0", False)] if lost else [])
