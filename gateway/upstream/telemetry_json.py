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

    def reading(self, reading: Reading) -> str:
        """One reading as JSON."""
        values = reading.values
        if not all(map(math.isfinite, values.values())):
            values = {k: v for k, v in values.items() if math.isfinite(v)}
            self.skipped_values += len(reading.values) - len(values)
        doc: dict[str, object] = {"device": reading.device}
        if reading.channel is not None:
            doc["channel"] = reading.channel
        doc["ts"] = iso(reading.ts)
        doc["values"] = values
        return _dumps(doc)

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
