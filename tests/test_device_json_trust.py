"""Device JSON that is not quite JSON, too big, or holds numbers no float can hold.

End to end: a camera's messages published on a real Mosquitto, the gateway with an
event rule, alarms read off MQTT by a strict JSON parser (as Go's or Rust's would),
and the event's numbers in a real VictoriaMetrics.
"""

from __future__ import annotations

import json

import aiomqtt
import pytest

from drivers.mqtt.mapping import MessageMapping
from drivers.mqtt.profile import MAX_PAYLOAD, MqttProfile
from gateway import json_safe
from gateway.alarms.manager import AlarmManager
from gateway.alarms.webhook import WebhookSender
from gateway.clock import FakeClock
from gateway.config.models import MqttConfig, WebhookConfig
from gateway.runtime.mqtt_link import MqttLink
from gateway.upstream.telemetry_json import TelemetryEncoder
from harness import MqttRecorder, running_gateway, wait_until, write_site
from test_camera_e2e import camera_site

HUGE = "9" * 400  # valid JSON, a valid Python int, no float


def strict(payload: bytes | str) -> object:
    """JSON as a strict client reads it: NaN and Infinity are errors."""
    def refuse(token: str) -> None:
        raise ValueError(f"{token} is not JSON")
    return json.loads(payload, parse_constant=refuse)


def throw(camera: str, event_id: str, **extra: object) -> dict:
    return {"event_id": event_id, "state": "start", "camera": camera, "building": "5",
            "facade": "east", "floor_est": [11, 13], "confidence": 0.9,
            "snapshot": f"http://nvr/{event_id}.jpg", "clip": f"http://nvr/{event_id}.mp4",
            **extra}


@pytest.fixture(autouse=True)
def influx_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_INFLUX_TOKEN", "test-token")


async def test_nan_big_payloads_and_huge_numbers_cost_what_they_should(
        tmp_path, mosquitto, victoria, unique_id) -> None:
    topic = "thrown-objects/events"
    raw = camera_site(unique_id, mqtt_port=mosquitto.port, camera=unique_id,
                      influx_url=victoria.url)
    async with MqttRecorder(mosquitto.port, f"community/{unique_id}/#") as mqtt, \
            aiomqtt.Client("127.0.0.1", mosquitto.port) as device:
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            driver = gw.drivers["camera-b5"]
            await wait_until(lambda: driver.connected, 5, "camera subscribed")
            # 1. NaN is not JSON: the whole message is refused, as malformed
            nan = json.dumps(throw(unique_id, "e1", confidence=float("nan"))).encode()
            assert b"NaN" in nan
            await device.publish(topic, nan, qos=1)
            # 2. over the profile's max_payload (64 KiB): skipped unread
            big = json.dumps(throw(unique_id, "e2", padding="x" * MAX_PAYLOAD)).encode()
            await device.publish(topic, big, qos=1)
            # 3. a 400-digit floor and an infinite confidence cost those attrs only
            huge = json.dumps(throw(unique_id, "e3")).encode().replace(
                b'"floor_est": [11, 13]', b'"floor_est": [' + HUGE.encode() + b', 13]').replace(
                b'"confidence": 0.9', b'"confidence": 1e400')
            await device.publish(topic, huge, qos=1)
            await wait_until(lambda: driver.stats.get("events") == 1
                             and driver.stats.get("malformed_json") == 1
                             and driver.stats.get("too_large") == 1, 5, "all three counted")
            raised = await mqtt.wait_for(lambda: [p for _, t, p in mqtt.messages
                                                  if t.endswith("/alarm_events") and p], 5)
            floors = await victoria.wait_for_series_async(
                f'{{__name__=~"thrown_object_event_.*",site="{unique_id}"}}',
                lambda s: any(x["metric"]["__name__"].endswith("_count") for x in s), timeout=10)
    assert "internal_errors" not in driver.stats
    assert driver.stats["bad_value"] == 2  # floor_low and confidence
    [payload] = raised  # only the third message raised the alarm
    alarm = strict(payload)["alarm"]
    assert alarm["details"]["event_id"] == "e3" and alarm["details"]["floor_high"] == 13
    assert "floor_low" not in alarm["details"] and "confidence" not in alarm["details"]
    for _, _, retained in mqtt.messages:  # every message the gateway wrote is strict JSON
        if retained.startswith(b"{"):
            strict(retained)
    names = {s["metric"]["__name__"]: s["values"] for s in floors}
    assert names["thrown_object_event_floor_high"] == [13]
    assert "thrown_object_event_floor_low" not in names


def test_json_the_gateway_writes_is_strict_even_with_nan_inside() -> None:
    # Numbers from elsewhere (a rule's value, a driver's detail) can still be NaN or
    # infinite: alarm JSON on MQTT and to webhooks, and telemetry, give null instead.
    manager = AlarmManager(clock=FakeClock(), escalate_after=60)
    link = MqttLink(config=MqttConfig(host="127.0.0.1", port=1), site_id="s", alarms=manager)
    sender = WebhookSender(config=WebhookConfig(url="http://127.0.0.1:1/hook"))
    manager.add_listener(sender.on_transition)
    manager.activate(rule="r", severity=1, device="d", kind="k", channel=None, location={},
                     message="m", value=float("nan"), ts=1.0,
                     details={"confidence": float("inf"), "floors": [float("-inf"), 3]})
    [state] = link._state.values()
    assert strict(state)["value"] is None
    assert strict(link._events[0])["alarm"]["details"] == {"confidence": None, "floors": [None, 3]}
    assert strict(sender._queue[0].body)["alarm"]["value"] is None
    from gateway.readings import DeviceEvent
    doc = TelemetryEncoder().event(DeviceEvent("d", None, "e", 1.0, {"x": {"y": float("nan")}}))
    strict(doc)


def test_profile_sets_the_largest_payload_parsed() -> None:
    profile = MqttProfile.model_validate({"kind": "k", "topic": "t", "fields": {"v": "v"},
                                          "max_payload": 100})
    mapping = MessageMapping(profile=profile, device_id="d", source="d")
    small = b'{"v": 1}'
    assert mapping.decode("t", small, 1.0).items
    out = mapping.decode("t", small + b" " * 100, 1.0)
    assert out.problems == [("too_large", "108 bytes, more than 100")] and not out.items
    assert MqttProfile.model_validate({"kind": "k", "topic": "t", "fields": {"v": "v"}}
                                      ).max_payload == 64 * 1024


@pytest.mark.parametrize("payload, kind, values", [
    (b'{"v": NaN}', "malformed_json", None),
    (b'{"v": -Infinity, "w": 1}', "malformed_json", None),
    (b'{"v": ' + HUGE.encode() + b', "w": 2}', "bad_value", {"w": 2.0}),
    (b'{"v": -' + b"9" * 5000 + b', "w": 3}', "bad_value", {"w": 3.0}),  # past int()'s limit
    (b'{"v": 1e400, "w": 4}', "bad_value", {"w": 4.0}),
    (b'{"v": "NaN", "w": 5}', "bad_value", {"w": 5.0}),  # text "NaN" is no number either
])
def test_non_numbers_cost_the_message_or_the_field(payload, kind, values) -> None:
    profile = MqttProfile.model_validate({"kind": "k", "topic": "t",
                                          "fields": {"v": "v", "w": "w"}})
    out = MessageMapping(profile=profile, device_id="d", source="d").decode("t", payload, 1.0)
    assert [k for k, _ in out.problems] == [kind]
    assert [i.values for i in out.items] == ([values] if values else [])
    json_safe.dumps([i.values for i in out.items])
