"""Perimeter, key areas, one-key buttons and water supply end to end: the example
site's rules against the I/O module simulator on real Modbus TCP, with arming,
bypass and out-of-service through the HTTP API."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest
import yaml

from harness import running_gateway, wait_until, write_site
from simulators.io_module import IoModuleModel
from simulators.modbus_server import CabinetServer

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "configs", "perimeter-site.yaml")
TOKEN = "perimeter-api-token-for-tests"


@pytest.fixture(autouse=True)
def api_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_API_TOKEN", TOKEN)


def perimeter_site(site_id: str, *, port: int, http_port: int, fence: str = "always") -> dict:
    """The example site on a Modbus TCP simulator, with test-sized delays."""
    with open(EXAMPLE, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    raw["site"]["id"] = site_id
    del raw["mqtt"], raw["local_series"]
    raw["buses"] = [{"id": "perimeter-line", "type": "modbus_tcp", "host": "127.0.0.1",
                     "port": port, "timeout": 0.5}]
    raw["devices"][0]["poll_interval"] = 0.05
    raw["devices"][1]["poll_interval"] = 0.05
    raw["devices"][1]["slave_base"] = 0  # one simulated module carries both here
    raw["arming"][0]["schedule"] = fence
    raw["http"] = {"listen": f"127.0.0.1:{http_port}", "token": {"env": "TEST_API_TOKEN"}}
    for rule in raw["rules"]:
        if rule.get("for"):
            rule["for"] = 0.5
        if rule.get("on_delay"):
            rule["on_delay"] = 0.3
        for action in rule.get("actions", []):
            action["for"] = 0.4
    return raw


def open_rules(gw) -> dict:
    return {a.rule: a for a in gw.alarms.open_alarms()}


async def post(http_port: int, path: str, body: dict) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{http_port}{path}", json=body,
                                headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            return r.status, await r.json()


async def test_an_armed_fence_break_alarms_and_sounds_the_siren_for_its_time(
        tmp_path, unique_id, free_port):
    model = IoModuleModel(scenario="night-intrusion", incident_after=0.5)
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv:
        raw = perimeter_site(unique_id, port=srv.port, http_port=free_port())
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            await wait_until(lambda: "fence-intrusion" in open_rules(gw), 5, "intrusion alarm")
            await wait_until(lambda: (8, False) in model.writes, 5, "siren off after its time")
    alarm = open_rules(gw)["fence-intrusion"]
    assert alarm.severity == 1 and alarm.channel == 1
    assert alarm.location["zone_name"] == "north fence segment 2 (gate 1 - gate 2)"
    assert model.writes.index((8, True)) < model.writes.index((8, False))
    assert (7, True) in model.writes  # the floodlight


async def test_a_disarmed_fence_stays_quiet_until_a_guard_arms_it(tmp_path, unique_id, free_port):
    model = IoModuleModel()
    http_port = free_port()
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv:
        raw = perimeter_site(unique_id, port=srv.port, http_port=http_port, fence="never")
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            await wait_until(lambda: ("perimeter-north", 1) in gw.pipeline.latest, 5, "polled")
            model.inputs[0] = False  # someone walks through the beam, daytime
            await wait_until(lambda: gw.pipeline.disarmed >= 1, 5, "break seen, not alarmed")
            model.inputs[0] = True
            await wait_until(lambda: gw.pipeline.latest[("perimeter-north", 1)].values[
                "loop_closed"] == 1, 5, "closed again")
            assert "fence-intrusion" not in open_rules(gw)
            status, body = await post(http_port, "/api/arming/perimeter-night",
                                      {"armed": True, "by": "guard Li", "note": "night round"})
            assert status == 200, body
            [group] = [g for g in body["groups"] if g["id"] == "perimeter-night"]
            assert group["armed"] and group["source"] == "manual"
            assert group["by"] == "guard Li via api-token"
            model.inputs[0] = False
            await wait_until(lambda: "fence-intrusion" in open_rules(gw), 5, "now it alarms")
            # the state survives a restart of the gateway (protection.json in the state dir)
        async with running_gateway(write_site(tmp_path, raw)) as gw2:
            assert gw2.protections.armed("perimeter-night")


async def test_tamper_alarms_at_all_times_unless_the_input_is_bypassed(
        tmp_path, unique_id, free_port):
    model = IoModuleModel()
    http_port = free_port()
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv:
        raw = perimeter_site(unique_id, port=srv.port, http_port=http_port, fence="never")
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            await wait_until(lambda: ("perimeter-north", 2) in gw.pipeline.latest, 5, "polled")
            until = (datetime.now(timezone.utc) + timedelta(hours=2)).isoformat()
            status, body = await post(http_port, "/api/bypass", {
                "device": "perimeter-north", "channel": 2, "until": until, "by": "tech Wang",
                "note": "detector being replaced"})
            assert status == 200 and body["bypassed"][0]["input"] == "perimeter-north:2"
            model.inputs[1] = False
            await wait_until(lambda: gw.alarms.held_back["bypassed"] >= 1, 5, "held back")
            assert "tamper" not in open_rules(gw)
            status, _ = await post(http_port, "/api/bypass/end",
                                   {"device": "perimeter-north", "channel": 2, "by": "tech Wang"})
            assert status == 200
            model.inputs[1] = True
            await wait_until(lambda: gw.pipeline.latest[("perimeter-north", 2)].values[
                "loop_closed"] == 1, 5, "closed")
            model.inputs[1] = False  # the cover opened again, after the bypass
            await wait_until(lambda: "tamper" in open_rules(gw), 5, "tamper alarm")
            # bad requests are refused with a reason
            status, body = await post(http_port, "/api/bypass", {
                "device": "perimeter-north", "channel": 2, "until": "2020-01-01T00:00:00Z",
                "by": "x", "note": "y"})
            assert status == 400 and "past" in body["error"]
            status, body = await post(http_port, "/api/bypass", {
                "device": "perimeter-north", "channel": 2, "until": until, "by": "x"})
            assert status == 400 and "note" in body["error"]


async def test_a_cut_wire_alarms_even_while_disarmed(tmp_path, unique_id, free_port):
    model = IoModuleModel(scenario="cut-wire", incident_after=0.3)
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv:
        raw = perimeter_site(unique_id, port=srv.port, http_port=free_port(), fence="never")
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            await wait_until(lambda: "loop-open" in open_rules(gw), 5, "cut wire alarm")
    assert "fence-intrusion" not in open_rules(gw)
    assert open_rules(gw)["loop-open"].channel == 1


async def test_a_one_key_alarm_latches_and_its_reset_needs_a_note(tmp_path, unique_id, free_port):
    model = IoModuleModel(scenario="one-key", incident_after=0.2)
    http_port = free_port()
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv:
        raw = perimeter_site(unique_id, port=srv.port, http_port=http_port)
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            await wait_until(lambda: "one-key-alarm" in open_rules(gw), 5, "one-key alarm")
            alarm = open_rules(gw)["one-key-alarm"]
            assert alarm.severity == 1 and alarm.latched
            assert alarm.location["room"] == "602" and alarm.location["unit"] == "2"
            model.scenario = "normal"
            model.inputs[4] = True  # the guard resets the button in the flat
            await wait_until(lambda: not open_rules(gw)["one-key-alarm"].condition, 5, "released")
            status, body = await post(http_port, f"/api/alarms/{alarm.id}/reset", {"by": "guard Li"})
            assert status == 409 and "note" in body["error"]
            status, body = await post(http_port, f"/api/alarms/{alarm.id}/reset",
                                      {"by": "guard Li", "note": "resident fell, ambulance"})
            assert status == 200, body
            assert "one-key-alarm" not in open_rules(gw)


async def test_low_hydrant_pressure_a_dead_transmitter_and_out_of_service(
        tmp_path, unique_id, free_port):
    model = IoModuleModel(scenario="pressure-drop", incident_after=0.3)
    http_port = free_port()
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv:
        raw = perimeter_site(unique_id, port=srv.port, http_port=http_port)
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            await wait_until(lambda: "hydrant-pressure-low" in open_rules(gw), 5, "low pressure")
            assert "0.05 MPa" in open_rules(gw)["hydrant-pressure-low"].message
            model.analog[0] = 0  # the transmitter's loop opens: a fault, not a reading
            model.scenario = "normal"
            fault = "device_fault:pressure_transmitter_loop_open"
            await wait_until(lambda: fault in open_rules(gw), 5, "device fault")
            assert open_rules(gw)[fault].details == {"fault": "pressure transmitter loop open"}
            model.analog[0] = 9600  # repaired: 0.56 MPa
            await wait_until(lambda: not open_rules(gw)[fault].condition, 5, "fault cleared")
            # planned work: out of service, alarms held back, readings still flow
            until = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
            status, _ = await post(http_port, "/api/out_of_service", {
                "device": "water-supply", "until": until, "by": "tech Wang",
                "note": "pump maintenance"})
            assert status == 200
            model.analog[1] = 4000  # the tank is drained for the work
            await wait_until(lambda: gw.pipeline.latest[("water-supply", None)].values[
                "tank_level"] == 0.0, 5, "readings flow")
            await wait_until(lambda: gw.alarms.held_back["out_of_service"] >= 1, 5, "held back")
            assert "tank-level-low" not in open_rules(gw)
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{http_port}/api/digest") as r:
                    digest = (await r.json())["since"]
            [water] = [d for d in digest["devices"] if d["device"] == "water-supply"]
            assert water["faults"] == {"pressure transmitter loop open": 1}


async def test_over_rs485_on_a_pty_the_alarm_reaches_mqtt_and_the_inputs_the_tsdb(
        tmp_path, unique_id, free_port, mosquitto, victoria, monkeypatch):
    """The same module on Modbus RTU (9600 8N1 on a pseudo-terminal pair)."""
    from harness import MqttRecorder
    from simulators.ptypair import PtyPair

    monkeypatch.setenv("TEST_INFLUX_TOKEN", "test-token")
    model = IoModuleModel(scenario="night-intrusion", incident_after=1.0)
    async with PtyPair() as pair, CabinetServer(model, serial=pair.b, baudrate=9600), \
            MqttRecorder(mosquitto.port, f"community/{unique_id}/#") as mqtt:
        raw = perimeter_site(unique_id, port=0, http_port=free_port())
        raw["buses"] = [{"id": "perimeter-line", "type": "modbus_rtu", "port": pair.link_a,
                         "baudrate": 9600, "timeout": 0.3}]
        for dev in raw["devices"]:
            dev["poll_interval"] = 0.1
        raw["mqtt"] = {"host": "127.0.0.1", "port": mosquitto.port}
        raw["influxdb"] = {"url": victoria.url, "org": "o", "bucket": "b",
                           "token": {"env": "TEST_INFLUX_TOKEN"}, "flush_interval": 0.2}
        async with running_gateway(write_site(tmp_path, raw)):
            [raised] = await mqtt.wait_for(lambda: [e["alarm"] for _, e in mqtt.json_on(
                "/alarm_events") if e["event"] == "raised"], 10)
            loops = await victoria.wait_for_series_async(
                f'perimeter_loop_closed{{site="{unique_id}",input="1"}}',
                lambda s: bool(s) and 0 in s[0]["values"], timeout=10)
    assert raised["rule"] == "fence-intrusion" and raised["location"]["input"] == 1
    assert loops[0]["metric"]["device"] == "perimeter-north"
