"""What the console shows live: open alarms, every transition, device health.

``LiveFeed`` listens to the alarm manager and fans each transition out to the
open pages (one bounded queue each). A page too slow to keep up is not fed a
partial picture: its queue is emptied and it is sent a fresh snapshot instead,
so an alarm is never missing from a page, only coalesced.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from gateway import json_safe
from gateway.alarms.alarm import iso
from gateway.alarms.manager import Transition
from gateway.clock import Clock
from gateway.views import AlarmsView, DevicesView

CLIENT_QUEUE = 500
HISTORY = 5000


class Subscriber:
    """One open page's queue of alarm transitions."""

    __slots__ = ("items", "lagged", "wake")

    def __init__(self) -> None:
        self.items: deque[dict[str, object]] = deque()
        self.lagged = False
        self.wake = asyncio.Event()

    def offer(self, item: dict[str, object]) -> None:
        if len(self.items) >= CLIENT_QUEUE:
            self.items.clear()  # the page gets a snapshot instead (see module doc)
            self.lagged = True
        else:
            self.items.append(item)
        self.wake.set()


class LiveFeed:
    """Fans the gateway's alarm transitions out to console pages."""

    def __init__(self, *, alarms: AlarmsView, devices: DevicesView, clock: Clock):
        self._alarms = alarms
        self._devices = devices
        # Changes whenever the gateway process (or its console) starts again.
        self.instance = secrets.token_hex(6)
        self.started = clock.time()
        # (epoch seconds, transition JSON) since this console started, oldest first
        self.history: deque[tuple[float, dict[str, object]]] = deque(maxlen=HISTORY)
        self.closing = asyncio.Event()
        self._subscribers: set[Subscriber] = set()
        self.lagged_pages = 0
        self._devices_cache: tuple[float, str] | None = None
        alarms.add_listener(self._on_transition)

    @property
    def pages(self) -> int:
        """Pages connected right now."""
        return len(self._subscribers)

    def _on_transition(self, t: Transition) -> None:
        item = t.to_json()
        self.history.append((t.ts, item))
        for sub in self._subscribers:
            was_lagged = sub.lagged
            sub.offer(item)
            if sub.lagged and not was_lagged:
                self.lagged_pages += 1

    @contextmanager
    def subscribe(self) -> Iterator[Subscriber]:
        """A queue of transitions for one page, for as long as the ``with`` lasts."""
        sub = Subscriber()
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    def close(self) -> None:
        """Tell every open stream to end (the server is stopping)."""
        self.closing.set()
        for sub in self._subscribers:
            sub.wake.set()

    def alarms(self) -> list[dict[str, object]]:
        """Open alarms as published, most urgent and newest first."""
        return [a.to_json() for a in self._alarms.open_alarms()]

    def devices_text(self, max_age: float = 0.5) -> str:
        """``{"devices": ...}`` as JSON text, built at most once per ``max_age`` for all pages."""
        now = time.monotonic()
        if self._devices_cache is None or now - self._devices_cache[0] >= max_age:
            self._devices_cache = (now, json_text({"devices": self.devices()}))
        return self._devices_cache[1]

    def devices(self) -> list[dict[str, object]]:
        """Every configured device with its location, health and last readings."""
        health = self._devices.health()
        readings: dict[str, list[dict[str, object]]] = {}
        for (device, channel), reading in list(self._devices.latest().items()):
            readings.setdefault(device, []).append(
                {"channel": channel, "ts": iso(reading.ts), "values": finite(reading.values)})
        out = []
        for device_id, spec in self._devices.specs().items():
            h = health.get(device_id)
            rows = sorted(readings.get(device_id, []), key=lambda r: -1 if r["channel"] is None else r["channel"])
            out.append({
                "id": device_id, "kind": spec.kind, "location": spec.location(),
                "channel_name": spec.channel_name, "channels": spec.channel_count,
                "online": h.online if h else None,
                "last_success": iso(h.last_success) if h and h.last_success else None,
                "last_error": h.last_error if h else None,
                "errors": h.errors if h else 0,
                "readings": rows,
            })
        return out


def finite(values: dict[str, float]) -> dict[str, float | None]:
    """JSON has no NaN or infinity: show them as missing."""
    return {k: (v if isinstance(v, (int, float)) and math.isfinite(v) else None) for k, v in values.items()}


def json_text(obj: object) -> str:
    """JSON for the browser: NaN and infinity (which JSON lacks) become null."""
    return json_safe.dumps(obj, compact=False)
