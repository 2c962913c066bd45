"""InfluxDB line protocol, encoded by hand: one string per reading, no Point objects.

Tags are fixed per (device, channel), so their escaped prefix is built once and
reused; only the field values and the timestamp are formatted per reading.

Every string put into a line comes from somewhere we do not control (a room name
in a config, a camera's snapshot reference, a terminal's ``verify`` text), so each
is made safe before it goes in; nothing a device sends can end a line or start
another one:

- characters line protocol cannot carry (control characters, ``\\n`` and ``\\r``
  among them, which end a line; lone surrogates, which are not UTF-8) become
  U+FFFD, so a tampered value stays visible instead of turning into a separator;
- ``\\`` is doubled everywhere, so a value ending in ``\\`` cannot escape the
  separator after it; ``,``, ``=`` and space are escaped in measurement, tag keys,
  tag values and field keys, ``"`` in string fields; a ``"`` in a field key, which
  VictoriaMetrics cannot read whatever the escape, becomes U+FFFD;
- lengths are capped (``MAX_*``), the cut counted in ``LineEncoder.truncated``;
- empty tag values are left out (InfluxDB refuses them); an empty key or
  measurement becomes U+FFFD; a measurement starting with ``#`` (a comment line)
  gets U+FFFD for its ``#``.

InfluxDB and VictoriaMetrics both read ``\\\\`` as ``\\`` and ``\\,``, ``\\=``,
``\\ `` as the character itself, so what goes in comes back out, bar the
replacements above (``tests/test_line_protocol_props.py`` checks it for arbitrary
unicode against a parser written to the spec and against a real VictoriaMetrics).
"""

from __future__ import annotations

import logging
import math
import re

from gateway import json_safe
from gateway.config.loader import DeviceSpec
from gateway.readings import DeviceEvent, Reading

log = logging.getLogger(__name__)

# Longest measurement, field key, tag key, tag value and string field value (in
# characters) that go upstream; longer ones are cut and counted. A snapshot or clip
# reference is a URL: 4096 leaves room for signed query strings. VictoriaMetrics cuts
# label values at its -maxLabelValueLen (16 KiB by default): 256 characters (1 KiB
# of UTF-8 at most) stay well inside it.
MAX_NAME = 128
# VictoriaMetrics cuts a label name at 256 bytes, even inside a UTF-8 sequence:
# 64 characters of at most 4 bytes each always fit.
MAX_TAG_KEY = 64
MAX_TAG_VALUE = 256
MAX_STRING = 4096

REPLACEMENT = "\ufffd"
# C0 and C1 control characters and DEL (\n and \r end a line; the others mean
# nothing in a time series), and surrogates (a lone one cannot be UTF-8 encoded,
# which would fail the whole batch at the sink).
_UNCARRIABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_NAME_ESCAPES = str.maketrans({"\\": "\\\\", ",": "\\,", "=": "\\=", " ": "\\ "})
# A '"' in a field key makes VictoriaMetrics drop the whole line (it takes it for
# the start of a string value), and no escape helps: it becomes U+FFFD there.
_FIELD_KEY_ESCAPES = str.maketrans({"\\": "\\\\", ",": "\\,", "=": "\\=", " ": "\\ ",
                                    '"': REPLACEMENT})
_MEASUREMENT_ESCAPES = str.maketrans({"\\": "\\\\", ",": "\\,", " ": "\\ "})


def clean(text: str, limit: int) -> tuple[str, bool]:
    """``text`` without the characters line protocol cannot carry (each becomes
    U+FFFD), cut to ``limit`` characters; and whether it had to be cut."""
    if _UNCARRIABLE.search(text) is not None:
        text = _UNCARRIABLE.sub(REPLACEMENT, text)
    if len(text) > limit:
        return text[:limit], True
    return text, False


def escape_tag(text: str) -> str:
    """Escape a tag key or tag value (already clean)."""
    return text.translate(_NAME_ESCAPES)


def escape_string(text: str) -> str:
    """The inside of a string field value (already clean): ``\\`` and ``"`` escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


class LineEncoder:
    """Turns readings into line-protocol lines for one site."""

    def __init__(self, site_id: str, devices: dict[str, DeviceSpec]):
        self.skipped_values = 0  # NaN / infinity / out of float range: line protocol cannot carry them
        self.truncated = 0  # strings cut to MAX_NAME / MAX_TAG_VALUE / MAX_STRING
        self._site = site_id
        self._devices = devices
        self._prefixes: dict[tuple[str, int | None, str], str] = {}
        self._field_keys: dict[str, str] = {}
        self._event_tags: dict[str, str] = {}

    def _safe(self, text: str, limit: int) -> str:
        text, cut = clean(text, limit)
        if cut:
            if not self.truncated:
                log.warning("line protocol: a string longer than %d characters was cut; "
                            "counted in community_gateway_line_protocol_values_altered", limit)
            self.truncated += 1
        return text

    def tag_key(self, text: str) -> str:
        """A tag key, cleaned, capped and escaped."""
        return escape_tag(self._safe(text, MAX_TAG_KEY) or REPLACEMENT)

    def field_key(self, text: str) -> str:
        """A field key, cleaned, capped and escaped (a ``"`` becomes U+FFFD)."""
        return (self._safe(text, MAX_NAME) or REPLACEMENT).translate(_FIELD_KEY_ESCAPES)

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
            kind = self._safe((spec.kind if spec else "unknown") + suffix, MAX_NAME) or REPLACEMENT
            if kind.startswith("#"):  # a line starting with '#' is a comment: dropped
                kind = REPLACEMENT + kind[1:]
            tags = {"site": self._site, "device": device}
            if spec is not None:
                tags.update({k: str(v) for k, v in spec.location().items()})
                if channel is not None:
                    tags[spec.channel_name] = str(channel)
            elif channel is not None:
                tags["channel"] = str(channel)
            escaped = {}
            for k, v in tags.items():
                value = self._safe(v, MAX_TAG_VALUE)
                if value:  # InfluxDB refuses an empty tag value; it means "not set"
                    escaped[self.tag_key(k)] = escape_tag(value)
            # sorted tag keys: what InfluxDB does itself, and cheaper for it
            body = "".join(f",{k}={v}" for k, v in sorted(escaped.items()))
            prefix = self._prefixes[key] = f"{kind.translate(_MEASUREMENT_ESCAPES)}{body} "
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
                key = keys[name] = self.field_key(name)
            parts.append(f"{key}={float(value)!r}")
        if not parts:
            return None
        return f"{self.prefix(reading.device, reading.channel)}{','.join(parts)} {round(reading.ts * 1e6) * 1000}"

    def encode_event(self, event: DeviceEvent) -> str:
        """A device event as a point of ``<kind>_event``, tagged with the event name.

        Numbers become float fields, text becomes string fields (snapshot and clip
        references), and ``count=1`` makes events easy to sum. Anything else but
        None is carried as text (lists and dicts as JSON); a number no float can
        hold is skipped and counted in ``skipped_values``.
        """
        parts = ["count=1.0"]
        keys = self._field_keys
        for name, value in event.attrs.items():
            if value is None:
                continue
            key = keys.get(name) if type(name) is str else None
            if key is None:
                key = self.field_key(str(name))
                if type(name) is str:
                    keys[name] = key
            if isinstance(value, (bool, int, float)):
                try:
                    number = float(value)
                except OverflowError:  # a 400-digit integer
                    number = math.inf
                if math.isfinite(number):
                    parts.append(f"{key}={number!r}")
                else:
                    self.skipped_values += 1
                continue
            if not isinstance(value, str):
                value = json_safe.dumps(value) if isinstance(value, (dict, list, tuple)) else str(value)
            text = self._safe(value, MAX_STRING)
            parts.append(f'{key}="{escape_string(text)}"')
        tag = self._event_tags.get(event.name)
        if tag is None:
            tag = self._event_tags[event.name] = escape_tag(
                self._safe(event.name, MAX_TAG_VALUE) or REPLACEMENT)
        prefix = self.prefix(event.device, event.channel, "_event")
        return f"{prefix[:-1]},event={tag} {','.join(parts)} {round(event.ts * 1e6) * 1000}"
