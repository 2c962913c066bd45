"""``community-gateway demo``: a charging cabinet simulator, a broker and the gateway, together.

Everything runs in this process on loopback: the cabinet answers Modbus TCP, an
embedded MQTT broker carries the alarms, the time series go to a local
line-protocol file. Readings and alarms are printed as they happen.
"""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from pathlib import Path

import aiomqtt
import yaml

from gateway.runtime.app import Gateway
from gateway.runtime.site import load_site
from gateway.console.demo_setup import DemoLogin, enable_console
from gateway.demo.access import DEVICES as ACCESS_DEVICES
from gateway.demo.access import DemoAccess, demo_access
from gateway.demo.radar import DemoRadar, demo_radar
from gateway.demo.embedded_broker import embedded_broker, free_port
from simulators.charging_cabinet import CabinetModel
from simulators.modbus_server import CabinetServer

SITE_FILE = "charging-site.yaml"


def demo_config(data_dir: Path, mqtt_port: int, modbus_port: int,
                radar: DemoRadar | None = None, access: DemoAccess | None = None,
                http_port: int | None = None) -> tuple[Path, DemoLogin | None]:
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
    model = CabinetModel(ports=4, scenario=scenario, scenario_port=3, incident_after=10.0,
                         speed=5.0)
    async with embedded_broker() as (host, mqtt_port), \
            CabinetServer(model, tcp=("127.0.0.1", free_port())) as cabinet, \
            demo_radar() as radar, \
            demo_access(broker=(host, mqtt_port), data_dir=data) as access:
        path, login = demo_config(data, mqtt_port, cabinet.port, radar, access, http_port=free_port())
        site = load_site(path)
        gateway = Gateway(site)
        print(f"demo: cabinet simulator on Modbus TCP {cabinet.address} (scenario {scenario!r}, "
              f"incident on port 3 after 10 s)", flush=True)
        print(f"demo: {radar.describe()}", flush=True)
        print(f"demo: {access.describe()}", flush=True)
        print(f"demo: MQTT broker on {host}:{mqtt_port}; alarms under "
              f"community/{site.config.site.id}/alarms/#", flush=True)
        print(f"demo: time series kept locally in {site.config.local_series.path} "
              f"(InfluxDB line protocol); config in {site.path}", flush=True)
        if login is not None:
            print(f"demo: {login.describe()}", flush=True)
        print("demo: Ctrl-C stops", flush=True)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(gateway.run(), name="gateway")
            tg.create_task(_print_alarms(host, mqtt_port, site.config.site.id), name="demo[alarms]")
            tg.create_task(_print_readings(gateway, print_every, radar, access),
                           name="demo[readings]")


async def _print_alarms(host: str, port: int, site_id: str) -> None:
    # Reads the alarms back from the broker, as the security room would.
    while True:
        try:
            async with aiomqtt.Client(host, port, identifier="demo-console") as client:
                await client.subscribe(f"community/{site_id}/alarm_events", qos=1)
                async for message in client.messages:
                    event = json.loads(message.payload)
                    alarm = event["alarm"]
                    print(f"ALARM {event['event'].upper():9} L{alarm['severity']} {alarm['message']}"
                          f"  [{alarm['id']}, state {alarm['state']}, count {alarm['count']}]",
                          flush=True)
        except aiomqtt.MqttError:
            await asyncio.sleep(0.5)


async def _print_readings(gateway: Gateway, every: float, radar: DemoRadar | None = None,
                          access: DemoAccess | None = None) -> None:
    while True:
        await asyncio.sleep(every)
        latest = gateway.pipeline.latest
        parts = []
        for (device, channel), reading in sorted(latest.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
            v = reading.values
            if radar is not None and device == radar.device_id:
                continue  # its own status line below
            if access is not None and device in ACCESS_DEVICES:
                continue  # likewise
            if channel is None:
                parts.append(f"cabinet {v.get('cabinet_temperature', float('nan')):.1f}°C "
                             f"smoke={int(v.get('smoke', 0))}")
            else:
                relay = "on " if v.get("relay") else "OFF"
                parts.append(f"p{channel} {relay} {v.get('power', 0):7.1f}W "
                             f"{v.get('temperature', 0):4.1f}°C")
        if parts:
            print("readings: " + " | ".join(parts), flush=True)
        if radar is not None:
            print(radar.status(), flush=True)
        if access is not None:
            print(access.status(), flush=True)
