"""The one JSON view of a device, for ``/api/devices``, ``/api/stream`` and the console.

Values go out through ``gateway.json_safe``: a NaN or infinity a device reported
becomes ``null`` (JSON has neither), so a strict client can always parse it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.alarms.alarm import iso
from gateway.readings import Reading

if TYPE_CHECKING:
    from gateway.views import DevicesView


def devices_view(devices: DevicesView) -> list[dict[str, Any]]:
    """Every configured (or running) device: what and where it is, how it is doing,
    what it read last."""
    health = devices.health()
    specs = devices.specs()
    readings: dict[str, list[dict[str, Any]]] = {}
    for (device, channel), reading in list(devices.latest().items()):
        readings.setdefault(device, []).append(
            {"channel": channel, "ts": iso(reading.ts), "values": reading.values})
    out = []
    for device_id in sorted(set(specs) | set(health)):
        spec, h = specs.get(device_id), health.get(device_id)
        item: dict[str, Any] = {"id": device_id}
        if spec is not None:
            item.update(kind=spec.kind, type=spec.config.type, location=spec.location(),
                        channel_name=spec.channel_name, channels=spec.channel_count)
            if getattr(spec.config, "bus", None):
                item["bus"] = spec.config.bus
        item.update({
            "online": h.online if h else None,
            "last_success": iso(h.last_success) if h and h.last_success else None,
            "last_error": h.last_error if h else None,
            "polls": h.polls if h else 0,
            "errors": h.errors if h else 0,
            "response_time": h.response_time if h else None,
            "readings": sorted(readings.get(device_id, []),
                               key=lambda r: -1 if r["channel"] is None else r["channel"]),
        })
        out.append(item)
    return out


def reading_view(reading: Reading, kind: str) -> dict[str, Any]:
    """One reading as a live-stream event (``ts`` in epoch seconds, as recorded)."""
    return {"device": reading.device, "kind": kind, "channel": reading.channel,
            "values": reading.values, "ts": reading.ts}
