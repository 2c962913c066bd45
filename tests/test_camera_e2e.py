"""Thrown objects end to end: camera simulator on Mosquitto -> gateway -> one alarm with its
evidence on MQTT, and the event's numbers in VictoriaMetrics; the simulator's command line."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from harness import MqttRecorder, running_gateway, wait_until, write_site
from simulators.camera import CameraSimulator


@pytest.fixture(autouse=True)
def influx_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_INFLUX_TOKEN", "test-token")


def camera_site(site_id: str, *, mqtt_port: int, camera: str, influx_url: str | None = None,
                series=None) -> dict:
    raw: dict = {
        "site": {"id": site_id},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port},
        "devices": [{"id": "camera-b5", "type": "mqtt", "profile": "thrown-object-camera",
                     "source": camera, "location": {"building": "5"}}],
        "rules": [{"id": "thrown-object", "type": "event", "select": {"kinds": ["thrown_object"]},
                   "event": "throw", "severity": 1,
                   "message": "Object thrown from building {building}"}],
    }
    if influx_url is not None:
        raw["influxdb"] = {"url": influx_url, "org": "o", "bucket": "b",
                           "token": {"env": "TEST_INFLUX_TOKEN"}, "flush_interval": 0.2}
    if series is not None:
        raw["local_series"] = {"path": str(series)}
    return raw


async def test_a_throw_is_one_alarm_with_floor_range_and_evidence(
        tmp_path, mosquitto, victoria, unique_id) -> None:
    series = tmp_path / "series.lp"
    # another camera on the same topic must not be taken for this one
    async with CameraSimulator(broker=("127.0.0.1", mosquitto.port), camera_id=unique_id,
                               pulse_s=0.3) as cam, \
            CameraSimulator(broker=("127.0.0.1", mosquitto.port), camera_id="other-camera",
                            pulse_s=0.3) as other, \
            MqttRecorder(mosquitto.port, f"community/{unique_id}/#") as mqtt:
        raw = camera_site(unique_id, mqtt_port=mosquitto.port, camera=unique_id,
                          influx_url=victoria.url, series=series)
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            driver = gw.drivers["camera-b5"]
            await wait_until(lambda: driver.connected, 5, "camera subscribed")
            await other.throw(3)
            event_id = await cam.throw(12, confidence=0.87)
            await cam.publisher.flush()
            await wait_until(lambda: driver.stats.get("duplicate", 0) == 1, 5, "stop pulse")
            raised = await mqtt.wait_for(lambda: [e for _, e in mqtt.json_on("/alarm_events")
                                                  if e["event"] == "raised"], 5)
            floors = await victoria.wait_for_series_async(
                f'{{__name__=~"thrown_object_event_floor_.*",site="{unique_id}"}}',
                lambda s: len(s) == 2, timeout=10)
            await wait_until(lambda: series.exists() and "event=throw" in series.read_text(), 5,
                             "local series")
    assert driver.stats["events"] == 1 and driver.stats["other_device"] >= 2
    [event] = raised
    alarm = event["alarm"]
    assert alarm["rule"] == "thrown-object" and alarm["severity"] == 1
    assert alarm["device"] == "camera-b5" and alarm["message"] == "Object thrown from building 5"
    details = alarm["details"]
    assert (details["floor_low"], details["floor_high"]) == (11, 13)
    assert details["building"] == "5" and details["facade"] == "east"
    assert details["confidence"] == 0.87 and details["event_id"] == event_id
    assert details["snapshot"].endswith(f"{event_id}/snap.jpg")
    assert details["clip"].endswith(f"{event_id}/clip.mp4")
    by_name = {s["metric"]["__name__"]: s for s in floors}
    assert by_name["thrown_object_event_floor_low"]["values"] == [11]
    assert by_name["thrown_object_event_floor_high"]["values"] == [13]
    assert by_name["thrown_object_event_floor_low"]["metric"]["event"] == "throw"
    # delivery upstream is at least once: a line may be written twice, never two points
    [line] = {x for x in series.read_text().splitlines() if "event=throw" in x}
    assert f'snapshot="http://nvr.local/media/{event_id}/snap.jpg"' in line
    assert "confidence=0.87" in line and f'event_id="{event_id}"' in line


async def test_malformed_camera_messages_are_counted_and_the_throw_still_arrives(
        tmp_path, mosquitto, unique_id) -> None:
    async with CameraSimulator(broker=("127.0.0.1", mosquitto.port), camera_id=unique_id,
                               pulse_s=0.1, fault="malformed") as cam:
        raw = camera_site(unique_id, mqtt_port=mosquitto.port, camera=unique_id)
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            driver = gw.drivers["camera-b5"]
            await wait_until(lambda: driver.connected, 5, "camera subscribed")
            await cam.throw(12)
            await wait_until(lambda: driver.stats["events"] == 1
                             and driver.stats.get("malformed_json", 0) >= 2
                             and driver.stats.get("no_content", 0) >= 2, 5, "counted")
            await wait_until(lambda: gw.alarms.open_alarms(), 5, "alarm")


async def test_simulate_camera_from_the_command_line(mosquitto, unique_id) -> None:
    async with MqttRecorder(mosquitto.port, "thrown-objects/events") as mqtt:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "simulate", "camera", "--scenario", "throw",
            "--incident-after", "0.2", "--pulse", "0.2", "--camera-id", unique_id, "--floor", "12",
            "--broker", f"127.0.0.1:{mosquitto.port}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            def pulses() -> list[str]:
                return [d["state"] for _, d in mqtt.json_on("events")
                        if d.get("camera") == unique_id and "state" in d]
            await mqtt.wait_for(lambda: pulses() == ["start", "stop"], 10)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    [start] = [d for _, d in mqtt.json_on("events") if d.get("state") == "start"]
    assert start["floor_est"] == [11, 13] and start["building"] == "5"
    assert "THROW" in out.decode() and unique_id in out.decode()

