"""What the console shows live: open alarms, every transition, device health.

The transitions reach each open page through the HTTP server's one fan-out
(``gateway.operations.live_events``); here the console keeps what a page needs
besides: the transitions since it started (for the history), the open alarms,
and the devices (``gateway.operations.device_view``), built at most twice a
second however many pages ask.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from typing import TYPE_CHECKING

from gateway import json_safe
from gateway.alarms.manager import Transition
from gateway.operations.device_view import devices_view

if TYPE_CHECKING:
    from gateway.clock import Clock
    from gateway.views import AlarmsView, DevicesView

HISTORY = 5000


class LiveFeed:
    """The console's live picture of the gateway."""

    def __init__(self, *, alarms: AlarmsView, devices: DevicesView, clock: Clock):
        self._alarms = alarms
        self._devices = devices
        # Changes whenever the gateway process (or its console) starts again.
        self.instance = secrets.token_hex(6)
        self.started = clock.time()
        # (epoch seconds, transition JSON) since this console started, oldest first
        self.history: deque[tuple[float, dict[str, object]]] = deque(maxlen=HISTORY)
        self._devices_cache: tuple[float, str] | None = None
        alarms.add_listener(self._on_transition)

    def _on_transition(self, t: Transition) -> None:
        self.history.append((t.ts, t.to_json()))

    def alarms(self) -> list[dict[str, object]]:
        """Open alarms as published, most urgent and newest first."""
        return [a.to_json() for a in self._alarms.open_alarms()]

    def devices_text(self, max_age: float = 0.5) -> str:
        """``{"devices": ...}`` as JSON text, built at most once per ``max_age`` for all pages."""
        now = time.monotonic()
        if self._devices_cache is None or now - self._devices_cache[0] >= max_age:
            self._devices_cache = (now, json_safe.dumps({"devices": self.devices()}))
        return self._devices_cache[1]

    def devices(self) -> list[dict[str, object]]:
        """Every configured device with its location, health and last readings."""
        rows = getattr(self._devices, "rows", None)  # the hub: its gateways, ready-made rows
        if rows is not None:
            return rows()
        return devices_view(self._devices)
