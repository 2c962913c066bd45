"""Properties of the line encoder and the MQTT JSON mapping, for arbitrary input.

Every tag (site, device, location, channel name, measurement, event name), field key
and string field is arbitrary unicode, surrogates and control characters included;
every encoded reading or event must be exactly one line that reads back to the same
values under the rules of ``gateway/upstream/line_protocol.py`` (uncarriable
characters become U+FFFD, long strings are cut). Read back twice:

- by ``line_protocol_spec.parse_line``, written to the InfluxDB spec: everything,
  string fields included (VictoriaMetrics keeps no strings, so only a parser can
  check their text);
- by a real VictoriaMetrics: tags and numeric fields (and that each string field
  is framed right: it becomes a 0 sample of its own series, the fields after it
  read back whole, and nothing else appears).

The default run tries a few hundred cases; the ``slow`` tests try 100,000 each
(``bash scripts/test.sh -m slow tests/test_line_protocol_props.py``; 15-20 minutes each on a
busy 2-core machine).
"""

from __future__ import annotations

import itertools
import json
import math
import time
import urllib.parse
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from drivers.mqtt.mapping import PROBLEMS, MessageMapping
from drivers.mqtt.profile import MqttProfile
from drivers.mqtt.pseudonym import Pseudonymiser
from gateway import json_safe
from gateway.config.base import Location
from gateway.config.loader import DeviceSpec
from gateway.readings import DeviceEvent, Reading
from gateway.upstream.line_protocol import LineEncoder
from gateway.upstream.telemetry_json import TelemetryEncoder
from line_protocol_spec import (MAX_STRING, MAX_TAG_VALUE, REPLACEMENT, expected_field_key, expected_measurement, expected_tags,
                                expected_text, parse_line)

DEFAULT = settings(max_examples=300, deadline=None)
SLOW = settings(max_examples=100_000, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# What line protocol gives meaning to, what ends a line, what is not UTF-8: often,
# among every other code point (surrogates included).
SPECIAL = st.sampled_from(list('\\,= "\n\r\t#\x00\x1b\x7f\x85\u2028\ufeff\ud800\udfff'))
CHARS = st.one_of(SPECIAL, st.characters(exclude_categories=()))
SHORT = st.text(CHARS, max_size=12)


def _long(low: int, high: int) -> st.SearchStrategy[str]:
    # a short random piece repeated: long strings without drawing every character
    return st.builds(lambda piece, n: (piece * (high // len(piece) + 1))[:n],
                     st.text(CHARS, min_size=1, max_size=8), st.integers(low, high))


# a quarter of the strings are around or past the caps (128 for names, 256 for tag values)
TEXT = st.one_of(SHORT, SHORT, SHORT, _long(100, 300))
LONG_STRING = _long(MAX_STRING - 5, MAX_STRING + 50)
NUMBER = st.one_of(st.floats(), st.integers(),
                   st.integers(min_value=10**300, max_value=10**500).map(lambda n: -n if n % 2 else n))
ATTR = st.one_of(st.none(), st.booleans(), NUMBER, TEXT, LONG_STRING)

SKIPS = ("other_topic", "other_device", "duplicate")  # normal traffic, not this device's
FIXED_TAGS = ("site", "device", "building", "unit", "floor", "room", "event")


@st.composite
def sources(draw):
    """(encoder, device id, channel, raw tags the prefix must carry)."""
    site, device, kind = draw(TEXT), draw(TEXT), draw(TEXT)
    location = draw(st.fixed_dictionaries({}, optional={k: TEXT for k in FIXED_TAGS[2:6]}))
    channel_name = draw(TEXT.filter(lambda n: n not in FIXED_TAGS))
    channel = draw(st.none() | st.integers(1, 256))
    known = draw(st.booleans())
    raw = {"site": site, "device": device}
    devices = {}
    if known:
        config = SimpleNamespace(id=device, location=Location.model_construct(**location))
        devices[device] = DeviceSpec(config, kind, channel_name, 256, frozenset(), frozenset())
        raw.update(location)
        if channel is not None:
            raw[channel_name] = str(channel)
    elif channel is not None:
        raw["channel"] = str(channel)
    return LineEncoder(site, devices), device, channel, raw, kind if known else "unknown"


def expected_number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def check_reading(source, values: dict[str, float], ts: float) -> tuple[str, list] | None:
    encoder, device, channel, raw, kind = source
    line = encoder.encode(Reading(device, channel, values, ts))
    want = [(expected_field_key(k), float(v)) for k, v in values.items() if math.isfinite(v)]
    if not want:
        assert line is None
        return None
    point = parse_line(line)
    assert point.measurement == expected_measurement(kind)
    assert point.tags == expected_tags(raw)
    assert point.fields == want
    assert point.ts == round(ts * 1e6) * 1000
    return line, want


def check_event(source, name: str, attrs: dict[str, object], ts: float) -> tuple[str, list]:
    encoder, device, channel, raw, kind = source
    line = encoder.encode_event(DeviceEvent(device, channel, name, ts, attrs))
    want: list[tuple[str, float | str]] = [("count", 1.0)]
    for k, v in attrs.items():
        if v is None:
            continue
        if isinstance(v, str):
            want.append((expected_field_key(k), expected_text(v, MAX_STRING)))
        elif (number := expected_number(v)) is not None:
            want.append((expected_field_key(k), number))
    point = parse_line(line)
    assert point.measurement == expected_measurement(kind + "_event")
    assert point.tags == {**expected_tags(raw),
                          "event": expected_text(name, MAX_TAG_VALUE) or REPLACEMENT}
    assert point.fields == want
    return line, want


READING = st.tuples(sources(), st.dictionaries(TEXT, st.floats(), max_size=6))
EVENT = st.tuples(sources(), TEXT, st.dictionaries(TEXT, ATTR, max_size=6))
TS = st.floats(min_value=0, max_value=4e9)


@DEFAULT
@given(READING, TS)
def test_every_reading_is_one_line_that_reads_back(case, ts) -> None:
    check_reading(case[0], case[1], ts)


@DEFAULT
@given(EVENT, TS)
def test_every_event_is_one_line_that_reads_back(case, ts) -> None:
    check_event(case[0], case[1], case[2], ts)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 100,000 cases take minutes, not the default 120 s
@SLOW
@given(READING, TS)
def test_every_reading_is_one_line_that_reads_back_100k(case, ts) -> None:
    check_reading(case[0], case[1], ts)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 100,000 cases take minutes, not the default 120 s
@SLOW
@given(EVENT, TS)
def test_every_event_is_one_line_that_reads_back_100k(case, ts) -> None:
    check_event(case[0], case[1], case[2], ts)


# -- the same lines through a real VictoriaMetrics ------------------------------------------

_serial = itertools.count()
_BASE_S = int(time.time()) - 86400  # inside VictoriaMetrics' window, one ms per line apart
VM_FLOAT = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False).map(lambda x: round(x, 3))
# VictoriaMetrics stores a string field as the number its text spells ("inf" as +Inf,
# which its own export then writes as invalid JSON), else 0: string values here never
# spell one, so each is a 0 sample (the spec parser above reads every string back).
VM_TEXT = TEXT.map(lambda text: "s:" + text)


def _vm_samples(measurement: str, tags: dict[str, str], fields: list) -> set | None:
    """The samples VictoriaMetrics should hold for a line: ``{measurement}_{field}``
    with the tags as labels; a string field as 0. None if two fields share a key
    (two samples of one series at one instant: which one stays is VictoriaMetrics's
    choice, not the encoder's)."""
    keys = [k for k, _ in fields]
    if len(set(keys)) < len(keys):
        return None
    labels = tuple(sorted(tags.items()))
    return {(f"{measurement}_{k}", labels, 0.0 if isinstance(v, str) else v) for k, v in fields}


@settings(max_examples=20, deadline=None, phases=(Phase.explicit, Phase.reuse, Phase.generate),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(st.lists(st.tuples(sources(), st.dictionaries(TEXT, VM_FLOAT, min_size=1, max_size=4)),
                min_size=15, max_size=15),
       st.lists(st.tuples(sources(), TEXT,
                          st.dictionaries(TEXT, st.one_of(VM_TEXT, VM_FLOAT, st.booleans()),
                                          max_size=4)),
                min_size=15, max_size=15))
def test_victoria_metrics_reads_back_tags_and_numbers(victoria, readings, events) -> None:
    lines, want = [], {}
    for source, values in readings:
        ms = _BASE_S * 1000 + next(_serial)
        line, fields = check_reading(source, values, ms / 1000)
        point = parse_line(line)
        samples = _vm_samples(point.measurement, point.tags, fields)
        if samples is not None:
            lines.append(line)
            want[ms] = samples
    for source, name, attrs in events:
        ms = _BASE_S * 1000 + next(_serial)
        line, fields = check_event(source, name, attrs, ms / 1000)
        point = parse_line(line)
        samples = _vm_samples(point.measurement, point.tags, fields)
        if samples is not None:
            lines.append(line)
            want[ms] = samples
    victoria.write_lines(lines)
    got: dict[int, set] = {ms: set() for ms in want}
    for series in _export_all(victoria):
        labels = dict(series["metric"])
        name = labels.pop("__name__")
        for value, ms in zip(series["values"], series["timestamps"]):
            if ms in got:
                got[ms].add((name, tuple(sorted(labels.items())), value))
    for ms, samples in want.items():
        assert _rounded(got[ms]) == _rounded(samples), f"line at {ms} ms read back differently"


def _export_all(victoria) -> list[dict]:
    # VictoriaMetrics.export() splits with str.splitlines(), which also splits at
    # U+2028, U+0085 ... inside label values: one JSON document per "\n" here.
    victoria.flush()
    body = victoria._request("/api/v1/export?" + urllib.parse.urlencode(
        {"match[]": '{__name__=~".+"}'}))
    return [json.loads(line) for line in body.decode().split("\n") if line.strip()]


def _rounded(samples: set) -> set:
    # VictoriaMetrics stores values as decimal mantissa and exponent: compare at 9 digits
    return {(n, labels, float(f"{v:.9g}")) for n, labels, v in samples}


# -- the MQTT JSON mapping: any payload, never an exception, only carriable output --------

TERMINAL = MqttProfile.model_validate({
    "kind": "door_access", "topic": "access/+/events", "device_id": {"topic_segment": 1},
    "timestamp": "time", "channels": {"name": "door", "count": 2, "path": "door"},
    "fields": {"uptime": "uptime", "state": {"path": "state", "map": {"open": 1, "closed": 0}}},
    "events": {"path": "code", "codes": {"1": "granted", "6": "denied", "x": "tamper"},
               "attrs": {"card": "card_no", "verify": "verify", "floor": ["floor.0", "floor"],
                         "detail": "detail"},
               "required": ["card"], "once_per": "id"},
    "pseudonymise": ["card"], "max_payload": 4096,
})
KEYS = st.sampled_from(["time", "door", "uptime", "state", "code", "card_no", "verify", "floor",
                        "detail", "id", "other"])
JSON_SCALAR = st.one_of(st.none(), st.booleans(), NUMBER, TEXT,
                        st.sampled_from(["1", "6", "x", "open", "closed", "2024-05-01T08:15:30Z"]))
JSON_VALUE = st.recursive(JSON_SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.one_of(KEYS, SHORT), inner, max_size=3)),
    max_leaves=8)
DOC = st.dictionaries(st.one_of(KEYS, SHORT), JSON_VALUE, max_size=8)
NON_FINITE = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"])


def _payload(draw) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=300))
    doc = draw(DOC)
    text = json.dumps(doc, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if kind == 2 and doc:  # a bare NaN / Infinity / out-of-range number in place of a value
        key = draw(st.sampled_from(sorted(doc)))
        text = json.dumps({**doc, key: "@@"}).encode("utf-8", "surrogatepass").replace(
            b'"@@"', draw(NON_FINITE))
    if kind == 3:
        text += b" " * draw(st.integers(4096 - len(text) - 2, 4096 - len(text) + 2))
    return text


payloads = st.composite(_payload)


def check_mapping(payload: bytes) -> None:
    mapping = MessageMapping(profile=TERMINAL, device_id="door-1", source="T1",
                             pseudonymise=Pseudonymiser(key="k" * 32), channel_count=2)
    out = mapping.decode("access/T1/events", payload, 1_714_551_330.0)
    assert all(kind in PROBLEMS for kind, _ in out.problems)
    assert out.skip is None or out.skip in SKIPS
    if len(payload) > TERMINAL.max_payload:
        assert [k for k, _ in out.problems] == ["too_large"] and not out.items
    constants: list[str] = []
    try:  # Python's own reading, which takes NaN and Infinity
        json.loads(payload, parse_constant=lambda token: constants.append(token) or 0.0)
    except (ValueError, RecursionError):
        pass
    if constants and len(payload) <= TERMINAL.max_payload:
        assert [k for k, _ in out.problems] == ["malformed_json"] and not out.items
    encoder, telemetry = LineEncoder("s", {}), TelemetryEncoder()
    for item in out.items:
        if isinstance(item, Reading):
            assert all(type(v) is float and math.isfinite(v) for v in item.values.values())
            line = encoder.encode(item)
            doc = telemetry.reading(item)
        else:
            for value in item.attrs.values():
                assert isinstance(value, (str, bool, int, float))
                if isinstance(value, (int, float)):
                    assert math.isfinite(float(value))
            line = encoder.encode_event(item)
            doc = telemetry.event(item)
        if line is not None:
            parse_line(line)
        json.loads(doc, parse_constant=_strict)
        json.loads(json_safe.dumps(item.attrs if isinstance(item, DeviceEvent) else item.values),
                   parse_constant=_strict)


def _strict(token: str) -> None:
    raise AssertionError(f"{token} written into JSON")


@DEFAULT
@given(payloads())
def test_no_payload_breaks_the_mapping_or_what_follows(payload) -> None:
    check_mapping(payload)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 100,000 cases take minutes, not the default 120 s
@SLOW
@given(payloads())
def test_no_payload_breaks_the_mapping_or_what_follows_100k(payload) -> None:
    check_mapping(payload)
