"""``community-gateway demo``: a charging cabinet simulator, a broker and the gateway, together,
with the fall radar, doors and camera (demo.radar, demo.access) and the perimeter, alarm
panel, breathing radar and smoke detector (demo.facilities).

Everything runs in this process on loopback: the cabinet answers Modbus TCP, an
embedded MQTT broker carries the alarms, the time series go to a local
line-protocol file. Readings and alarms are printed as they happen.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from importlib import resources
from pathlib import Path

import aiomqtt
import yaml

from gateway.cancellation import raise_if_stopping
from gateway.runtime.app import ALARM_LOGGER, Gateway
from gateway.runtime.site import load_site
from gateway.console.demo_setup import DemoLogin, enable_console
from gateway.demo.access import DEVICES as ACCESS_DEVICES
from gateway.demo.access import DemoAccess, demo_access
from gateway.demo.facilities import DemoFacilities, demo_facilities
from gateway.demo.radar import DemoRadar, demo_radar
from gateway.demo.embedded_broker import embedded_broker, free_port
from gateway.demo.hub import DemoHub
from simulators.charging_cabinet import CabinetModel
from simulators.modbus_server import CabinetServer

SITE_FILE = "charging-site.yaml"
CABINET = "charger-b3"  # the cabinet's device id in configs/charging-site.yaml


def demo_config(data_dir: Path, mqtt_port: int, modbus_port: int,
                radar: DemoRadar | None = None, access: DemoAccess | None = None,
                http_port: int | None = None,
                facilities: DemoFacilities | None = None,
                hub: DemoHub | None = None) -> tuple[Path, DemoLogin | None]:
    """The example charging site, pointed at the simulators; written into ``data_dir``.

    With ``http_port`` the security-room console is on, with a fresh login.
    """
    raw = yaml.safe_load((resources.files("configs") / SITE_FILE).read_text(encoding="utf-8"))
    raw["mqtt"] = {"host": "127.0.0.1", "port": mqtt_port, "prefix": "community"}
    raw.pop("influxdb", None)
    raw["local_series"] = {"path": str((data_dir / "series.lp").resolve()), "max_mb": 50}
    raw["buses"][0].update(host="127.0.0.1", port=modbus_port)
    raw["devices"][0]["poll_interval"] = 0.5
    raw.setdefault("state_dir", str((data_dir / "state").resolve()))  # open alarms survive a restart
    if radar is not None:
        radar.add_to_site(raw)
    if access is not None:
        access.add_to_site(raw)
    if facilities is not None:
        facilities.add_to_site(raw)
    if hub is not None:
        hub.add_to_site(raw)
    data_dir.mkdir(parents=True, exist_ok=True)
    login = enable_console(raw, data_dir, http_port=http_port) if http_port else None
    path = data_dir / "demo-site.yaml"
    path.write_text("# written by `community-gateway demo`\n" + yaml.safe_dump(raw, sort_keys=False,
                                                                              allow_unicode=True))
    return path, login


async def run_demo(*, scenario: str = "overpower", data_dir: str = "demo-data",
                   print_every: float = 2.0) -> None:
    """Run until cancelled (Ctrl-C)."""
    data = Path(data_dir)
    cleared = fresh_state(data)
    # The demo prints each alarm once, as the security room gets it from the broker;
    # the gateway's own log line for each transition would say it twice.
    logging.getLogger(ALARM_LOGGER).setLevel(logging.ERROR)
    model = CabinetModel(ports=4, scenario=scenario, scenario_port=3, incident_after=10.0,
                         speed=5.0)
    async with embedded_broker() as (host, mqtt_port), \
            CabinetServer(model, tcp=("127.0.0.1", free_port())) as cabinet, \
            demo_radar() as radar, \
            demo_access(broker=(host, mqtt_port), data_dir=data, out=_simulator_line) as access, \
            demo_facilities(broker=(host, mqtt_port), out=_simulator_line) as facilities:
        hub = DemoHub(data, broker=(host, mqtt_port))  # a second building and the community hub
        path, login = demo_config(data, mqtt_port, cabinet.port, radar, access, http_port=free_port(),
                                  facilities=facilities, hub=hub)
        hub.second_site()
        site = load_site(path)
        gateway = Gateway(site)
        if cleared is not None:
            print(f"demo: starting fresh: removed the open alarms and the outbox of the last "
                  f"run ({cleared})", flush=True)
        print(f"demo: cabinet simulator on Modbus TCP {cabinet.address} (scenario {scenario!r}, "
              f"incident on port 3 after 10 s)", flush=True)
        print(f"demo: {radar.describe()}", flush=True)
        print(f"demo: {access.describe()}", flush=True)
        for line in facilities.describe():
            print(f"demo: {line}", flush=True)
        print(f"demo: MQTT broker on {host}:{mqtt_port}; alarms under "
              f"community/{site.config.site.id}/alarms/#", flush=True)
        print(f"demo: time series kept locally in {site.config.local_series.path} "
              f"(InfluxDB line protocol); config in {site.path}", flush=True)
        if login is not None:
            print(f"demo: {login.describe()}", flush=True)
        for line in hub.describe():
            print(f"demo: {line}", flush=True)
        print(f"demo: every {print_every:g} s what the gateway reads: the cabinet's ports "
              "(relay, power, temperature), the radar (whether someone is in the room, moving "
              "or still, body movement 0-100, fall), the doors, the fence's inputs, the breathing "
              "radar and the smoke detector; each alarm once, as the "
              "security room gets it. Ctrl-C stops", flush=True)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(gateway.run(), name="gateway")
            tg.create_task(hub.run(), name="demo[hub]")
            tg.create_task(_print_alarms(host, mqtt_port, site.config.site.id), name="demo[alarms]")
            tg.create_task(_print_readings(gateway, print_every, radar, access, facilities),
                           name="demo[readings]")


def fresh_state(data: Path) -> Path | None:
    """Remove the last run's state (open alarms, their history, the outbox), so each demo
    starts with nothing open; return the folder when there was one."""
    state = (data / "state").resolve()
    if not state.exists():
        return None
    shutil.rmtree(state)
    return state


def _clock(ts: float | None = None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def _simulator_line(text: str, flush: bool = True) -> None:
    """What a simulator does on purpose (a forced door, a throw), in the demo's columns."""
    who, _, what = text.partition(": ")
    print(f"{_clock()}  {'simulator':<9} {who}: {what}", flush=flush)


def alarm_line(event: dict) -> str:
    """One aligned line per alarm transition: time, what happened, level, message, device."""
    alarm = event["alarm"]
    what = event["event"].replace("_", " ")
    by = f" by {event['by']}" if event.get("by") else ""
    count = f", count {alarm['count']}" if alarm.get("count", 1) > 1 else ""
    return (f"{_clock()}  {'ALARM':<9} {what + by:<17} L{alarm['severity']}  {alarm['message']}"
            f"  ({alarm['device']}, id {alarm['id']}{count})")


async def _print_alarms(host: str, port: int, site_id: str) -> None:
    # Reads the alarms back from the broker, as the security room would.
    while True:
        try:
            async with aiomqtt.Client(host, port, identifier="demo-console") as client:
                await client.subscribe(f"community/{site_id}/alarm_events", qos=1)
                async for message in client.messages:
                    print(alarm_line(json.loads(message.payload)), flush=True)
        except aiomqtt.MqttError:
            raise_if_stopping()  # a failed disconnect on the way out is not a reconnect
            await asyncio.sleep(0.5)


def cabinet_line(latest: dict) -> str | None:
    """The cabinet: each port's relay, power and temperature, then the cabinet's own sensors."""
    parts = []
    cabinet = None
    for (device, channel), reading in sorted(latest.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        if device != CABINET:
            continue
        v = reading.values
        if channel is None:
            cabinet = v
            continue
        relay = "on " if v.get("relay") else "OFF"
        parts.append(f"p{channel} {relay} {v.get('power', 0):6.1f} W {v.get('temperature', 0):4.1f} °C")
    if cabinet is not None:
        smoke = "SMOKE" if cabinet.get("smoke") else "no smoke"
        parts.append(f"cabinet {cabinet.get('cabinet_temperature', float('nan')):4.1f} °C, {smoke}")
    return " | ".join(parts) if parts else None


def radar_line(values: dict[str, int], room: str) -> str:
    """The radar's reading in words: MR60FDA1 reports presence (0/1), motion (0 nobody,
    1 still, 2 moving), body movement (0-100), fall (0/1) and stationary dwell (0/1:
    someone motionless for long)."""
    if not values.get("presence"):
        there = "nobody there"
    else:
        motion = {1: "still", 2: "moving"}.get(int(values.get("motion", 0)), "present")
        there = f"someone there, {motion}, body movement {int(values.get('body_movement', 0)):3d}/100"
    fall = "FALL" if values.get("fall") else "no fall"
    dwell = ", motionless for long" if values.get("stationary_dwell") else ""
    return f"{room}: {there:<46} {fall}{dwell}"


async def _print_readings(gateway: Gateway, every: float, radar: DemoRadar | None = None,
                          access: DemoAccess | None = None,
                          facilities: DemoFacilities | None = None) -> None:
    while True:
        await asyncio.sleep(every)
        latest = gateway.pipeline.latest
        now = _clock()
        cabinet = cabinet_line(latest)
        if cabinet:
            print(f"{now}  {'cabinet':<9} {cabinet}", flush=True)
        if radar is not None:
            # What the radar last reported (each of its frames carries one value, so the
            # gateway's latest reading alone is one field, not the room).
            state = radar.sim.state
            values = {"presence": state.presence, "motion": state.motion,
                      "body_movement": state.body_movement, "fall": state.fall,
                      "stationary_dwell": state.stationary_dwell}
            spec = gateway.site.devices.get(radar.device_id)
            room = spec.location().get("room", radar.device_id) if spec else radar.device_id
            print(f"{now}  {'radar':<9} {radar_line(values, room)}", flush=True)
        if access is not None:
            print(f"{now}  {'doors':<9} {access.door.model.status_line()}", flush=True)
        if facilities is not None:
            print(f"{now}  {'fence':<9} {facilities.fence_line(latest)}", flush=True)
            print(f"{now}  {'rooms':<9} {facilities.rooms_line(latest)}", flush=True)
