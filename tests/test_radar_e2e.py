"""Fall radars end to end: simulator on a pty pair -> gateway -> Mosquitto / VictoriaMetrics.

The simulated radar writes real frames into side b of a PtyPair; the gateway opens
the stable symlink of side a, as it would a ``/dev/serial/by-id`` link.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import MqttRecorder, running_gateway, wait_until, write_site
from simulators.radar import radar_on_pty

FAST = {"interval": 0.05, "refresh": 0.2, "heartbeat": 0.2}
LOCATION = {"building": "7", "unit": "1", "floor": "3", "room": "302 bathroom"}
FALL_RULE = {"id": "fall", "type": "threshold", "select": {"kinds": ["fall_radar"]},
             "field": "fall", "above": 0.5, "severity": 1, "latch": True,
             "message": "FALL in {room} (building {building}), radar {device}"}


@pytest.fixture(autouse=True)
def influx_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_INFLUX_TOKEN", "test-token")


def radar_site(site_id: str, *, port: str, codec: str, mqtt_port: int | None = None,
               influx_url: str | None = None, **device: object) -> dict:
    """A site with one radar (``radar-1``) and the fall rule."""
    raw: dict = {
        "site": {"id": site_id},
        "devices": [{"id": "radar-1", "type": "serial_frames", "codec": codec, "port": port,
                     "location": LOCATION, **device}],
        "rules": [FALL_RULE],
    }
    if mqtt_port is not None:
        raw["mqtt"] = {"host": "127.0.0.1", "port": mqtt_port}
    if influx_url is not None:
        raw["influxdb"] = {"url": influx_url, "org": "o", "bucket": "b",
                           "token": {"env": "TEST_INFLUX_TOKEN"}, "flush_interval": 0.2}
    return raw


def events_of(mqtt: MqttRecorder, rule: str, event: str) -> list[dict]:
    return [m["alarm"] for _, m in mqtt.json_on("/alarm_events")
            if m["alarm"]["rule"] == rule and m["event"] == event]


@pytest.mark.parametrize("codec", ["mr60fda1", "ld6002c"])
async def test_a_fall_raises_the_alarm_and_the_readings_reach_the_tsdb(
        tmp_path: Path, mosquitto, victoria, unique_id: str, codec: str) -> None:
    # The fall comes 2 s after the simulator starts, so a gateway slow to start (a loaded
    # machine) still reads the "no fall" before it: the series must hold both.
    async with radar_on_pty(protocol=codec, scenario="fall", fall_after=2.0, seed=1,
                            **FAST) as (sim, pair), \
            MqttRecorder(mosquitto.port, f"community/{unique_id}/#") as mqtt:
        raw = radar_site(unique_id, port=pair.link_a, codec=codec, mqtt_port=mosquitto.port,
                         influx_url=victoria.url, setup={"fall_sensitivity": 4})
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            [alarm] = await mqtt.wait_for(lambda: events_of(mqtt, "fall", "raised"), 5)
            falls = await victoria.wait_for_series_async(
                f'fall_radar_fall{{site="{unique_id}"}}',
                lambda s: bool(s) and 1 in s[0]["values"] and 0 in s[0]["values"])
            presence = await victoria.wait_for_series_async(
                f'fall_radar_presence{{site="{unique_id}"}}')
            events = await victoria.wait_for_series_async(
                f'fall_radar_event_count{{site="{unique_id}",event="fall"}}')
            driver = gw.drivers["radar-1"]
            await wait_until(lambda: driver.setup_result.ok, 3, "setup confirmed")
    assert alarm["severity"] == 1 and alarm["device"] == "radar-1" and alarm["kind"] == "fall_radar"
    assert alarm["location"] == LOCATION and alarm["value"] == 1.0
    assert alarm["message"] == "FALL in 302 bathroom (building 7), radar radar-1"
    [(_, state)] = [m for m in mqtt.json_on(f"/alarms/{alarm['id']}") if m[1]["state"] == "active"]
    assert state["id"] == alarm["id"]
    # the fall latches: no "cleared" while the person lies there
    assert not events_of(mqtt, "fall", "cleared")
    labels = falls[0]["metric"]
    assert labels == {"__name__": "fall_radar_fall", "site": unique_id, "device": "radar-1",
                      **LOCATION}
    assert set(presence[0]["values"]) == {1}
    assert events[0]["values"] and set(events[0]["values"]) == {1}
    # the sensitivity written at connect, confirmed, and the radar holds it
    assert sim.settings["fall_sensitivity" if codec == "mr60fda1" else "sensitivity"] == 4
    counters = driver.counters()
    assert counters["frames_ok"] > 10 and counters["bad_checksum"] == 0


async def test_unplugged_radar_goes_offline_and_comes_back_by_itself(
        tmp_path: Path, mosquitto, unique_id: str) -> None:
    async with radar_on_pty(protocol="mr60fda1", scenario="normal", seed=2,
                            **FAST) as (sim, pair), \
            MqttRecorder(mosquitto.port, f"community/{unique_id}/alarm_events") as mqtt:
        raw = radar_site(unique_id, port=pair.link_a, codec="mr60fda1", mqtt_port=mosquitto.port)
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            runner = next(r for r in gw.runners if r.device_id == "radar-1")
            await wait_until(lambda: runner.health.online is True, 5, "radar online")
            pair.unplug()  # the USB adapter is pulled
            [offline] = await mqtt.wait_for(lambda: events_of(mqtt, "device_offline", "raised"), 5)
            assert not gw.drivers["radar-1"].connected
            pair.replug()  # plugged back in: a new /dev/pts, the same link
            await mqtt.wait_for(lambda: events_of(mqtt, "device_offline", "cleared"), 10)
            await wait_until(lambda: runner.health.online is True, 5, "radar online again")
            opens = gw.drivers["radar-1"].opens
    assert opens >= 2
    assert offline["device"] == "radar-1" and offline["severity"] == 3
    assert offline["location"] == LOCATION
    assert "radar-1 offline" in offline["message"]


async def test_a_silent_radar_goes_offline_after_its_silence_timeout(
        tmp_path: Path, mosquitto, unique_id: str) -> None:
    async with radar_on_pty(protocol="ld6002c", scenario="normal", seed=3, **FAST) as (sim, pair), \
            MqttRecorder(mosquitto.port, f"community/{unique_id}/alarm_events") as mqtt:
        raw = radar_site(unique_id, port=pair.link_a, codec="ld6002c", mqtt_port=mosquitto.port,
                         silence_timeout=0.5)
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            runner = next(r for r in gw.runners if r.device_id == "radar-1")
            await wait_until(lambda: runner.health.online is True, 5, "radar online")
            sim.faults.silence = True
            [offline] = await mqtt.wait_for(lambda: events_of(mqtt, "device_offline", "raised"), 5)
            assert gw.drivers["radar-1"].connected  # the port is fine; the radar is quiet
            sim.faults.silence = False
            await mqtt.wait_for(lambda: events_of(mqtt, "device_offline", "cleared"), 5)
    assert "silent" in offline["message"]


async def test_garbage_on_the_line_is_counted_and_falls_still_alarm(
        tmp_path: Path, mosquitto, unique_id: str) -> None:
    async with radar_on_pty(protocol="ld6002c", scenario="fall", fall_after=0.5, seed=4,
                            **FAST) as (sim, pair), \
            MqttRecorder(mosquitto.port, f"community/{unique_id}/alarm_events") as mqtt:
        sim.faults.garbage = sim.faults.bad_checksum = sim.faults.truncated = True
        raw = radar_site(unique_id, port=pair.link_a, codec="ld6002c", mqtt_port=mosquitto.port)
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            await mqtt.wait_for(lambda: events_of(mqtt, "fall", "raised"), 5)
            counters = gw.drivers["radar-1"].counters()
    assert counters["garbage_bytes"] > 0 and counters["bad_checksum"] > 0
    assert counters["frames_ok"] > 0
    assert not events_of(mqtt, "device_offline", "raised")


async def test_demo_radar_adds_the_example_radar_and_its_fall_alarm_fires(
        tmp_path: Path, unique_id: str) -> None:
    from gateway.demo.radar import demo_radar

    async with demo_radar(fall_after=0.3) as radar:
        raw: dict = {"site": {"id": unique_id}, "state_dir": str(tmp_path / "state")}
        radar.add_to_site(raw)
        assert radar.pair.link_a in radar.describe()
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            await wait_until(lambda: gw.alarms.find("fall", "radar-demo", None), 5, "fall alarm")
            assert gw.drivers["radar-demo"].setup_result.ok
        assert "fall 1" in radar.status()
