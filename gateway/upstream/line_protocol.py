"""InfluxDB line protocol, encoded by hand: one string per reading, no Point objects.

Tags are fixed per (device, channel), so their escaped prefix is built once and
reused; only the field values and the timestamp are formatted per reading.
"""

from __future__ import annotations

import math

from gateway.config.loader import DeviceSpec
from gateway.readings import DeviceEvent, Reading

_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": " "})
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "\n": " "})


def escape_tag(text: str) -> str:
    """Escape a tag key, tag value or field key."""
    return text.translate(_TAG_ESCAPES)


class LineEncoder:
    """Turns readings into line-protocol lines for one site."""

    def __init__(self, site_id: str, devices: dict[str, DeviceSpec]):
        self._site = escape_tag(site_id)
        self._devices = devices
        self._prefixes: dict[tuple[str, int | None, str], str] = {}
        self._field_keys: dict[str, str] = {}
        self.skipped_values = 0  # NaN / infinity: line protocol cannot carry them

    def use_devices(self, devices: dict[str, DeviceSpec]) -> None:
        """Tag lines from these specs from now on (a config reload); counters carry on."""
        self._devices = devices
        self._prefixes.clear()

    def prefix(self, device: str, channel: int | None, suffix: str = "") -> str:
        """``measurement,tags `` for a device and channel (cached); ``suffix`` is
        appended to the measurement (``_event`` for device events)."""
        key = (device, channel, suffix)
        prefix = self._prefixes.get(key)
        if prefix is None:
            spec = self._devices.get(device)
            kind = (spec.kind if spec else "unknown") + suffix
            tags = {"site": self._site, "device": escape_tag(device)}
            if spec is not None:
                tags.update({k: escape_tag(str(v)) for k, v in spec.location().items()})
                if channel is not None:
                    tags[escape_tag(spec.channel_name)] = str(channel)
            elif channel is not None:
                tags["channel"] = str(channel)
            # sorted tag keys: what InfluxDB does itself, and cheaper for it
            body = ",".join(f"{k}={v}" for k, v in sorted(tags.items()))
            prefix = self._prefixes[key] = f"{kind.translate(_MEASUREMENT_ESCAPES)},{body} "
        return prefix

    def encode(self, reading: Reading) -> str | None:
        """One line for the reading; None if it has no finite value to carry."""
        keys = self._field_keys
        parts = []
        for name, value in reading.values.items():
            if not math.isfinite(value):
                self.skipped_values += 1
                continue
            key = keys.get(name)
            if key is None:
                key = keys[name] = escape_tag(name)
            parts.append(f"{key}={float(value)!r}")
        if not parts:
            return None
        return f"{self.prefix(reading.device, reading.channel)}{','.join(parts)} {round(reading.ts * 1e6) * 1000}"

    def encode_event(self, event: DeviceEvent) -> str:
        """A device event as a point of ``<kind>_event``, tagged with the event name.

        Numbers become float fields, text becomes string fields (snapshot and clip
        references), and ``count=1`` makes events easy to sum.
        """
        parts = ["count=1.0"]
        for name, value in event.attrs.items():
            key = escape_tag(str(name))
            if isinstance(value, bool) or (isinstance(value, (int, float)) and math.isfinite(value)):
                parts.append(f"{key}={float(value)!r}")
            elif isinstance(value, str):
                text = value.replace("\\", "\\\\").replace('"', '\\"')
                parts.append(f'{key}="{text}"')
        prefix = self.prefix(event.device, event.channel, "_event")
        return f"{prefix[:-1]},event={escape_tag(event.name)} {','.join(parts)} {round(event.ts * 1e6) * 1000}"
