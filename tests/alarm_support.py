"""A gateway on a fake clock, fed by hand: rules, alarms and timers without sleeping.

The gateway is built (its constructor does no I/O) but not run: readings and events
go through ``pipeline.process`` and time through ``pipeline.tick``, exactly the
calls its tasks make.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway.alarms.manager import Transition
from gateway.runtime.app import Gateway
from gateway.clock import FakeClock
from gateway.runtime.site import load_site
from gateway.readings import DeviceEvent, Reading

DEVICES: list[dict[str, Any]] = [
    {"id": "doors", "type": "synthetic", "kind": "door_access", "fields": ["door_open"],
     "channels": 2, "events": ["granted", "exit_button", "denied", "duress", "tamper",
                               "tamper_restored", "emergency"],
     "location": {"building": "3", "unit": "1"}},
    {"id": "terminal", "type": "synthetic", "kind": "access_terminal", "fields": ["online"],
     "channels": 2, "events": ["granted", "denied"], "location": {"building": "3", "unit": "1"}},
    {"id": "radar", "type": "synthetic", "kind": "fall_radar", "fields": ["motion", "presence", "fall"],
     "events": ["fall"], "location": {"building": "5", "unit": "2", "floor": "7", "room": "701"}},
    {"id": "camera", "type": "synthetic", "kind": "throw_camera", "fields": ["status"],
     "events": ["throw"], "location": {"building": "3"}},
    {"id": "charger", "type": "synthetic", "kind": "ev_charging", "fields": ["power", "temperature"],
     "channels": 4, "location": {"building": "3", "unit": "1", "floor": "B1"}},
]


class Bench:
    """A gateway built from ``rules`` on a FakeClock, with every transition recorded."""

    def __init__(self, tmp_path: Path, rules: list[dict], *, language: str = "en",
                 alarms: dict | None = None, extra: dict | None = None):
        raw: dict[str, Any] = {"site": {"id": "t", "language": language},
                               "state_dir": str(tmp_path / "state"), "devices": DEVICES,
                               "rules": rules}
        if alarms:
            raw["alarms"] = alarms
        raw.update(extra or {})
        path = tmp_path / "site.yaml"
        path.write_text(yaml.safe_dump(raw, allow_unicode=True))
        self.clock = FakeClock()
        self.gateway = Gateway(load_site(path), clock=self.clock)
        self.alarms = self.gateway.alarms
        self.transitions: list[Transition] = []
        self.alarms.add_listener(self.transitions.append)
        self.tick()  # the timer's first run: absence rules start counting here

    def now(self) -> float:
        return self.clock.time()

    def read(self, device: str, channel: int | None = None, **values: float) -> None:
        """A reading taken now."""
        self.gateway.pipeline.process([[Reading(device, channel, dict(values), self.now())]])

    def event(self, device: str, name: str, channel: int | None = None, **attrs: object) -> None:
        """An event reported now."""
        self.gateway.pipeline.process([[DeviceEvent(device, channel, name, self.now(), dict(attrs))]])

    def tick(self, advance: float = 0.0) -> None:
        """Let ``advance`` seconds pass, then run the timer."""
        self.clock.advance(advance)
        self.gateway.pipeline.tick(self.now())

    def events(self, rule: str | None = None) -> list[str]:
        """The transitions so far (of one rule), by name."""
        return [t.event for t in self.transitions if rule is None or t.alarm["rule"] == rule]

    def only(self, rule: str):
        """The one open alarm of ``rule``."""
        found = [a for a in self.alarms.open_alarms() if a.rule == rule]
        assert len(found) == 1, found
        return found[0]
