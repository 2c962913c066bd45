"""Alarm lifecycle: one alarm per (rule, device, channel); repeats count; ack closes cleared ones."""

from __future__ import annotations

import pytest

from gateway.alarms.manager import AlarmManager, UnknownAlarm
from gateway.clock import FakeClock


def make():
    events = []
    clock = FakeClock()
    mgr = AlarmManager(clock=clock, listeners=[events.append])
    return mgr, events, clock


def raise_(mgr, ts, channel=3, rule="over-power", latch=False):
    return mgr.activate(rule=rule, severity=2, device="charger", kind="ev_charging",
                        channel=channel, location={"building": "3", "port": channel},
                        message="m", value=1200.0, ts=ts, latch=latch)


def test_repeat_counts_instead_of_a_new_alarm() -> None:
    mgr, events, _ = make()
    a = raise_(mgr, 1)
    assert raise_(mgr, 2) is a and a.count == 1  # still active: not a repeat
    mgr.deactivate(rule="over-power", device="charger", channel=3, value=10.0, ts=3)
    b = raise_(mgr, 4)
    assert b is a and a.count == 2 and a.state == "active"
    assert [e.event for e in events] == ["raised", "cleared", "repeated"]
    assert raise_(mgr, 5, channel=2) is not a


def test_alarm_json_contract() -> None:
    mgr, _, _ = make()
    a = raise_(mgr, 1_700_000_000.25)
    j = a.to_json()
    design = {"id", "rule", "severity", "state", "acked", "device", "kind", "location",
              "message", "value", "first_ts", "last_ts", "count"}
    extras = {"latched", "condition", "shelved_until", "escalated", "details"}
    assert set(j) == design | extras
    assert j["first_ts"] == "2023-11-14T22:13:20.250Z"


def test_ack_then_clear_closes() -> None:
    mgr, events, _ = make()
    a = raise_(mgr, 1)
    mgr.ack(a.id, by="guard wang", note="on my way")
    assert a.acked and a.state == "active"
    mgr.deactivate(rule="over-power", device="charger", channel=3, value=0.0, ts=3)
    assert a.state == "closed" and mgr.open_alarms() == []
    assert [e.event for e in events] == ["raised", "acked", "cleared", "closed"]
    assert events[1].by == "guard wang"


def test_clear_then_ack_closes() -> None:
    mgr, events, _ = make()
    a = raise_(mgr, 1)
    mgr.deactivate(rule="over-power", device="charger", channel=3, value=0.0, ts=3)
    assert a.state == "cleared" and mgr.open_alarms() == [a]
    mgr.ack(a.id, by="guard")
    assert mgr.open_alarms() == []
    assert [e.event for e in events][-2:] == ["acked", "closed"]


def test_latched_alarm_does_not_clear_itself() -> None:
    mgr, _, _ = make()
    a = raise_(mgr, 1, channel=None, rule="smoke", latch=True)
    mgr.deactivate(rule="smoke", device="charger", channel=None, value=0.0, ts=2)
    assert a.state == "active"


def test_unknown_alarm() -> None:
    mgr, _, _ = make()
    with pytest.raises(UnknownAlarm):
        mgr.ack("nope", by="x")
