"""The charging slice end to end: simulator (real Modbus server) -> gateway -> Mosquitto / VictoriaMetrics."""

from __future__ import annotations

import time

import pytest

from gateway.readings import Reading
from harness import MqttRecorder, cabinet_site, running_gateway, wait_until, write_site
from simulators.charging_cabinet import CabinetModel
from simulators.modbus_server import CabinetServer
from simulators.ptypair import PtyPair


@pytest.fixture(autouse=True)
def influx_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_INFLUX_TOKEN", "test-token")


async def test_readings_reach_victoriametrics_with_tags_values_and_timestamps(
        tmp_path, victoria, unique_id) -> None:
    model = CabinetModel(ports=4, scenario="normal", seed=1)
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv:
        raw = cabinet_site(unique_id, bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": srv.port},
                           influx_url=victoria.url)
        started = time.time()
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            series = await victoria.wait_for_series_async(
                f'ev_charging_voltage{{site="{unique_id}"}}', lambda s: len(s) == 4, timeout=10)
            power3 = gw.pipeline.latest[("charger-1", 3)].values["power"]
        ended = time.time()
    labels = {frozenset(s["metric"].items()) for s in series}
    assert frozenset({"__name__": "ev_charging_voltage", "site": unique_id, "device": "charger-1",
                      "building": "3", "unit": "2", "floor": "B1", "port": "3"}.items()) in labels
    for s in series:
        assert all(200 <= v <= 250 for v in s["values"])
        assert all(started * 1000 - 1 <= ts <= ended * 1000 + 1 for ts in s["timestamps"])
    [p3] = await victoria.export_async(f'ev_charging_power{{site="{unique_id}",port="3"}}')
    assert abs(p3["values"][-1] - power3) < 400 and 100 < power3 < 400  # a charging bike
    [smoke] = await victoria.export_async(f'ev_charging_smoke{{site="{unique_id}"}}')
    assert "port" not in smoke["metric"] and set(smoke["values"]) == {0}


async def test_over_power_raises_alarm_within_a_second_and_cuts_the_port(
        tmp_path, mosquitto, unique_id) -> None:
    created = time.monotonic()
    model = CabinetModel(ports=4, scenario="overpower", scenario_port=3, incident_after=1.0, seed=2)
    incident = created + 1.0  # the model's clock starts at its creation
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv, \
            MqttRecorder(mosquitto.port, f"community/{unique_id}/#") as mqtt:
        raw = cabinet_site(unique_id, bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": srv.port},
                           mqtt_port=mosquitto.port)
        async with running_gateway(write_site(tmp_path, raw)):
            raised = await mqtt.wait_for(lambda: [m for m in mqtt.json_on("/alarm_events")
                                                  if m[1]["event"] == "raised"], 3)
            await wait_until(lambda: not model.relay(3), 3, "port 3 relay cut")
            assert model.relay(1) and model.relay(2) and model.relay(4)
            assert model.port_power_w(3) == 0
            # the retained state follows: cleared once the cut port reads 0 W
            await mqtt.wait_for(lambda: any(a["state"] == "cleared" for _, a in mqtt.json_on(
                f"/alarms/{raised[0][1]['alarm']['id']}")), 3)
    arrived, event = raised[0]
    assert arrived - incident < 1.0
    alarm = event["alarm"]
    assert alarm["rule"] == "over-power" and alarm["device"] == "charger-1"
    assert alarm["location"] == {"building": "3", "unit": "2", "floor": "B1", "port": 3}
    assert alarm["value"] > 1000 and alarm["severity"] == 2 and alarm["state"] == "active"
    [(_, state)] = [m for m in mqtt.json_on(f"/alarms/{alarm['id']}") if m[1]["state"] == "active"]
    assert state["id"] == alarm["id"]
    assert any(t.endswith("/status") and p == b"online" for _, t, p in mqtt.messages)


async def test_alarm_clears_only_past_the_hysteresis(tmp_path, mosquitto, unique_id) -> None:
    raw = {"site": {"id": unique_id}, "mqtt": {"host": "127.0.0.1", "port": mosquitto.port},
           "devices": [{"id": "meter", "type": "synthetic", "kind": "power_meter",
                        "fields": ["power"], "poll_interval": 3600}],
           "rules": [{"id": "over-power", "type": "threshold", "field": "power", "above": 1000,
                      "hysteresis": 100}]}
    async with MqttRecorder(mosquitto.port, f"community/{unique_id}/alarms/+") as mqtt, \
            running_gateway(write_site(tmp_path, raw)) as gw:
        def states():
            return [a["state"] for _, a in mqtt.json_on("")]

        # after the synthetic device's own first poll and the broker connection
        await wait_until(lambda: gw.runners[0].health.polls and gw.mqtt.connected, 5, "startup")
        for value in (1001.0, 950.0, 901.0):
            await gw.pipeline.put([Reading("meter", None, {"power": value}, time.time())])
        await mqtt.wait_for(lambda: states() == ["active"], 3)
        await gw.pipeline.put([Reading("meter", None, {"power": 899.0}, time.time())])
        await mqtt.wait_for(lambda: states() == ["active", "cleared"], 3)


async def test_silent_device_goes_offline_and_comes_back(tmp_path, mosquitto, unique_id) -> None:
    model = CabinetModel(ports=2, scenario="normal", scenario_port=1, seed=3)
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv, \
            MqttRecorder(mosquitto.port, f"community/{unique_id}/alarm_events") as mqtt:
        raw = cabinet_site(unique_id, bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": srv.port,
                                           "timeout": 0.2, "retries": 0},
                           mqtt_port=mosquitto.port, rules=[])
        raw["devices"][0]["channels"] = 2
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            [runner] = gw.runners
            await wait_until(lambda: runner.health.online is True, 5, "online")
            await srv.set_silent(True)
            await wait_until(lambda: runner.health.online is False, 5, "offline")
            offline = await mqtt.wait_for(lambda: [a for _, a in mqtt.json_on("")
                                                   if a["event"] == "raised"], 3)
            assert offline[0]["alarm"]["rule"] == "device_offline"
            assert offline[0]["alarm"]["severity"] == 3
            await srv.set_silent(False)
            await wait_until(lambda: runner.health.online is True, 10, "back online")
            await mqtt.wait_for(lambda: [a for _, a in mqtt.json_on("") if a["event"] == "cleared"], 3)


async def test_rtu_through_a_pseudo_terminal_pair(tmp_path, unique_id) -> None:
    model = CabinetModel(ports=2, scenario="overpower", scenario_port=2, incident_after=0.5, seed=4)
    async with PtyPair() as pty, CabinetServer(model, serial=pty.b, baudrate=38400):
        raw = cabinet_site(unique_id, bus={"type": "modbus_rtu", "port": pty.a, "baudrate": 38400,
                                           "timeout": 0.3, "frame_gap": 0.002})
        raw["devices"][0]["channels"] = 2
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            await wait_until(lambda: ("charger-1", 1) in gw.pipeline.latest, 5, "a reading over RTU")
            await wait_until(lambda: not model.relay(2), 5, "port 2 cut over RTU")
            assert gw.pipeline.latest[("charger-1", 1)].values["voltage"] > 200
            assert model.relay(1)
            [alarm] = gw.alarms.open_alarms()
            assert alarm.rule == "over-power" and alarm.channel == 2
