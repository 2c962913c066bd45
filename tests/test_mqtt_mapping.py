"""MQTT message mapping: profiles compiled once, JSON walked per message, bad input counted."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.mqtt.device import MqttDeviceSource
from drivers.mqtt.mapping import MessageMapping, compile_path, parse_timestamp, walk
from drivers.mqtt.profile import MqttProfile
from drivers.mqtt.pseudonym import Pseudonymiser, RawValueLog
from gateway.clock import FakeClock
from gateway.readings import DeviceEvent, Reading

PROFILES = Path(__file__).resolve().parent.parent / "configs" / "profiles"
KEY = "k" * 32
NOW = 1_714_551_330.0  # 2024-05-01T08:15:30Z


def profile(name: str) -> MqttProfile:
    return MqttProfile.model_validate(yaml.safe_load((PROFILES / f"{name}.yaml").read_text()))


def terminal(source: str = "T3E-01") -> MessageMapping:
    # two doors, as configs/example-site.yaml sets up its terminal
    return MessageMapping(profile=profile("access-terminal"), device_id="door-b3", source=source,
                          pseudonymise=Pseudonymiser(key=KEY), channel_count=2)


def camera(source: str = "cam-b5-east") -> MessageMapping:
    return MessageMapping(profile=profile("thrown-object-camera"), device_id="cam-5e", source=source)


def msg(**doc) -> bytes:
    return json.dumps(doc).encode()


def test_paths_walk_dicts_and_lists() -> None:
    doc = {"a": {"b": [10, {"c": "x"}]}, "n": None}
    assert walk(doc, compile_path("a.b.0")) == 10
    assert walk(doc, compile_path("a.b.1.c")) == "x"
    assert walk(doc, compile_path("a.b.2")) is None
    assert walk(doc, compile_path("a.x.y")) is None
    assert walk(doc, compile_path("n")) is None
    assert walk({"0": "key"}, compile_path("0")) == "key"


@pytest.mark.parametrize("raw, expected", [
    ("2024-05-01T08:15:30Z", NOW),
    ("2024-05-01T16:15:30+08:00", NOW),
    ("2024-05-01T08:15:30.250", NOW + 0.25),  # no zone: UTC
    (NOW, NOW),
    (int(NOW * 1000), NOW),
    (str(NOW), NOW),
    ("yesterday", None),
    (True, None),
    (-5, None),
])
def test_timestamps(raw, expected) -> None:
    got = parse_timestamp(raw)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_terminal_grant_becomes_event_with_pseudonymised_card() -> None:
    m = terminal()
    assert m.topic_filter == "access/T3E-01/events"
    out = m.decode("access/T3E-01/events", msg(time="2024-05-01T08:15:30Z", door=2, code=1,
                                                 card_no="12345678", person_id="P0042"), NOW + 3)
    assert not out.problems
    [event] = out.items
    assert isinstance(event, DeviceEvent)
    assert (event.device, event.channel, event.name, event.ts) == ("door-b3", 2, "granted", NOW)
    expected = hmac.new(KEY.encode(), b"12345678", hashlib.sha256).hexdigest()[:16]
    assert event.attrs == {"code": 1, "method": "card", "card": expected,
                           "person": hmac.new(KEY.encode(), b"P0042", hashlib.sha256).hexdigest()[:16]}


def test_card_as_number_or_text_gets_one_pseudonym() -> None:
    m = terminal()
    cards = []
    for card in (12345678, "12345678", 12345678.0):
        [e] = m.decode("access/T3E-01/events", msg(code=6, card_no=card), NOW).items
        cards.append(e.attrs["card"])
    assert len(set(cards)) == 1 and "12345678" not in cards[0]


def test_denial_reason_and_string_codes() -> None:
    m = terminal()
    [denied] = m.decode("access/T3E-01/events", msg(code="7", door=1), NOW).items
    assert denied.name == "denied" and denied.attrs == {"code": 7, "reason": "wrong_pin"}
    [tamper] = m.decode("access/T3E-01/events", msg(code="tamper"), NOW).items
    assert tamper.name == "tamper" and tamper.channel is None


def test_heartbeat_is_a_reading_and_arrival_time_when_no_timestamp() -> None:
    out = terminal().decode("access/T3E-01/events", msg(type="heartbeat", uptime=86400), NOW)
    assert out.items == [Reading("door-b3", None, {"uptime": 86400.0}, NOW)] and not out.problems


@pytest.mark.parametrize("payload, kind", [
    (b"{\"code\": 1", "malformed_json"),
    (b"\xff\xfe", "malformed_json"),
    (b"[1, 2]", "not_an_object"),
    (b"[" * 60_000, "malformed_json"),  # nested too deeply (and under max_payload)
    (msg(time="2024-05-01T08:15:30Z"), "no_content"),
    (msg(code=99), "unknown_code"),
    (msg(code=1, time="not a time"), "bad_timestamp"),
    (msg(code=1, door="front"), "bad_channel"),
    (msg(code=1, door=3), "bad_channel"),  # the terminal serves two doors
    (msg(code=34, door="²"), "bad_channel"),  # a digit int() refuses: the duress is kept
    (msg(uptime="long"), "bad_value"),
    (msg(code=1, time=NOW + 3600), "bad_timestamp"),  # a device clock an hour ahead
])
def test_bad_messages_name_their_problem(payload: bytes, kind: str) -> None:
    out = terminal().decode("access/T3E-01/events", payload, NOW)
    assert [k for k, _ in out.problems] == [kind]


def test_channel_numbers_beyond_the_device_are_refused() -> None:
    # rule state is kept per (device, channel): a broken terminal must not grow it
    m = terminal()
    [second] = m.decode("access/T3E-01/events", msg(code=6, door=2), NOW).items
    assert second.channel == 2
    one_door = MessageMapping(profile=profile("access-terminal"), device_id="door-b3",
                              source="T3E-01", pseudonymise=Pseudonymiser(key=KEY))
    assert [k for k, _ in one_door.decode("access/T3E-01/events", msg(code=6, door=2),
                                          NOW).problems] == ["bad_channel"]
    out = m.decode("access/T3E-01/events", msg(code=6, door=4_000_000), NOW)
    assert [k for k, _ in out.problems] == ["bad_channel"] and out.items[0].channel is None


def test_problem_details_never_quote_the_payload() -> None:
    out = terminal().decode("access/T3E-01/events", b'{"card_no": "12345678", "code": ', NOW)
    assert "12345678" not in repr(out.problems)


def test_topic_filter_and_payload_device_ids() -> None:
    assert terminal().decode("access/OTHER/events", msg(code=1), NOW).skip == "other_topic"
    cam = camera()
    assert cam.topic_filter == "thrown-objects/events"
    assert cam.decode("thrown-objects/events", msg(camera="cam-b3-west", state="start"),
                      NOW).skip == "other_device"
    out = cam.decode("thrown-objects/events", msg(state="start"), NOW)
    assert [k for k, _ in out.problems] == ["no_device_id"]


def throw(state: str, **extra) -> bytes:
    doc = {"event_id": "e-17", "state": state, "ts": "2024-05-01T08:15:30Z", "camera": "cam-b5-east",
           "building": "5", "facade": "east", "floor_est": [11, 13], "confidence": 0.92,
           "snapshot": "http://nvr/snap/e-17.jpg", "clip": "http://nvr/clip/e-17.mp4"}
    doc.update(extra)
    return json.dumps(doc).encode()


def test_throw_start_and_stop_make_one_event_with_its_evidence() -> None:
    cam = camera()
    [event] = cam.decode("thrown-objects/events", throw("start"), NOW + 1).items
    assert event.name == "throw" and event.ts == NOW and event.channel is None
    assert event.attrs == {"pulse": "start", "event_id": "e-17", "building": "5", "facade": "east",
                           "floor_low": 11, "floor_high": 13, "confidence": 0.92,
                           "snapshot": "http://nvr/snap/e-17.jpg", "clip": "http://nvr/clip/e-17.mp4"}
    stop = cam.decode("thrown-objects/events", throw("stop"), NOW + 2)
    assert stop.items == [] and stop.skip == "duplicate" and not stop.problems
    # a stop whose start was never seen still reports the throw
    [late] = cam.decode("thrown-objects/events", throw("stop", event_id="e-18"), NOW + 2).items
    assert late.attrs["pulse"] == "stop"


def test_throw_with_one_floor_and_missing_clip_is_kept_and_counted() -> None:
    doc = json.loads(throw("start"))
    doc.pop("floor_est")
    doc.pop("clip")
    doc["floor"] = 12
    out = camera().decode("thrown-objects/events", json.dumps(doc).encode(), NOW)
    [event] = out.items
    assert event.attrs["floor_low"] == event.attrs["floor_high"] == 12
    assert out.problems == [("missing_attr", "event throw: no 'clip'")]


def test_value_maps_and_scales() -> None:
    p = MqttProfile.model_validate({
        "kind": "door_access", "topic": "doors/#",
        "fields": {"door_open": {"path": "state", "map": {"open": 1, "closed": 0}},
                   "battery": {"path": "bat.mv", "scale": 0.001}, "alarm": "alarm"}})
    m = MessageMapping(profile=p, device_id="d", source="d")
    out = m.decode("doors/x/y", msg(state="open", bat={"mv": 3012}, alarm=True), NOW)
    assert out.items[0].values == {"door_open": 1.0, "battery": pytest.approx(3.012), "alarm": 1.0}
    assert [k for k, _ in m.decode("doors/x", msg(state="ajar"), NOW).problems] == ["bad_value"]


@pytest.mark.parametrize("change, message", [
    ({"topic": "a/+x/b"}, "'+' must be a whole level"),
    ({"topic": "a/#/b"}, "'#' the last one"),
    ({"device_id": {"topic_segment": 2}}, "must point at a '+' level"),
    ({"device_id": {"topic_segment": 1, "path": "id"}}, "exactly one"),
    ({"pseudonymise": ["cardd"]}, "not an event attr"),
    ({"fields": {}, "events": None}, "needs 'fields' or 'events'"),
])
def test_profile_mistakes_are_explained(change: dict, message: str) -> None:
    raw = yaml.safe_load((PROFILES / "access-terminal.yaml").read_text())
    raw.update(change)
    with pytest.raises(ValidationError, match=message.replace("'", ".").replace("+", r"\+")):
        MqttProfile.model_validate(raw)


def test_pseudonymiser_needs_a_real_key() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        Pseudonymiser(key="short")


async def test_raw_values_stay_in_a_private_local_file_once_each(tmp_path: Path) -> None:
    log = RawValueLog(tmp_path / "raw.jsonl")
    p = Pseudonymiser(key=KEY, raw_log=log)
    a = p("12345678")
    p("12345678")
    await log.flush()
    again = RawValueLog(tmp_path / "raw.jsonl")  # a restart: known pseudonyms are not repeated
    Pseudonymiser(key=KEY, raw_log=again)("12345678")
    await again.flush()
    lines = [json.loads(line) for line in (tmp_path / "raw.jsonl").read_text().splitlines()]
    assert [(x["pseudonym"], x["value"]) for x in lines] == [(a, "12345678")]
    assert (tmp_path / "raw.jsonl").stat().st_mode & 0o077 == 0


def test_driver_counts_and_logs_once_per_state_change(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(NOW)
    src = MqttDeviceSource(device_id="door-b3", mapping=terminal(), host="127.0.0.1", port=1,
                           client_id="c", clock=clock)
    topic = "access/T3E-01/events"
    with caplog.at_level(logging.INFO, logger="drivers.mqtt"):
        for _ in range(50):
            assert src.handle(topic, b"{broken") == []
            assert len(src.handle(topic, msg(code=1, door=1))) == 1
            clock.advance(1)
        clock.advance(400)
        src.handle(topic, msg(code=1, door=1))
    assert src.stats["malformed_json"] == 50 and src.stats["events"] == 51
    assert src.stats["messages"] == 101
    lines = [r.getMessage() for r in caplog.records if "door-b3" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "not JSON" in lines[0] and "no more malformed json" in lines[1]


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=200),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                 lambda c: st.lists(c, max_size=4) | st.dictionaries(
                     st.sampled_from(["code", "door", "time", "card_no", "uptime", "x"]), c,
                     max_size=5), max_leaves=12).map(lambda d: json.dumps(d).encode())))
def test_no_payload_crashes_the_mapping(payload: bytes) -> None:
    out = terminal().decode("access/T3E-01/events", payload, NOW)
    for item in out.items:
        if isinstance(item, DeviceEvent) and "card" in item.attrs:
            assert len(item.attrs["card"]) == 16


def test_retained_replays_keep_readings_and_drop_events() -> None:
    src = MqttDeviceSource(device_id="door-b3", mapping=terminal(), host="127.0.0.1", port=1,
                           client_id="c", clock=FakeClock(NOW))
    topic = "access/T3E-01/events"
    assert src.handle(topic, msg(code=34, door=1), retained=True) == []
    [reading] = src.handle(topic, msg(uptime=5), retained=True)
    assert reading.values == {"uptime": 5.0}
    assert src.stats["retained_events"] == 1 and src.stats["events"] == 0


ISAPI_TERMINAL = """
kind: door_access
topic: isapi/+/events
device_id: {topic_segment: 1}
timestamp: dateTime
channels: {name: door, count: 2, path: AccessControllerEvent.doorNo}
events:
  path: [AccessControllerEvent.majorEventType, AccessControllerEvent.subEventType]
  codes:
    "5:1": {event: granted, attrs: {method: card}}
    "5:75": {event: granted, attrs: {method: face}}
    "5:9": {event: denied, attrs: {reason: no_permission}}
  attrs: {card: AccessControllerEvent.cardNo}
  once_per: AccessControllerEvent.serialNo
pseudonymise: [card]
"""


def test_an_event_code_made_of_major_and_minor_isapi_fields() -> None:
    mapping = MessageMapping(profile=MqttProfile.model_validate(yaml.safe_load(ISAPI_TERMINAL)),
                             device_id="t1", source="T1", pseudonymise=Pseudonymiser(key=KEY))
    topic = "isapi/T1/events"

    def event(major, minor, serial):
        return msg(dateTime="2024-05-01T16:15:30+08:00", eventType="AccessControllerEvent",
                   AccessControllerEvent={"majorEventType": major, "subEventType": minor,
                                          "doorNo": 2, "cardNo": "12345678", "serialNo": serial})

    [face] = mapping.decode(topic, event(5, 75, 1), NOW).items
    assert (face.name, face.channel, face.attrs["method"], face.attrs["code"]) == \
        ("granted", 2, "face", "5:75")
    assert face.attrs["card"] != "12345678"  # pseudonymised
    [denied] = mapping.decode(topic, event(5, 9, 2), NOW).items
    assert denied.name == "denied" and denied.attrs["reason"] == "no_permission"
    unknown = mapping.decode(topic, event(5, 8, 3), NOW)
    assert not unknown.items and unknown.problems[0][0] == "unknown_code"
    half = mapping.decode(topic, msg(AccessControllerEvent={"majorEventType": 5, "doorNo": 1}), NOW)
    assert not half.items and "missing" in half.problems[0][1]


def test_a_composite_code_must_have_one_part_per_path() -> None:
    raw = yaml.safe_load(ISAPI_TERMINAL)
    raw["events"]["codes"]["75"] = "granted"
    with pytest.raises(ValidationError, match="must have 2 parts joined by ':'"):
        MqttProfile.model_validate(raw)
