"""A device profile compiled for one device: JSON message in, readings and events out.

Everything that can be worked out once (paths split, codes looked up by text,
the topic filter narrowed to this device) is done in ``MessageMapping.__init__``;
``decode`` then only walks dicts and lists. It never raises on bad input: each
message that cannot be used whole reports why, as a problem kind from
``PROBLEMS`` (counted and logged by the driver), and keeps what it can. Events
especially are kept with whatever attributes arrived: a throw with no floor
estimate is still evidence.
"""

from __future__ import annotations

import json
import math
import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from drivers.mqtt.profile import MqttProfile
from gateway import json_safe
from gateway.readings import DeviceEvent, Reading

# Problem kinds, each counted per device and logged once per state change. Skips
# (other_topic, other_device, duplicate: normal traffic that is not this device's
# or was already seen) are counted only.
PROBLEMS = {
    "too_large": "payload is larger than the profile's max_payload; not parsed",
    "malformed_json": "payload is not JSON (or not UTF-8, or has NaN / Infinity)",
    "not_an_object": "payload is JSON but not an object",
    "no_device_id": "the device id is missing from the message",
    "no_content": "no mapped field and no event code in the message",
    "bad_value": "a field's value (or a numeric event attr) is not a finite number the "
                 "profile can map",
    "bad_timestamp": "the timestamp cannot be read or is implausible; arrival time used",
    "bad_channel": "the channel number is not one of the device's channels (1..count)",
    "unknown_code": "an event code not in the profile's table",
    "missing_attr": "a required event attribute is missing; event kept without it",
}

# A timestamp this far ahead of arrival is a wrong device clock, not a fact.
MAX_AHEAD_S = 120.0
# Older than this is a wrong device clock too (messages held during a gateway
# restart are minutes or hours old, not months).
MAX_AGE_S = 30 * 86400.0
# Event ids remembered for ``once_per``; a start/stop pair is seconds apart.
SEEN_IDS = 4096
# Events of one name on one channel are kept at least this far apart (see _distinct).
EVENT_SPACING_S = 0.001
# Epoch values above this are milliseconds (1e11 s is the year 5138).
_MS_ABOVE = 1e11

Path = tuple[tuple[str, int | None], ...]


def compile_path(text: str) -> Path:
    """``"floor_est.0"`` -> ``(("floor_est", None), ("0", 0))``: key, and list index if numeric."""
    return tuple((part, int(part) if part.isdecimal() else None) for part in text.split("."))


def walk(node: object, path: Path) -> object:
    """The value at ``path`` in a decoded JSON document, or None when absent (or null)."""
    for key, index in path:
        if type(node) is dict:
            node = node.get(key)
        elif type(node) is list and index is not None and index < len(node):
            node = node[index]
        else:
            return None
        if node is None:
            return None
    return node


def parse_timestamp(value: object) -> float | None:
    """Seconds since the epoch from epoch seconds, epoch milliseconds or ISO 8601.

    ISO times without a zone are taken as UTC. None when it cannot be read.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            try:
                dt = datetime.fromisoformat(value.strip())
            except ValueError:
                return None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
            try:
                return dt.timestamp()
            except (ValueError, OverflowError):  # year 1 with a zone east of UTC
                return None
    if isinstance(value, (int, float)):
        seconds = as_float(value)  # a 400-digit integer is no time either
        if seconds is not None and seconds > 0:
            return seconds / 1000.0 if seconds > _MS_ABOVE else seconds
    return None


def code_key(value: object) -> str | None:
    """The text an event code is looked up by: ``1``, ``1.0`` and ``"1"`` are all ``"1"``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, str):
        return value.strip()
    return None


def identifier_text(value: object) -> str:
    """The text an identifier is hashed as: card ``12345678`` and ``"12345678"`` agree."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value.strip() if isinstance(value, str) else str(value)


def as_float(value: object) -> float | None:
    """A JSON number (or numeric text) as a finite float; None when it is not one.

    A 400-digit integer is valid JSON and a valid Python int, but no float:
    ``float()`` raises OverflowError for it, which must cost that field only.
    """
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _attr_value(value: object) -> object:
    """An event attribute as a scalar: nested JSON as its text; None for a number
    no float can hold (1e400, a 400-digit integer)."""
    if isinstance(value, (str, bool)):
        return value
    if isinstance(value, (int, float)):
        return value if as_float(value) is not None else None
    return json_safe.dumps(value)


class NotJsonNumber(ValueError):
    """``NaN``, ``Infinity`` or ``-Infinity`` in a payload: Python reads them, JSON has no such thing."""

    def __init__(self, token: str):
        super().__init__(token)
        self.msg = f"{token} is not a JSON number"


def _refuse_constant(token: str) -> object:
    raise NotJsonNumber(token)


def _long_int(digits: str) -> object:
    # Past Python's int-conversion limit (sys.get_int_max_str_digits, 4300 by
    # default) int() refuses; as a float it is infinite, which costs that field only.
    if len(digits.lstrip("-")) < sys.get_int_max_str_digits():
        return int(digits)
    return float(digits)


# Built once: json.loads with keyword arguments builds a decoder per call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
# Only for the rare message with an integer too long for int() (see _long_int).
_LONG_INT_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_int=_long_int)


def parse_json(payload: bytes | bytearray | str) -> object:
    """A device's JSON document. Raises ValueError (NotJsonNumber for NaN / Infinity),
    UnicodeDecodeError or RecursionError."""
    text = payload if isinstance(payload, str) else \
        bytes(payload).decode(json.detect_encoding(payload), "surrogatepass")
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError:
        raise
    except NotJsonNumber:
        raise
    except ValueError:  # an integer longer than int() takes
        return _LONG_INT_DECODER.decode(text)


@dataclass(slots=True)
class Decoded:
    """What one message gave: items to emit, problems to count, skips to count."""

    items: list[Reading | DeviceEvent] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    skip: str | None = None


class MessageMapping:
    """One device's compiled mapping.

    ``source`` is the id the device uses on the wire (a topic level or a payload
    field); ``pseudonymise`` turns a raw identifier into its pseudonym (required
    when the profile lists attrs to pseudonymise). ``channel_count`` is the
    device's number of channels (default: the profile's); a channel number above
    it is refused like a malformed one, so a broken terminal cannot make the
    rules keep state for door 4,000,000.
    """

    def __init__(self, *, profile: MqttProfile, device_id: str, source: str,
                 pseudonymise: Callable[[str], str] | None = None,
                 channel_count: int | None = None):
        self.profile = profile
        self.device_id = device_id
        self.source = source
        levels = profile.topic.split("/")
        self.topic_filter = profile.topic
        self._id_path: Path | None = None
        if profile.device_id is not None:
            if profile.device_id.topic_segment is not None:
                # subscribe to this device's messages only
                levels[profile.device_id.topic_segment] = source
                self.topic_filter = "/".join(levels)
            else:
                self._id_path = compile_path(profile.device_id.path or "")
        self._levels = tuple(self.topic_filter.split("/"))
        self.max_payload = profile.max_payload
        self._ts_path = compile_path(profile.timestamp) if profile.timestamp else None
        self._channel_path = compile_path(profile.channels.path) if profile.channels else None
        self._channel_count = (channel_count or profile.channels.count) if profile.channels else 0
        self._fields = tuple((name, compile_path(f.path), f.map, f.scale)
                             for name, f in profile.fields.items())
        ev = profile.events
        # One path, or several whose values are joined by ':' (ISAPI's major and minor).
        self._code_paths = tuple(compile_path(p) for p in (
            [ev.path] if isinstance(ev.path, str) else ev.path)) if ev else ()
        self._codes = {k: (c.event, dict(c.attrs)) for k, c in ev.codes.items()} if ev else {}
        self._no_event = frozenset(str(c) for c in ev.no_event) if ev else frozenset()
        self._attrs = tuple(
            (name, tuple(compile_path(p) for p in ([paths] if isinstance(paths, str) else paths)))
            for name, paths in (ev.attrs.items() if ev else ()))
        self._required = tuple(ev.required) if ev else ()
        self._code_attr = ev.code_attr if ev else None
        self._once_path = compile_path(ev.once_per) if ev and ev.once_per else None
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._last_event_ts: dict[tuple[int | None, str], float] = {}
        self._secret_attrs = tuple(profile.pseudonymise)
        if self._secret_attrs and pseudonymise is None:
            raise ValueError(f"{device_id}: profile pseudonymises {list(self._secret_attrs)} "
                             "but no pseudonymiser was given")
        self._pseudonymise = pseudonymise

    def matches_topic(self, topic: str) -> bool:
        """Whether a topic is under this device's subscription filter."""
        levels = topic.split("/")
        want = self._levels
        for i, w in enumerate(want):
            if w == "#":
                return True
            if i >= len(levels) or (w != "+" and w != levels[i]):
                return False
        return len(levels) == len(want)

    def decode(self, topic: str, payload: bytes, arrival: float) -> Decoded:
        """Map one message; never raises on bad input."""
        out = Decoded()
        if not self.matches_topic(topic):
            out.skip = "other_topic"
            return out
        size = len(payload)
        if size > self.max_payload:
            out.problems.append(("too_large", f"{size} bytes, more than {self.max_payload}"))
            return out
        try:
            doc = parse_json(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            # the parser's position, never the payload: it may hold a card number
            out.problems.append(("malformed_json", getattr(exc, "msg", type(exc).__name__)))
            return out
        except RecursionError:
            out.problems.append(("malformed_json", "nested too deeply"))
            return out
        if type(doc) is not dict:
            out.problems.append(("not_an_object", f"got JSON {type(doc).__name__}"))
            return out
        if self._id_path is not None:
            ident = walk(doc, self._id_path)
            if ident is None:
                out.problems.append(("no_device_id", f"no {self.profile.device_id.path!r}"))  # type: ignore[union-attr]
                return out
            if str(ident) != self.source:
                out.skip = "other_device"
                return out
        ts = self._timestamp(doc, arrival, out)
        channel = self._channel(doc, out)
        values = self._values(doc, out)
        if values:
            out.items.append(Reading(self.device_id, channel, values, ts))
        event = self._event(doc, channel, ts, out) if self._code_paths else None
        if event is not None:
            out.items.append(event)
        elif not values and not out.problems and out.skip is None:
            out.problems.append(("no_content", "none of the mapped fields or the event code"))
        return out

    def _distinct(self, channel: int | None, name: str, ts: float) -> float:
        """``ts``, moved 1 ms past the previous event of this name and channel if not later.

        A time-series point is measurement + tags + timestamp (milliseconds in
        VictoriaMetrics): two denials at one door stamped in the same second or
        millisecond would otherwise overwrite each other upstream.
        """
        key = (channel, name)
        last = self._last_event_ts.get(key)
        if last is not None and ts < last + EVENT_SPACING_S:
            ts = last + EVENT_SPACING_S
        self._last_event_ts[key] = ts
        return ts

    def _timestamp(self, doc: dict, arrival: float, out: Decoded) -> float:
        if self._ts_path is None:
            return arrival
        raw = walk(doc, self._ts_path)
        if raw is None:
            return arrival
        ts = parse_timestamp(raw)
        if ts is None:
            out.problems.append(("bad_timestamp", f"cannot read {type(raw).__name__} "
                                                  f"{self.profile.timestamp!r} as a time"))
            return arrival
        if ts - arrival > MAX_AHEAD_S or arrival - ts > MAX_AGE_S:
            out.problems.append(("bad_timestamp", f"device time is {ts - arrival:+.0f}s off"))
            return arrival
        return ts

    def _channel(self, doc: dict, out: Decoded) -> int | None:
        if self._channel_path is None:
            return None
        raw = walk(doc, self._channel_path)
        if raw is None:
            return None
        if isinstance(raw, str) and raw.strip().isdecimal():  # "²" is a digit int() refuses
            raw = int(raw)
        if type(raw) is float and raw.is_integer():
            raw = int(raw)
        if type(raw) is int and 1 <= raw <= self._channel_count:
            return raw
        out.problems.append(("bad_channel", f"{self.profile.channels.path!r} is not a channel "  # type: ignore[union-attr]
                                            f"number 1..{self._channel_count}"))
        return None

    def _values(self, doc: dict, out: Decoded) -> dict[str, float]:
        values: dict[str, float] = {}
        for name, path, table, scale in self._fields:
            raw = walk(doc, path)
            if raw is None:
                continue
            if table is not None and isinstance(raw, str) and raw in table:
                values[name] = table[raw]
                continue
            if isinstance(raw, bool):
                values[name] = 1.0 if raw else 0.0
                continue
            number = as_float(raw)
            if number is not None and math.isfinite(number := number * scale):
                values[name] = number
            else:
                out.problems.append(("bad_value", f"field {name}: not a finite number or a "
                                                  "mapped text"))
        return values

    def _event(self, doc: dict, channel: int | None, ts: float, out: Decoded) -> DeviceEvent | None:
        parts = [walk(doc, path) for path in self._code_paths]
        if all(raw is None for raw in parts):
            return None
        keys = [code_key(raw) for raw in parts]
        key = None if None in keys else ":".join(keys)  # type: ignore[arg-type]
        entry = self._codes.get(key) if key is not None else None
        if entry is None and key in self._no_event:
            return None  # a heartbeat: its fields are the message's point
        if entry is None:
            out.problems.append(("unknown_code", f"code {key!r} is not in the profile's table"
                                 if key is not None else "a part of the event code is missing"))
            return None
        if self._once_path is not None:
            once = walk(doc, self._once_path)
            if once is not None:
                once_key = str(once)
                if once_key in self._seen:
                    out.skip = "duplicate"
                    return None
                self._seen[once_key] = None
                if len(self._seen) > SEEN_IDS:
                    self._seen.popitem(last=False)
        name, constants = entry
        ts = self._distinct(channel, name, ts)
        attrs: dict[str, object] = {}
        if self._code_attr is not None:
            attrs[self._code_attr] = int(key) if key.isdecimal() else key
        for attr, paths in self._attrs:
            for path in paths:
                value = walk(doc, path)
                if value is not None:
                    value = _attr_value(value)
                    if value is None:
                        out.problems.append(("bad_value", f"event {name}: {attr!r} is a number "
                                                          "out of range"))
                    else:
                        attrs[attr] = value
                    break
        attrs.update(constants)
        for attr in self._required:
            if attr not in attrs:
                out.problems.append(("missing_attr", f"event {name}: no {attr!r}"))
        if self._pseudonymise is not None:
            for attr in self._secret_attrs:
                value = attrs.get(attr)
                if value is not None:
                    attrs[attr] = self._pseudonymise(identifier_text(value))
        return DeviceEvent(self.device_id, channel, name, ts, attrs)
