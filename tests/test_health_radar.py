"""Elders' health radars (MR60BHA2): the codec, and end to end on a pty pair: no
breathing raises a level-1 alarm; readings stay on the gateway unless the site sends
them pseudonymised."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.serial_frames import CODECS
from drivers.serial_frames.mr60bha2 import (BREATH_RATE, HEART_RATE, Mr60bha2Codec,
                                            distance_frame, presence_frame, rate_frame)
from drivers.serial_frames.tinyframe import TinyFrameFrame
from harness import MqttRecorder, running_gateway, wait_until, write_site
from simulators.health_radar import HealthRadarSimulator
from simulators.ptypair import PtyPair


def values(codec, *frames: bytes) -> dict:
    out: dict = {}
    for frame in codec.feed(b"".join(frames)):
        out.update(codec.decode(frame).values)
    return out


def test_rates_presence_and_distance_decode():
    codec = CODECS["mr60bha2"]()
    assert isinstance(codec, Mr60bha2Codec)
    got = values(codec, presence_frame(True), distance_frame(0.75),
                 rate_frame(BREATH_RATE, 14.5), rate_frame(HEART_RATE, 71.0))
    assert got == {"presence": 1.0, "distance": 0.75, "breath_rate": 14.5,
                   "heart_rate": 71.0, "no_breathing": 0.0}


def test_no_breathing_needs_someone_present():
    codec = Mr60bha2Codec()
    assert values(codec, rate_frame(BREATH_RATE, 0.0))["no_breathing"] == 0.0  # nobody seen yet
    assert values(codec, presence_frame(True), rate_frame(BREATH_RATE, 0.0))["no_breathing"] == 1.0
    assert values(codec, presence_frame(False))["no_breathing"] == 0.0


@pytest.mark.parametrize("frame", [
    rate_frame(BREATH_RATE, 95.0), rate_frame(HEART_RATE, -3.0),
    rate_frame(HEART_RATE, math.nan), rate_frame(BREATH_RATE, math.inf),
    TinyFrameFrame(0, BREATH_RATE, b"\x00\x00").to_bytes(),
    TinyFrameFrame(0, 0x0F09, b"\x07").to_bytes(),
    distance_frame(42.0),
])
def test_implausible_frames_are_counted_not_reported(frame):
    codec = Mr60bha2Codec()
    assert values(codec, frame) == {}
    assert codec.counters()["implausible"] == 1


def test_vocabulary_is_what_the_simulator_makes_the_codec_report():
    from drivers.serial_frames.vocabulary import FIELDS

    codec = Mr60bha2Codec()
    seen: set[str] = set()
    for scenario in ("normal", "no-breathing", "away"):
        sim = HealthRadarSimulator(serial="unused", scenario=scenario, incident_after=0)
        seen |= set(values(codec, *sim._frames(elapsed=1.0)))
    assert seen == FIELDS["mr60bha2"]


def test_no_target_distance_is_not_a_reading():
    assert values(Mr60bha2Codec(), distance_frame(None)) == {}


@given(st.binary(max_size=400))
@settings(max_examples=400, deadline=None)
def test_any_bytes_are_counted_never_raised(raw):
    codec = Mr60bha2Codec()
    for frame in codec.feed(raw):
        for value in codec.decode(frame).values.values():
            assert math.isfinite(value)


@given(st.integers(0xA00, 0xFFF), st.binary(max_size=16))
@settings(max_examples=300, deadline=None)
def test_well_framed_data_of_any_shape_is_safe(type_, data):
    codec = Mr60bha2Codec()
    for frame in codec.feed(TinyFrameFrame(1, type_, data).to_bytes()):
        decoded = codec.decode(frame)
        assert all(math.isfinite(v) for v in decoded.values.values())


LOCATION = {"building": "9", "unit": "2", "floor": "12", "room": "1204 bedroom"}


def health_site(site_id: str, *, mqtt_port: int, series, port_a: str, port_b: str) -> dict:
    return {
        "site": {"id": site_id},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port},
        "local_series": {"path": str(series)},
        "privacy": {"key": {"env": "TEST_PRIVACY_KEY"}},
        "devices": [
            {"id": "health-a", "type": "serial_frames", "codec": "mr60bha2", "port": port_a,
             "location": LOCATION},
            {"id": "health-b", "type": "serial_frames", "codec": "mr60bha2", "port": port_b,
             "location": {**LOCATION, "room": "1502 bedroom"}, "upstream": "pseudonymised",
             "resident": "resident-1502"},
        ],
        "rules": [{"id": "no-breathing", "type": "held", "select": {"kinds": ["health_radar"]},
                   "field": "no_breathing", "equals": 1, "for": 0.5, "severity": 1,
                   "latch": True, "message": "No breathing: {room}"}],
    }


async def test_no_breathing_alarms_and_health_data_stays_local_or_pseudonymised(
        tmp_path, mosquitto, unique_id, monkeypatch) -> None:
    monkeypatch.setenv("TEST_PRIVACY_KEY", "a-long-enough-test-key")
    series = tmp_path / "series.lp"
    async with PtyPair() as pair_a, PtyPair() as pair_b, \
            HealthRadarSimulator(serial=pair_a.b, scenario="no-breathing", incident_after=0.3,
                                 interval=0.05), \
            HealthRadarSimulator(serial=pair_b.b, scenario="normal", interval=0.05), \
            MqttRecorder(mosquitto.port, f"community/{unique_id}/#") as mqtt:
        raw = health_site(unique_id, mqtt_port=mosquitto.port, series=series,
                          port_a=pair_a.link_a, port_b=pair_b.link_a)
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            raised = await mqtt.wait_for(lambda: [e["alarm"] for _, e in mqtt.json_on(
                "/alarm_events") if e["event"] == "raised"], 10)
            await wait_until(lambda: series.exists() and "breath_rate" in series.read_text(), 10,
                             "pseudonymised readings upstream")
            assert gw.pipeline.latest[("health-a", None)].values  # used locally all the same
    [alarm] = raised
    assert alarm["rule"] == "no-breathing" and alarm["severity"] == 1
    assert alarm["device"] == "health-a" and alarm["location"] == LOCATION  # guards must know where
    lines = series.read_text().splitlines()
    # the room numbers are searched in the tags only: a timestamp or a reading's digits can
    # hold "1502" by chance (a reading's fields are numbers: no text to leak there)
    tags = [line.split(" ", 1)[0] for line in lines]
    assert lines and not any("health-a" in line or "1204" in t for line, t in zip(lines, tags))
    assert not any("health-b" in line or "1502" in t for line, t in zip(lines, tags))
    devices = {part.split("=", 1)[1] for line in lines for part in line.split(" ")[0].split(",")
               if part.startswith("device=")}
    assert len(devices) == 1 and devices.pop().startswith("resident-")
    assert all(",room=" not in line and ",unit=" not in line for line in lines)
    assert all(line.startswith("health_radar,") for line in lines)
