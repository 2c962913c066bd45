"""Actions that target devices by place: smoke in a charging room cuts every cabinet in
that room (real Modbus cabinets), and an output switched on for a while (a siren)."""

from __future__ import annotations

import asyncio

import pytest

from harness import running_gateway, wait_until, write_site
from simulators.charging_cabinet import CabinetModel
from simulators.modbus_server import CabinetServer

ROOM_A = {"building": "3", "floor": "B1", "room": "charging room A"}
ROOM_B = {"building": "3", "floor": "B1", "room": "charging room B"}
SMOKE_CUTS_THE_ROOM = {
    "id": "smoke", "type": "threshold", "select": {"kinds": ["ev_charging"]}, "field": "smoke",
    "above": 0.5, "severity": 1, "latch": True,
    "actions": [{"write": "relay", "value": 0, "channels": "all",
                 "targets": {"kinds": ["ev_charging"], "same": ["building", "room"]}}]}


def cabinet(device_id: str, port: int, location: dict) -> tuple[dict, dict]:
    bus = {"id": f"bus-{device_id}", "type": "modbus_tcp", "host": "127.0.0.1", "port": port}
    dev = {"id": device_id, "type": "modbus", "bus": bus["id"], "profile": "ev-cabinet",
           "channels": 2, "poll_interval": 0.2, "location": location}
    return bus, dev


async def test_smoke_in_one_room_cuts_every_cabinet_there_and_no_other(tmp_path, unique_id):
    burning = CabinetModel(ports=2, scenario="smoke", scenario_port=1, incident_after=0.5, seed=1)
    neighbour = CabinetModel(ports=2, scenario="normal", scenario_port=1, seed=2)
    elsewhere = CabinetModel(ports=2, scenario="normal", scenario_port=1, seed=3)
    async with CabinetServer(burning, tcp=("127.0.0.1", 0)) as s1, \
            CabinetServer(neighbour, tcp=("127.0.0.1", 0)) as s2, \
            CabinetServer(elsewhere, tcp=("127.0.0.1", 0)) as s3:
        parts = [cabinet("cab-a1", s1.port, ROOM_A), cabinet("cab-a2", s2.port, ROOM_A),
                 cabinet("cab-b1", s3.port, ROOM_B)]
        raw = {"site": {"id": unique_id}, "buses": [b for b, _ in parts],
               "devices": [d for _, d in parts], "rules": [SMOKE_CUTS_THE_ROOM]}
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            await wait_until(lambda: not any(burning.relay(p) or neighbour.relay(p)
                                             for p in (1, 2)), 5, "room A cut")
            await gw.actions.wait_idle()
            [alarm] = [a for a in gw.alarms.open_alarms() if a.rule == "smoke"]
    assert alarm.device == "cab-a1"
    assert elsewhere.relay(1) and elsewhere.relay(2)  # the other room keeps charging


def test_targets_are_checked_against_the_devices(tmp_path):
    from gateway.runtime.site import load_site
    from gateway.errors import ConfigError
    import yaml

    bad = dict(SMOKE_CUTS_THE_ROOM, actions=[{"write": "relay", "value": 0,
                                               "targets": {"kinds": ["no_such_kind"]}}])
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({
        "site": {"id": "t"}, "buses": [{"id": "b", "type": "modbus_tcp", "host": "127.0.0.1"}],
        "devices": [{"id": "c", "type": "modbus", "bus": "b", "profile": "ev-cabinet",
                     "location": ROOM_A}], "rules": [bad]}))
    with pytest.raises(ConfigError) as err:
        load_site(path)
    assert ("rules[0].actions[0].targets", "selects no device") in err.value.problems


class _Recorder:
    """A driver that only records writes (the timed switch-back is about timing, not a bus)."""

    def __init__(self):
        self.writes: list[tuple[int | None, str, float]] = []

    async def write(self, channel, field, value):
        self.writes.append((channel, field, value))


async def test_an_output_is_switched_back_after_its_time(tmp_path, unique_id):
    """A rule switches port 2's relay off for 0.5 s (as a siren or floodlight is on for a
    while); the real cabinet sees it off, then on again."""
    model = CabinetModel(ports=2, scenario="smoke", scenario_port=1, incident_after=0.3, seed=4)
    rule = dict(SMOKE_CUTS_THE_ROOM, actions=[{"write": "relay", "value": 0, "channels": 2,
                                               "for": 0.5}])
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv:
        bus, dev = cabinet("cab", srv.port, ROOM_A)
        raw = {"site": {"id": unique_id}, "buses": [bus], "devices": [dev], "rules": [rule]}
        async with running_gateway(write_site(tmp_path, raw)):
            await wait_until(lambda: not model.relay(2), 5, "switched")
            assert model.relay(1)
            await wait_until(lambda: model.relay(2), 5, "switched back")


async def test_a_new_trigger_restarts_the_time():
    from gateway.runtime.actions import ActionRunner

    siren = _Recorder()
    runner = ActionRunner(drivers={"siren": siren}, on_failure=lambda *a: None)
    runner.submit("siren", 1, "relay", 1, revert_after=0.3, revert_value=0)
    await wait_until(lambda: siren.writes == [(1, "relay", 1.0)], 2, "on")
    runner.submit("siren", 1, "relay", 1, revert_after=0.3, revert_value=0)  # before time is up
    await runner.wait_idle()
    assert siren.writes == [(1, "relay", 1.0), (1, "relay", 1.0), (1, "relay", 0.0)]


async def test_a_stop_does_not_wait_for_a_timed_output_to_switch_back():
    from gateway.runtime.actions import ActionRunner

    siren = _Recorder()
    runner = ActionRunner(drivers={"siren": siren}, on_failure=lambda *a: None)
    runner.submit("siren", 1, "relay", 1, revert_after=3600, revert_value=0)
    await wait_until(lambda: siren.writes == [(1, "relay", 1.0)], 2, "on")
    async with asyncio.timeout(2):  # not the hour
        await runner.wait_idle(timed=False)
    await runner.cancel()
    assert siren.writes == [(1, "relay", 1.0)]  # left as it is at the stop
