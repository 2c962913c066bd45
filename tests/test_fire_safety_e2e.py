"""Fire safety beyond the cabinets: a stand-alone smoke detector (vendor JSON on
Mosquitto) in a charging room raises the fire alarm, which cuts every cabinet in
that room (real Modbus cabinets); its fault reports are device faults; its readings
reach VictoriaMetrics."""

from __future__ import annotations

import pytest

from harness import MqttRecorder, running_gateway, wait_until, write_site
from simulators.charging_cabinet import CabinetModel
from simulators.modbus_server import CabinetServer
from simulators.smoke_detector import SmokeDetectorSimulator

ROOM = {"building": "3", "floor": "B1", "room": "charging room A"}


@pytest.fixture(autouse=True)
def influx_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_INFLUX_TOKEN", "test-token")


async def test_a_detectors_fire_alarm_cuts_the_rooms_cabinets_and_faults_are_device_faults(
        tmp_path, mosquitto, victoria, unique_id):
    cabinets = [CabinetModel(ports=2, scenario="normal", scenario_port=1, seed=i) for i in (1, 2)]
    async with CabinetServer(cabinets[0], tcp=("127.0.0.1", 0)) as s1, \
            CabinetServer(cabinets[1], tcp=("127.0.0.1", 0)) as s2, \
            SmokeDetectorSimulator(broker=("127.0.0.1", mosquitto.port),
                                   detector_id=f"sd-{unique_id}", heartbeat_s=0.2) as detector, \
            MqttRecorder(mosquitto.port, f"community/{unique_id}/#") as mqtt:
        raw = {
            "site": {"id": unique_id},
            "mqtt": {"host": "127.0.0.1", "port": mosquitto.port},
            "influxdb": {"url": victoria.url, "org": "o", "bucket": "b",
                         "token": {"env": "TEST_INFLUX_TOKEN"}, "flush_interval": 0.2},
            "buses": [{"id": f"b{i}", "type": "modbus_tcp", "host": "127.0.0.1", "port": s.port}
                      for i, s in enumerate((s1, s2))],
            "devices": [
                *({"id": f"cab-{i}", "type": "modbus", "bus": f"b{i}", "profile": "ev-cabinet",
                   "channels": 2, "poll_interval": 0.2, "location": ROOM} for i in (0, 1)),
                {"id": "smoke-a", "type": "mqtt", "profile": "smoke-detector",
                 "source": f"sd-{unique_id}", "location": ROOM},
            ],
            "rules": [{"id": "fire", "type": "event", "select": {"kinds": ["smoke_detector"]},
                       "event": "fire", "severity": 1, "latch": True,
                       "message": "FIRE in {room}: cabinets there cut",
                       "actions": [{"write": "relay", "value": 0, "channels": "all",
                                    "targets": {"kinds": ["ev_charging"],
                                                "same": ["building", "room"]}}]}],
        }
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            await wait_until(lambda: gw.drivers["smoke-a"].connected, 5, "subscribed")
            detector.report("fault")
            fault = "device_fault:detector_fault"
            await wait_until(lambda: any(a.rule == fault for a in gw.alarms.open_alarms()), 5,
                             "detector fault")
            detector.report("normal")
            await wait_until(lambda: not any(a.rule == fault and a.condition
                                             for a in gw.alarms.open_alarms()), 5, "fault over")
            detector.density = 0.31
            detector.report("alarm")
            [raised] = await mqtt.wait_for(lambda: [e["alarm"] for _, e in mqtt.json_on(
                "/alarm_events") if e["event"] == "raised" and e["alarm"]["rule"] == "fire"], 5)
            await wait_until(lambda: not any(c.relay(p) for c in cabinets for p in (1, 2)), 5,
                             "every cabinet in the room cut")
            battery = await victoria.wait_for_series_async(
                f'smoke_detector_battery{{site="{unique_id}"}}', timeout=10)
    assert raised["severity"] == 1 and raised["message"] == "FIRE in charging room A: cabinets there cut"
    assert raised["location"] == ROOM
    assert battery[0]["metric"]["device"] == "smoke-a" and set(battery[0]["values"]) == {87}


def test_a_detectors_heartbeat_is_readings_and_no_unknown_event() -> None:
    """The profile's ``no_event`` codes carry fields only (no event, nothing counted)."""
    import json
    from pathlib import Path

    from drivers.mqtt.mapping import MessageMapping
    from drivers.mqtt.profile import MqttProfile
    from gateway.config.loader import load_profile

    profile = load_profile("smoke-detector", Path("configs"), MqttProfile)
    mapping = MessageMapping(profile=profile, device_id="sd", source="sd-1")
    doc = {"ts": "2026-12-01T08:00:00Z", "event": "heartbeat", "battery": 87, "temperature": 24.5,
           "smoke_density": 0.02}
    from datetime import datetime

    now = datetime.fromisoformat("2026-12-01T08:00:00+00:00").timestamp()
    decoded = mapping.decode("fire-detectors/sd-1/report", json.dumps(doc).encode(), now)
    assert not decoded.problems and not [i for i in decoded.items if hasattr(i, "name")]
    [reading] = decoded.items
    assert reading.values == {"battery": 87.0, "temperature": 24.5, "smoke_density": 0.02}
