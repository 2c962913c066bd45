"""Door access and the thrown-object camera in ``community-gateway demo``.

The devices and rules come from ``configs/example-site.yaml`` (what an installer
would write); only the door module's address changes, to the simulator's port,
and the pseudonymisation key is a file in the demo's data folder. Use::

    async with demo_access(broker=(host, port), data_dir=data) as access:
        access.add_to_site(raw)   # before the site config is written
        ...
        print(access.status())
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from simulators.camera import CameraSimulator
from simulators.door import DoorSimulator

EXAMPLE_SITE_FILE = "example-site.yaml"
DOOR_BUS = "door-link"
DEVICES = ("doors-b3-u1", "terminal-b3-u1", "camera-b5-east")
RULES = ("door-forced", "door-held", "repeated-denials", "duress", "terminal-tamper",
         "controller-alarm", "thrown-object")
DOOR_INCIDENTS_AFTER = 25.0  # forced door, then denials, duress, tamper 30 s apart
THROW_AFTER = 30.0


@dataclass
class DemoAccess:
    """The running door and camera simulators, and where the demo keeps the key."""

    door: DoorSimulator
    camera: CameraSimulator
    key_file: Path

    def add_to_site(self, raw: dict) -> None:
        """Add the example site's door module, terminal, camera, their rules and privacy key."""
        example = yaml.safe_load(
            (resources.files("configs") / EXAMPLE_SITE_FILE).read_text(encoding="utf-8"))
        bus = next(b for b in example["buses"] if b["id"] == DOOR_BUS)
        bus.update(host="127.0.0.1", port=self.door.modbus_port)
        raw.setdefault("buses", []).append(bus)
        raw.setdefault("devices", []).extend(d for d in example["devices"] if d["id"] in DEVICES)
        raw.setdefault("rules", []).extend(r for r in example["rules"] if r["id"] in RULES)
        raw["privacy"] = {"key": {"file": str(self.key_file)}}

    def describe(self) -> str:
        """One line saying what runs where."""
        return (f"door module on Modbus TCP 127.0.0.1:{self.door.modbus_port}, terminal "
                f"{self.door.terminal_id} on MQTT (incidents from {DOOR_INCIDENTS_AFTER:g} s: forced "
                f"door, five denials, duress, tamper); camera {self.camera.camera_id} (a throw "
                f"from floor {self.camera.floor} after {THROW_AFTER:g} s); card numbers "
                f"pseudonymised with the key in {self.key_file}")

    def status(self) -> str:
        """The doors as the module shows them."""
        return "doors: " + self.door.model.status_line()


def _key_file(data_dir: Path) -> Path:
    """The demo's pseudonymisation key, made once (mode 0600) and kept, so pseudonyms
    stay the same from one demo run to the next."""
    path = data_dir / "pseudonym.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    return path.resolve()


@contextlib.asynccontextmanager
async def demo_access(*, broker: tuple[str, int], data_dir: Path,
                      out=print) -> AsyncIterator[DemoAccess]:
    """Run the door and camera simulators against ``broker`` until the block ends."""
    def incidents_only(line: str) -> None:
        if "INCIDENT" in line or "THROW" in line:
            out(line, flush=True)

    key_file = _key_file(data_dir)
    async with DoorSimulator(broker=broker, terminal_id="T3E-01", scenario="tour",
                             incident_after=DOOR_INCIDENTS_AFTER, traffic_every=4.0,
                             out=incidents_only) as door, \
            CameraSimulator(broker=broker, camera_id="cam-b5-east", building="5", facade="east",
                            scenario="throw", incident_after=THROW_AFTER, floor=12,
                            out=incidents_only) as camera:
        yield DemoAccess(door=door, camera=camera, key_file=key_file)
