"""The rest of the sensing facilities in ``community-gateway demo``.

- an I/O module on Modbus TCP (``configs/perimeter-site.yaml``): the north fence, armed
  for the demo, is crossed at night; later a resident presses the one-key button;
- an alarm panel reporting over SIA DC-09 (``configs/alarm-host-site.yaml``): a
  resident's one-key emergency;
- a breathing radar MR60BHA2 on a pty (``configs/health-radar-site.yaml``): the
  resident stops breathing;
- a stand-alone smoke detector on the demo's broker (``configs/fire-safety-site.yaml``)
  in the cabinet's room: the smoke cuts the cabinet.

Devices and rules come from the example files (what an installer writes); only
addresses change, and the delays that would make a demo wait minutes are shortened.
Use::

    async with demo_facilities(broker=(host, port)) as facilities:
        facilities.add_to_site(raw)   # before the site config is written
        ...
        print(facilities.fence_line(gateway.pipeline.latest))
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib import resources

import yaml

from gateway.demo.embedded_broker import free_port
from simulators.alarm_panel import AlarmPanelSimulator
from simulators.background import cancel_and_wait
from simulators.health_radar import HealthRadarSimulator
from simulators.io_module import IoModuleModel
from simulators.modbus_server import CabinetServer
from simulators.ptypair import PtyPair
from simulators.smoke_detector import SmokeDetectorSimulator

FENCE = "perimeter-north"
PANEL = "panel-b7"
HEALTH = "health-9-1204"
SMOKE = "smoke-b3-charging"
SMOKE_SOURCE = "sd-b3-0001"
# When each incident comes (seconds after the start), between the cabinet's (10 s), the
# fall radar's (15 s), the doors' (25 s) and the camera's (30 s).
FENCE_AFTER = 18.0
PANEL_AFTER = 21.0
ONE_KEY_AFTER = 28.0
NO_BREATHING_AFTER = 28.0  # raised NO_BREATHING_FOR later
NO_BREATHING_FOR = 5.0  # 20 s in the example; shorter for the demo
SMOKE_AFTER = 36.0
FENCE_RULES = ("fence-intrusion", "tamper", "one-key-alarm")


def _example(name: str) -> dict:
    return yaml.safe_load((resources.files("configs") / name).read_text(encoding="utf-8"))


@dataclass
class DemoFacilities:
    """The running simulators of the new kinds."""

    io: IoModuleModel
    io_port: int
    panel: AlarmPanelSimulator
    panel_port: int
    health: HealthRadarSimulator
    health_pty: str
    smoke: SmokeDetectorSimulator

    def add_to_site(self, raw: dict) -> None:
        """Add the four kinds' devices and rules from the example files."""
        devices = raw.setdefault("devices", [])
        rules = raw.setdefault("rules", [])
        taken = {r["id"] for r in rules}

        def add_rules(new: list[dict], prefix: str) -> None:
            for rule in new:  # the examples reuse ids (tamper, one-key-alarm): keep each
                rule = dict(rule)
                if rule["id"] in taken:
                    rule["id"] = f"{prefix}-{rule['id']}"
                taken.add(rule["id"])
                rules.append(rule)

        perimeter = _example("perimeter-site.yaml")
        raw.setdefault("buses", []).append({"id": "perimeter-line", "type": "modbus_tcp",
                                            "host": "127.0.0.1", "port": self.io_port,
                                            "timeout": 0.5})
        # armed around the clock for the demo (the example arms it 22:00-06:00)
        raw.setdefault("arming", []).extend(
            {**g, "schedule": "always"} if g["id"] == "perimeter-night" else g
            for g in perimeter["arming"])
        devices.append(next(d for d in perimeter["devices"] if d["id"] == FENCE))
        add_rules([r for r in perimeter["rules"] if r["id"] in FENCE_RULES], "fence")

        panel = _example("alarm-host-site.yaml")
        devices.append({**next(d for d in panel["devices"] if d["id"] == PANEL),
                        "listen": f"127.0.0.1:{self.panel_port}"})
        add_rules(panel["rules"], "panel")

        health = _example("health-radar-site.yaml")
        devices.append({**next(d for d in health["devices"] if d["id"] == HEALTH),
                        "port": self.health_pty})
        add_rules([{**r, "for": NO_BREATHING_FOR,
                    "message": r["message"].replace("20 s", f"{NO_BREATHING_FOR:g} s")}
                   for r in health["rules"] if r["id"] == "no-breathing"], "health")

        fire = _example("fire-safety-site.yaml")
        devices.append(next(d for d in fire["devices"] if d["id"] == SMOKE))
        add_rules(fire["rules"], "fire")

    def describe(self) -> list[str]:
        """What runs where and what will happen, a line per kind, for the demo's banner."""
        return [
            f"I/O module ({FENCE}) on Modbus TCP 127.0.0.1:{self.io_port}: the north fence, "
            f"armed for the demo, is crossed after {FENCE_AFTER:g} s; the one-key button in "
            f"602 is pressed after {ONE_KEY_AFTER:g} s",
            f"alarm panel {self.panel.account} ({PANEL}) reports over SIA DC-09 to "
            f"127.0.0.1:{self.panel_port}: a one-key emergency after {PANEL_AFTER:g} s",
            f"breathing radar MR60BHA2 ({HEALTH}) on pty {self.health_pty}: no breathing "
            f"after {NO_BREATHING_AFTER:g} s (the alarm {NO_BREATHING_FOR:g} s later)",
            f"smoke detector {SMOKE_SOURCE} ({SMOKE}, in the cabinet's room) on the broker: "
            f"smoke after {SMOKE_AFTER:g} s cuts the cabinet",
        ]

    def fence_line(self, latest: dict) -> str:
        """The I/O module's inputs (closed loop ``-``, open ``O``) and what it drives."""
        loops = "".join("-" if closed else "O" for closed in self.io.inputs)
        siren = "SIREN" if self.io.outputs[7] else "siren off"
        light = "FLOODLIGHT" if self.io.outputs[6] else "floodlight off"
        return f"fence inputs 1-8 [{loops}] (O = loop open), {siren}, {light}"

    def rooms_line(self, latest: dict) -> str:
        """The breathing radar's rates and the smoke detector's density."""
        health = self.health
        there = (f"breathing {health.breath_rate:4.1f}/min, heart {health.heart_rate:4.1f}/min"
                 if health.present else "nobody there")
        smoke = latest.get((SMOKE, None))
        density = smoke.values.get("smoke_density") if smoke is not None else None
        smoke_text = "no report yet" if density is None else (
            f"smoke density {density:.2f}" + (" SMOKE" if density >= 0.1 else ""))
        return f"1204 bedroom: {there} | charging room detector: {smoke_text}"


@contextlib.asynccontextmanager
async def demo_facilities(*, broker: tuple[str, int],
                          out: Callable[..., object] = print) -> AsyncIterator[DemoFacilities]:
    """Run the I/O module, the alarm panel, the breathing radar and the smoke detector."""
    io = IoModuleModel(scenario="night-intrusion", incident_after=FENCE_AFTER)
    panel_port = free_port()
    async with CabinetServer(io, tcp=("127.0.0.1", free_port())) as io_server, \
            PtyPair() as pair, \
            HealthRadarSimulator(serial=pair.b, scenario="no-breathing",
                                 incident_after=NO_BREATHING_AFTER) as health, \
            AlarmPanelSimulator(receiver=("127.0.0.1", panel_port), account="1234",
                                scenario="one-key", incident_after=PANEL_AFTER, heartbeat_s=5.0,
                                out=lambda line: out(line, flush=True)) as panel, \
            SmokeDetectorSimulator(broker=broker, detector_id=SMOKE_SOURCE, scenario="smoke",
                                   incident_after=SMOKE_AFTER, heartbeat_s=5.0) as smoke:
        # the module's scenario is the fence; the button is pressed by hand, later
        button = asyncio.create_task(_press_one_key(io, out), name="demo[one-key]")
        try:
            yield DemoFacilities(io=io, io_port=io_server.port, panel=panel,
                                 panel_port=panel_port, health=health, health_pty=pair.link_a,
                                 smoke=smoke)
        finally:
            await cancel_and_wait([button])


async def _press_one_key(io: IoModuleModel, out: Callable[..., object]) -> None:
    await asyncio.sleep(ONE_KEY_AFTER)
    io.inputs[4] = False  # DI5: the button latches open until reset at the button
    out("io-module: INCIDENT one-key button on DI5 pressed", flush=True)
