"""What the console shows live: open alarms, every transition, device health.

The transitions reach each open page through the HTTP server's one fan-out
(``gateway.operations.live_events``); here the console keeps what a page needs
besides: the transitions since it started (for the history), the open alarms,
and the devices (``gateway.operations.device_view``; on a hub, its gateways),
built at most twice a second however many pages ask, and their JSON once per
build for all pages of one scope.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable
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
        self._devices_cache: tuple[float, list[dict[str, object]]] | None = None
        self._devices_texts: dict[str | None, str] = {}  # scope key (None: all) -> JSON text
        alarms.add_listener(self._on_transition)

    def _on_transition(self, t: Transition) -> None:
        self.history.append((t.ts, t.to_json()))

    def alarms(self) -> list[dict[str, object]]:
        """Open alarms as published, most urgent and newest first."""
        return [a.to_json() for a in self._alarms.open_alarms()]

    def devices_text(self, max_age: float = 0.5, *, covers: Callable[[dict], bool] | None = None,
                     scope: str | None = None) -> str:
        """``{"devices": ...}`` as JSON text, built at most once per ``max_age`` for all pages.

        With ``covers`` (a hub user's scope), only the rows it covers; the text is shared by
        every page of the same ``scope`` (a key: equal scopes, equal keys) until the next build,
        so many open pages cost one build of the fleet, not one each per second."""
        rows = self.device_rows(max_age)
        key = None if covers is None else scope
        text = self._devices_texts.get(key)
        if text is None:
            if covers is not None:
                rows = [d for d in rows if covers(d)]
            text = json_safe.dumps({"devices": rows})
            if covers is None or scope is not None:
                self._devices_texts[key] = text
        return text

    def device_rows(self, max_age: float = 0.5) -> list[dict[str, object]]:
        """``devices()``, built at most once per ``max_age`` for all pages (do not change it)."""
        now = time.monotonic()
        if self._devices_cache is None or now - self._devices_cache[0] >= max_age:
            self._devices_cache = (now, self.devices())
            self._devices_texts = {}
        return self._devices_cache[1]

    def devices(self) -> list[dict[str, object]]:
        """Every configured device with its location, health and last readings."""
        rows = getattr(self._devices, "rows", None)  # the hub: its gateways, ready-made rows
        if rows is not None:
            return rows()
        return devices_view(self._devices)
