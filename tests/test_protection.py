"""Arming schedules, hand-made arming, bypass and out of service on an injected clock;
device faults declared in profiles (bits, codes, flags, events)."""

from __future__ import annotations

import time

import pytest

from gateway.device_faults import FaultSource
from gateway.alarms.protection import Protections, Schedule
from gateway.clock import FakeClock


def local(hour: int, minute: int = 0, day: int = 10) -> float:
    """A wall-clock time at this local hour (whatever the machine's time zone)."""
    return time.mktime((2026, 12, day, hour, minute, 0, 0, 0, -1))


@pytest.mark.parametrize("hour,armed", [(21, False), (22, True), (23, True), (0, True),
                                        (5, True), (6, False), (12, False)])
def test_a_night_window_crosses_midnight(hour, armed):
    assert Schedule(["22:00-06:00"]).armed_at(local(hour, 1)) is armed


def test_always_never_and_several_windows():
    assert Schedule("always").armed_at(local(12)) and not Schedule("never").armed_at(local(12))
    lunch = Schedule(["12:00-13:30", "22:00-06:00"])
    assert lunch.armed_at(local(13, 29)) and not lunch.armed_at(local(13, 30))
    assert lunch.next_change(local(13, 0)) == local(13, 30)
    assert Schedule("always").next_change(local(1)) is None


@pytest.mark.parametrize("bad", [["22:00"], ["25:00-06:00"], ["22:00-06:61"], ["x-y"]])
def test_bad_windows_are_refused(bad):
    with pytest.raises(ValueError):
        Schedule(bad)


def protections(tmp_path, clock) -> Protections:
    return Protections(groups={"fence": ("Fence", Schedule(["22:00-06:00"])),
                               "pump": ("Pump room", Schedule("always"))},
                       state_dir=tmp_path, clock=clock)


def test_disarming_by_hand_lasts_until_the_schedule_next_changes(tmp_path):
    clock = FakeClock(start=local(23))
    p = protections(tmp_path, clock)
    assert p.armed("fence")
    p.set_armed("fence", False, by="guard", note="patrol at the gate")
    assert not p.armed("fence")
    clock.advance(local(6, 30) + 86400 - local(23))  # next morning: schedule disarmed anyway
    assert not p.armed("fence")
    clock.advance(16 * 3600)  # 22:30 the next night: the schedule arms again
    assert p.armed("fence")


def test_bypass_and_out_of_service_expire_and_survive_a_restart(tmp_path):
    clock = FakeClock(start=local(10))
    p = protections(tmp_path, clock)
    p.bypass("fence-io", 2, by="tech", note="new detector", until=clock.time() + 3600)
    p.take_out_of_service("pump", by="tech", note="maintenance", until=clock.time() + 600)
    assert p.hold_back("tamper", "fence-io", 2, clock.time()) == "bypassed"
    assert p.hold_back("tamper", "fence-io", 3, clock.time()) is None
    assert p.hold_back("low", "pump", None, clock.time()) == "out_of_service"
    again = protections(tmp_path, clock)  # a restart reads the state file
    assert again.hold_back("tamper", "fence-io", 2, clock.time()) == "bypassed"
    clock.advance(601)
    assert again.hold_back("low", "pump", None, clock.time()) is None
    clock.advance(3000)
    assert again.hold_back("tamper", "fence-io", 2, clock.time()) is None


def test_a_damaged_state_file_means_nothing_is_held_back(tmp_path, caplog):
    (tmp_path / "protection.json").write_text("{not json")
    p = protections(tmp_path, FakeClock(start=local(10)))
    assert p.hold_back("x", "fence-io", 2, local(10)) is None
    assert "unreadable" in caplog.text


@pytest.mark.parametrize("source,value,faults", [
    ({"field": "status", "bits": {0: "detector fault", 3: "low battery"}}, 0b1001,
     ["detector fault", "low battery"]),
    ({"field": "status", "bits": {0: "detector fault", 3: "low battery"}}, 0b0001,
     ["detector fault"]),
    ({"field": "error", "codes": {1: "open circuit", 2: "short"}}, 2, ["short"]),
    ({"field": "error", "codes": {1: "open circuit", 2: "short"}}, 0, []),
    ({"field": "tamper", "when": 1, "fault": "cover open"}, 1, ["cover open"]),
    ({"field": "pressure", "below": -0.01, "fault": "loop open"}, -0.4, ["loop open"]),
    ({"field": "pressure", "below": -0.01, "fault": "loop open"}, 0.3, []),
])
def test_fault_sources_read_their_field(source, value, faults):
    assert FaultSource(**source).active(value) == faults


@pytest.mark.parametrize("bad", [
    {"field": "x"}, {"bits": {0: "a"}}, {"field": "x", "when": 1},
    {"field": "x", "bits": {40: "a"}}, {"event": "e", "field": "x", "fault": "f"},
    {"field": "x", "when": 1, "codes": {1: "a"}, "fault": "f"}, {"field": "x", "clear_on": "e",
                                                                 "bits": {0: "a"}},
])
def test_fault_sources_are_checked(bad):
    with pytest.raises(ValueError):
        FaultSource(**bad)


async def test_device_faults_from_a_profile_raise_and_clear_one_alarm_each(tmp_path):
    """A local Modbus profile with a status word; bits become device_fault alarms."""
    import yaml

    from gateway.clock import FakeClock as Clock
    from gateway.runtime.site import load_site
    from gateway.readings import Reading
    from gateway.runtime.app import Gateway

    (tmp_path / "detector.yaml").write_text(yaml.safe_dump({
        "kind": "smoke_detector",
        "fields": [{"name": "status", "table": "holding", "address": 0, "slave": 1}],
        "faults": [{"field": "status", "bits": {0: "detector fault", 3: "dirty chamber"}}]}))
    (tmp_path / "site.yaml").write_text(yaml.safe_dump({
        "site": {"id": "t"}, "state_dir": str(tmp_path / "state"),
        "buses": [{"id": "b", "type": "modbus_tcp", "host": "127.0.0.1"}],
        "devices": [{"id": "smoke-1", "type": "modbus", "bus": "b", "profile": "detector.yaml",
                     "location": {"building": "3", "room": "charging room"}}]}))
    gw = Gateway(load_site(tmp_path / "site.yaml"), clock=Clock())

    def status(word: int) -> None:
        gw.pipeline.process([[Reading("smoke-1", None, {"status": float(word)}, gw.clock.time())]])

    def open_faults() -> dict:
        return {a.rule: a for a in gw.alarms.open_alarms() if a.condition}

    status(0)
    assert not open_faults()
    status(0b1001)
    faults = open_faults()
    assert set(faults) == {"device_fault:detector_fault", "device_fault:dirty_chamber"}
    assert faults["device_fault:dirty_chamber"].severity == 3
    assert "dirty chamber" in faults["device_fault:dirty_chamber"].message
    assert "charging room" in faults["device_fault:dirty_chamber"].message
    status(0b1000)
    assert set(open_faults()) == {"device_fault:dirty_chamber"}
    status(0)
    assert not open_faults()
