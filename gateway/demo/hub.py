"""The hub in ``community-gateway demo``: a second building's gateway and the community hub.

The demo's main building (the charging room, gateway/demo/run.py) and a second building
(a pump room on synthetic sensors, whose water level is high from the start: an urgent
alarm to acknowledge) both publish to the embedded broker; the hub watches both and
serves the same console over the two, with a fresh admin login each run. Operators'
commands from the hub are signed with a demo key that both gateways accept.

run.py uses it in a few lines: ``DemoHub(...)``, ``add_to_site(raw)`` on the main
site's config, ``describe()`` for the printed lines and ``run()`` beside the gateway.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
from pathlib import Path

import yaml

from gateway.console.demo_setup import DemoLogin, enable_console
from gateway.console.passwords import hash_password
from gateway.console.user_cli import generate_password
from gateway.console.users import UsersFile
from gateway.demo.embedded_broker import free_port

HIERARCHY = {"subdistrict": "Xinqiao", "community": "Sunny Garden", "compound": "North"}
KEY_NAME = "demo-hub"
HUB_USERS = "hub-users.yaml"
HUB_USER = "chief"
SECOND_SITE = "sunny-garden-b5"


class DemoHub:
    """The second building and the hub, on the demo's broker."""

    def __init__(self, data_dir: Path, *, broker: tuple[str, int]):
        self.data = (data_dir / "hub").resolve()
        self.host, self.port = broker
        # Each demo starts fresh, as the main building does: no open alarm of the last run.
        shutil.rmtree(self.data, ignore_errors=True)
        self.data.mkdir(parents=True, exist_ok=True)
        self.key_file = self.data / "command.key"
        self.key_file.write_text(secrets.token_hex(32))
        os.chmod(self.key_file, 0o600)  # a secret file readable by this user alone
        self.http_port = free_port()
        self.second_login: DemoLogin | None = None
        self.password = generate_password()
        UsersFile(path=self.data / HUB_USERS).add(HUB_USER, "admin", hash_password(self.password),
                                                  replace=True)

    def add_to_site(self, raw: dict, building: str = "3") -> None:
        """Place a demo site in the hierarchy and let it take the hub's signed commands."""
        site = raw.setdefault("site", {})
        for key, value in HIERARCHY.items():
            site.setdefault(key, value)
        site.setdefault("building", building)
        mqtt = raw.setdefault("mqtt", {})
        mqtt.setdefault("health_interval", 5)
        mqtt["commands"] = {"enabled": True, "keys": [
            {"name": KEY_NAME, "secret": {"file": str(self.key_file)}}]}

    def second_site(self) -> Path:
        """Building 5's pump room: water level and pump temperature (synthetic)."""
        raw = {
            "site": {"id": SECOND_SITE, "name": "Sunny Garden, building 5"},
            "state_dir": str(self.data / "b5-state"),
            "mqtt": {"host": self.host, "port": self.port, "prefix": "community"},
            "devices": [{"id": "pump-room-b5", "type": "synthetic", "kind": "pump_room",
                         "fields": ["water_level", "pump_temperature"], "poll_interval": 1,
                         "location": {"building": "5", "floor": "B1", "room": "pump room"}}],
            "rules": [{"id": "water-high", "type": "threshold", "select": {"kinds": ["pump_room"]},
                       "field": "water_level", "above": 5, "severity": 1,
                       "message": "Water level high in the pump room (building {building})"}],
        }
        self.add_to_site(raw, building="5")
        self.second_login = enable_console(raw, self.data, http_port=free_port(), user="guard-b5")
        path = self.data / "b5-site.yaml"
        path.write_text("# written by `community-gateway demo`\n"
                        + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
        return path

    def hub_file(self) -> Path:
        raw = {"hub": {"id": "sunny-garden", "name": "Sunny Garden community security room"},
               "broker": {"host": self.host, "port": self.port, "prefix": "community"},
               "scope": {"communities": [HIERARCHY["community"]]},
               "state_dir": str(self.data / "hub-state"),
               "alarms": {"silent_after_intervals": 3},
               "http": {"listen": f"127.0.0.1:{self.http_port}"},
               "console": {"users_file": HUB_USERS},
               "commands": {"key_id": KEY_NAME, "key": {"file": str(self.key_file)}}}
        path = self.data / "hub.yaml"
        path.write_text("# written by `community-gateway demo`\n" + yaml.safe_dump(raw, sort_keys=False))
        return path

    def describe(self) -> list[str]:
        """What the demo prints about the hub (call after ``second_site``)."""
        lines = []
        if self.second_login is not None:
            lines.append(f"building 5 (pump room, synthetic): {self.second_login.describe()}")
        lines.append(f"community hub console on http://127.0.0.1:{self.http_port}/console/ (log in "
                     f"as {HUB_USER} / {self.password}): both buildings, the Fleet tab, signed "
                     f"acks confirmed by each gateway")
        return lines

    async def run(self) -> None:
        """Building 5's gateway and the hub, until cancelled."""
        # Imported here: the demo's other parts need neither.
        from gateway.hub.config import load_hub_config
        from gateway.hub.service import Hub
        from gateway.runtime.app import Gateway
        from gateway.runtime.site import load_site

        site_path = self.data / "b5-site.yaml"
        if not site_path.exists():
            site_path = self.second_site()
        logging.getLogger("gateway.hub").setLevel(logging.WARNING)
        gateway = Gateway(load_site(site_path))
        hub = Hub(load_hub_config(self.hub_file()))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(gateway.run(), name="demo[building-5]")
            tg.create_task(hub.run(), name="demo[hub]")
