"""Readings and device events as the JSON of the MQTT telemetry topic.

``{prefix}/{site}/telemetry/{device_id}`` carries one message per reading::

    {"device": "charger-b3", "channel": 3, "ts": "2024-05-01T08:15:30.123Z",
     "values": {"power": 231.5, "voltage": 229.8}}

and one per device event::

    {"device": "door-2", "channel": 1, "ts": "...", "event": "forced_open", "attrs": {...}}

``channel`` is absent for device-wide values. Timestamps are ISO 8601 UTC with
milliseconds, like the alarm JSON. Non-finite values (NaN, infinity) are left out,
as in the line protocol: JSON cannot carry them.
"""

from __future__ import annotations

import math

from gateway import json_safe
from gateway.alarms.alarm import iso
from gateway.readings import DeviceEvent, Reading

_dumps = json_safe.dumps  # the gateway's one way to write JSON: strict, compact, UTF-8


class TelemetryEncoder:
    """Turns readings and events into telemetry JSON strings."""

    def __init__(self) -> None:
        self.skipped_values = 0
        # Per reading this is on the hot path (20,000 a second on a large site): the
        # fixed parts are cached, and the readings of one poll share their timestamp.
        self._heads: dict[tuple[str, int | None], str] = {}
        self._keys: dict[str, str] = {}
        self._ts: tuple[float, str] = (math.nan, "")

    def reading(self, reading: Reading) -> str:
        """One reading as JSON (the same text ``json`` would give, built faster)."""
        keys = self._keys
        parts = []
        for name, value in reading.values.items():
            if not math.isfinite(value):
                self.skipped_values += 1
                continue
            key = keys.get(name)
            if key is None:
                key = keys[name] = _dumps(str(name))
            parts.append(f"{key}:{float(value)!r}")
        head = self._heads.get((reading.device, reading.channel))
        if head is None:
            head = '{"device":' + _dumps(reading.device)
            if reading.channel is not None:
                head += f',"channel":{int(reading.channel)}'
            head = self._heads[(reading.device, reading.channel)] = head + ',"ts":"'
        ts = reading.ts
        if ts != self._ts[0]:
            self._ts = (ts, iso(ts))
        return f'{head}{self._ts[1]}","values":{{{",".join(parts)}}}}}'

    def event(self, event: DeviceEvent) -> str:
        """One device event as JSON (attributes JSON cannot carry are given as text)."""
        doc: dict[str, object] = {"device": event.device}
        if event.channel is not None:
            doc["channel"] = event.channel
        doc["ts"] = iso(event.ts)
        doc["event"] = event.name
        doc["attrs"] = {str(k): _plain(v) for k, v in event.attrs.items()}
        return _dumps(doc)


def _plain(value: object) -> object:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)
