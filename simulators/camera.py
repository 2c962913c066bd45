"""A simulated thrown-object camera: analytics events over MQTT, as the gateway's profile expects.

It publishes on ``thrown-objects/events`` (one topic for every camera of the
analytics server; the payload's ``camera`` says which): a heartbeat with
``uptime`` every ``heartbeat_s``, and per throw a ``start`` pulse and, ``pulse_s``
later, a ``stop`` pulse with the same ``event_id``, each carrying building,
facade, the floor estimate as a range, the confidence and the snapshot and clip
references (profile ``thrown-object-camera``; shared/devices.md section 4).

Scenarios: ``normal`` (heartbeats only), ``throw`` (a throw from floor 12,
estimated 11-13, ``incident_after`` seconds in), ``idle`` (drive ``throw()`` from
code). Faults: ``silence`` (publishes nothing) and ``malformed`` (each real
message is followed by a truncated JSON copy and a message with no content).

By hand: ``community-gateway simulate camera --scenario throw --broker 127.0.0.1:1883``.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Callable

from simulators.background import cancel_and_wait
from simulators.mqtt_publisher import MqttPublisher, check_fault, iso_ms

SCENARIOS: dict[str, str] = {
    "normal": "heartbeats only, nothing thrown",
    "throw": "an object thrown from floor 12 (estimate 11-13) at the incident time",
    "idle": "heartbeats only (drive it from code)",
}
TOPIC = "thrown-objects/events"


class CameraSimulator:
    """``async with CameraSimulator(broker=("127.0.0.1", 1883)) as cam: await cam.throw(12)``."""

    def __init__(self, *, broker: tuple[str, int], camera_id: str = "cam-b5-east",
                 building: str = "5", facade: str = "east", topic: str = TOPIC,
                 scenario: str = "idle", incident_after: float = 10.0, floor: int = 12,
                 pulse_s: float = 3.0, heartbeat_s: float = 10.0, fault: str | None = None,
                 media_url: str = "http://nvr.local/media",
                 out: Callable[[str], object] | None = None):
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; scenarios: {sorted(SCENARIOS)}")
        self.camera_id = camera_id
        self.building = building
        self.facade = facade
        self.topic = topic
        self.scenario = scenario
        self.incident_after = incident_after
        self.floor = floor
        self.pulse_s = pulse_s
        self.heartbeat_s = heartbeat_s
        self.media_url = media_url.rstrip("/")
        self.fault: str | None = None
        self.set_fault(fault)
        self._out = out
        self._ids = itertools.count(1)
        self._started = time.monotonic()
        self.publisher = MqttPublisher(host=broker[0], port=broker[1],
                                       client_id=f"sim-camera-{camera_id}")
        self._tasks: list[asyncio.Task] = []
        self.published: list[dict] = []

    def set_fault(self, fault: str | None) -> None:
        """Switch a fault on (``silence``, ``malformed``) or off (None)."""
        self.fault = check_fault(fault)

    async def __aenter__(self) -> "CameraSimulator":
        await self.publisher.__aenter__()
        self._started = time.monotonic()
        self._tasks = [asyncio.create_task(self._heartbeats(), name=f"sim-camera[{self.camera_id}].heartbeat")]
        if self.scenario == "throw":
            self._tasks.append(asyncio.create_task(self._incident(),
                                                   name=f"sim-camera[{self.camera_id}].scenario"))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []
        await self.publisher.__aexit__(*exc_info)

    def _say(self, doc: dict) -> None:
        if self.publisher.publish_doc(self.topic, doc, fault=self.fault,
                                      bare={"camera": self.camera_id}):
            self.published.append(doc)

    async def _heartbeats(self) -> None:
        while True:
            self._say({"camera": self.camera_id, "ts": iso_ms(time.time()), "type": "heartbeat",
                       "uptime": round(time.monotonic() - self._started)})
            await asyncio.sleep(self.heartbeat_s)

    async def _incident(self) -> None:
        await asyncio.sleep(self.incident_after)
        await self.throw(self.floor)

    def throw_start(self, floor: int, *, spread: int = 1, confidence: float = 0.92,
                    event_id: str | None = None) -> dict:
        """Publish the start pulse of a throw from ``floor`` (estimate floor ± spread); returns it."""
        ts = time.time()
        event_id = event_id or f"{self.camera_id}-{int(ts)}-{next(self._ids):04d}"
        doc = {"event_id": event_id, "state": "start", "ts": iso_ms(ts), "camera": self.camera_id,
               "building": self.building, "facade": self.facade,
               "floor_est": [max(1, floor - spread), floor + spread], "confidence": confidence,
               "origin": {"x": 812, "y": 140},
               "snapshot": f"{self.media_url}/{event_id}/snap.jpg",
               "clip": f"{self.media_url}/{event_id}/clip.mp4"}
        self._say(doc)
        if self._out is not None:
            self._out(f"camera {self.camera_id}: THROW building {self.building} {self.facade} facade, "
                      f"floor {doc['floor_est'][0]}-{doc['floor_est'][1]} "
                      f"(confidence {confidence:.2f}), event {event_id}")
        return doc

    def throw_stop(self, start: dict) -> None:
        """Publish the stop pulse of a throw (same event id and evidence)."""
        self._say({**start, "state": "stop", "ts": iso_ms(time.time())})

    async def throw(self, floor: int, *, spread: int = 1, confidence: float = 0.92) -> str:
        """A whole throw: start pulse, ``pulse_s`` later the stop pulse. Returns the event id."""
        start = self.throw_start(floor, spread=spread, confidence=confidence)
        await asyncio.sleep(self.pulse_s)
        self.throw_stop(start)
        return start["event_id"]


async def run_camera(*, broker: str = "127.0.0.1:1883", scenario: str = "throw",
                     camera_id: str = "cam-b5-east", building: str = "5", facade: str = "east",
                     floor: int = 12, incident_after: float = 10.0, pulse_s: float = 3.0,
                     fault: str | None = None, status_every: float = 10.0,
                     out: Callable[[str], object] = functools.partial(print, flush=True)) -> None:
    """Run the camera simulator until cancelled."""
    host, _, port = broker.rpartition(":")
    async with CameraSimulator(broker=(host or "127.0.0.1", int(port)), camera_id=camera_id,
                               building=building, facade=facade, scenario=scenario,
                               incident_after=incident_after, floor=floor, pulse_s=pulse_s,
                               fault=fault, out=out) as cam:
        out(f"camera {camera_id}: building {building}, {facade} facade, scenario {scenario!r}"
            + (f" (floor {floor} after {incident_after:g}s)" if scenario == "throw" else "")
            + (f", fault {fault}" if fault else "") + f"; publishing to {broker} on {cam.topic}")
        while True:
            await asyncio.sleep(status_every)
            out(f"camera {camera_id}: {cam.publisher.sent} messages sent"
                + ("" if cam.publisher.connected.is_set() else " [broker down]"))
