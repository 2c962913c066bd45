"""The MQTT telemetry JSON, and the InfluxDB sink's reading of Retry-After."""

from __future__ import annotations

import email.utils
import json
import time

from gateway.readings import DeviceEvent, Reading
from gateway.upstream.influx import _retry_after
from gateway.upstream.telemetry_json import TelemetryEncoder


def test_a_reading_as_telemetry_json() -> None:
    enc = TelemetryEncoder()
    doc = json.loads(enc.reading(Reading("charger-b3", 3, {"power": 231.5, "relay": 1.0},
                                         1_700_000_000.25)))
    assert doc == {"device": "charger-b3", "channel": 3, "ts": "2023-11-14T22:13:20.250Z",
                   "values": {"power": 231.5, "relay": 1.0}}
    doc = json.loads(enc.reading(Reading("cabinet", None, {"t": 30.0, "bad": float("nan"),
                                                           "worse": float("inf")}, 0.0)))
    assert "channel" not in doc and doc["values"] == {"t": 30.0}  # JSON cannot carry NaN
    assert enc.skipped_values == 2


def test_a_device_event_as_telemetry_json() -> None:
    doc = json.loads(TelemetryEncoder().event(DeviceEvent(
        "camera-1", None, "throw", 1_700_000_000.0,
        {"floor": 12, "snapshot": "s3://x/1.jpg", "speed": float("nan"), "box": (1, 2)})))
    assert doc == {"device": "camera-1", "ts": "2023-11-14T22:13:20.000Z", "event": "throw",
                   "attrs": {"floor": 12, "snapshot": "s3://x/1.jpg", "speed": None,
                             "box": "(1, 2)"}}


def refusal(headers: dict | None) -> dict | None:
    return headers  # the response's headers, as the sink hands them over


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert _retry_after(refusal({"Retry-After": "7"})) == 7.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < _retry_after(refusal({"Retry-After": later})) <= 30
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert _retry_after(refusal({"Retry-After": past})) == 0.0
    assert _retry_after(refusal({"Retry-After": "soon"})) is None
    assert _retry_after(refusal(None)) is None
