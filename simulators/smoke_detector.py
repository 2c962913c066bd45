"""Stand-alone smoke detectors reporting through their vendor platform over MQTT.

Each detector publishes on ``fire-detectors/<id>/report`` (profile
``smoke-detector``): a heartbeat with battery, temperature and smoke density every
``heartbeat_s``, and event reports as its scenario says. Scenarios
(``incident_after`` seconds in): ``normal``; ``smoke`` (an alarm report, density
rising); ``fault`` (a detector fault, back to normal 20 s later); ``low-battery``;
``idle`` (drive ``report()`` from code). Faults: ``silence``, ``malformed``.

By hand: ``community-gateway simulate smoke-detector --scenario smoke --broker 127.0.0.1:1883``.
"""

from __future__ import annotations

import asyncio
import time

from simulators.background import cancel_and_wait
from simulators.mqtt_publisher import MqttPublisher, check_fault, iso_ms

SCENARIOS: dict[str, str] = {
    "normal": "heartbeats only",
    "smoke": "smoke at the incident time: an alarm report",
    "fault": "a detector fault, then back to normal 20 s later",
    "low-battery": "the battery runs low",
    "idle": "heartbeats only (drive report() from code)",
}


class SmokeDetectorSimulator:
    """``async with SmokeDetectorSimulator(broker=(host, port), detector_id="sd-1") as d``."""

    def __init__(self, *, broker: tuple[str, int], detector_id: str = "sd-0001",
                 scenario: str = "idle", incident_after: float = 10.0, heartbeat_s: float = 30.0,
                 fault: str | None = None):
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; scenarios: {sorted(SCENARIOS)}")
        self.detector_id = detector_id
        self.scenario = scenario
        self.incident_after = incident_after
        self.heartbeat_s = heartbeat_s
        self.fault = check_fault(fault)
        self.battery = 87.0
        self.density = 0.02
        self.publisher = MqttPublisher(host=broker[0], port=broker[1],
                                       client_id=f"sim-smoke-{detector_id}")
        self._tasks: list[asyncio.Task] = []

    @property
    def topic(self) -> str:
        return f"fire-detectors/{self.detector_id}/report"

    async def __aenter__(self) -> "SmokeDetectorSimulator":
        await self.publisher.__aenter__()
        self._tasks = [asyncio.create_task(self._heartbeats(),
                                           name=f"sim-smoke[{self.detector_id}].heartbeat")]
        if self.scenario not in ("normal", "idle"):
            self._tasks.append(asyncio.create_task(
                self._incident(), name=f"sim-smoke[{self.detector_id}].scenario"))
        return self

    async def __aexit__(self, *exc) -> None:
        await cancel_and_wait(self._tasks)
        await self.publisher.__aexit__(*exc)

    def report(self, event: str) -> None:
        """Publish one report (``heartbeat``, ``alarm``, ``fault``, ``normal`` ...)."""
        doc = {"ts": iso_ms(time.time()), "event": event, "battery": self.battery,
               "temperature": 24.5, "smoke_density": round(self.density, 3)}
        self.publisher.publish_doc(self.topic, doc, fault=self.fault, bare={"event": event})

    async def _heartbeats(self) -> None:
        while True:
            self.report("heartbeat")
            await asyncio.sleep(self.heartbeat_s)

    async def _incident(self) -> None:
        await asyncio.sleep(self.incident_after)
        if self.scenario == "smoke":
            self.density = 0.31
            self.report("alarm")
        elif self.scenario == "fault":
            self.report("fault")
            await asyncio.sleep(20)
            self.report("normal")
        elif self.scenario == "low-battery":
            self.battery = 9.0
            self.report("low_battery")


async def run_smoke_detector(*, broker: str, detector_id: str, scenario: str,
                             incident_after: float, fault: str | None) -> None:
    """``simulate smoke-detector``: run until cancelled."""
    host, _, port = broker.rpartition(":")
    async with SmokeDetectorSimulator(broker=(host or "127.0.0.1", int(port)),
                                      detector_id=detector_id, scenario=scenario,
                                      incident_after=incident_after, fault=fault) as sim:
        print(f"smoke detector {detector_id} publishing on {sim.topic} (scenario {scenario})",
              flush=True)
        await asyncio.Event().wait()
