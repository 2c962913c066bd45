"""The fall radar's part of ``community-gateway demo``: a simulated radar on a pty pair.

The radar and its rules come from ``configs/fall-radar-site.yaml``, so the demo runs
what an installer would write; only the port changes, to the pty the simulator
drives. Use::

    async with demo_radar() as radar:
        radar.add_to_site(raw)   # before the site config is written
        ...
        print(radar.status())
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources

import yaml

from simulators.ptypair import PtyPair
from simulators.radar import RadarSimulator, radar_on_pty

RADAR_SITE_FILE = "fall-radar-site.yaml"


@dataclass
class DemoRadar:
    """A running simulated radar and the pty pair it writes into."""

    sim: RadarSimulator
    pair: PtyPair
    device_id: str

    def add_to_site(self, raw: dict) -> None:
        """Add the example radar of this protocol, on the simulator's pty, and its rules."""
        example = yaml.safe_load(
            (resources.files("configs") / RADAR_SITE_FILE).read_text(encoding="utf-8"))
        device = next(d for d in example["devices"] if d["codec"] == self.sim.protocol)
        device = {**device, "id": self.device_id, "port": self.pair.link_a}
        raw.setdefault("devices", []).append(device)
        raw.setdefault("rules", []).extend(example["rules"])

    def describe(self) -> str:
        """Where the radar is and what will happen, for the demo's banner."""
        model = self.sim.model
        what = (f"a fall after {model.fall_after:g} s, then no motion"
                if model.scenario == "fall" else model.scenario)
        return (f"fall radar simulator ({self.sim.protocol}) on pty {self.pair.link_a} "
                f"(scenario {model.scenario!r}: {what})")

    def status(self) -> str:
        """One line: what the radar reports now."""
        return f"radar {self.device_id}: " + self.sim.status_line()


@contextlib.asynccontextmanager
async def demo_radar(*, protocol: str = "mr60fda1", scenario: str = "fall",
                     fall_after: float = 15.0, dwell_after: float = 10.0,
                     device_id: str = "radar-demo") -> AsyncIterator[DemoRadar]:
    """Run a simulated radar for the demo until the block ends."""
    async with radar_on_pty(protocol=protocol, scenario=scenario, fall_after=fall_after,
                            dwell_after=dwell_after, interval=1.0, refresh=5.0,
                            heartbeat=10.0) as (sim, pair):
        yield DemoRadar(sim, pair, device_id)
