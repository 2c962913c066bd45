"""An escalation stands: a new occurrence of the alarm does not take its urgency back."""

from __future__ import annotations

from gateway.alarms.manager import AlarmManager
from gateway.clock import FakeClock


def test_a_repeat_keeps_the_escalated_severity() -> None:
    clock = FakeClock()
    events: list[tuple[str, int]] = []
    manager = AlarmManager(clock=clock, listeners=[lambda t: events.append((t.event, t.alarm["severity"]))])

    def occur() -> None:
        manager.activate(rule="smoke", severity=2, device="cab", kind="ev_charging", channel=None,
                         location={}, message="smoke", value=1.0, ts=clock.time(),
                         escalate_after=60)

    occur()
    clock.advance(60)
    manager.tick(clock.time())  # nobody acknowledged: level 2 becomes level 1
    manager.deactivate(rule="smoke", device="cab", channel=None, value=0.0, ts=clock.time())
    clock.advance(1)
    occur()  # it comes back, reported by the rule at its own level 2
    assert events == [("raised", 2), ("escalated", 1), ("cleared", 1), ("repeated", 1)]
    [alarm] = manager.open_alarms()
    assert alarm.severity == 1 and alarm.base_severity == 2 and alarm.count == 2
    clock.advance(60)
    manager.tick(clock.time())  # still unacknowledged: on to level 0
    assert events[-1] == ("escalated", 0)


# -- the manager's other edges (found by mutation testing) --------------------------------

import pytest  # noqa: E402

from gateway.alarms.manager import AlarmCommandRefused, UnknownAlarm  # noqa: E402


def manager_with_log(**kw):
    clock = FakeClock(start=1_700_000_000.0)
    seen: list = []
    return AlarmManager(clock=clock, listeners=[seen.append], **kw), clock, seen


def raise_alarm(manager, clock, *, severity=2, momentary=False, kind="ev_charging", **kw):
    return manager.activate(rule="r", severity=severity, device="cab", kind=kind, channel=1,
                            location={}, message="m", value=1.0, ts=clock.time(),
                            momentary=momentary, **kw)


def test_escalation_repeats_every_period_and_says_why() -> None:
    manager, clock, seen = manager_with_log()
    alarm = raise_alarm(manager, clock, severity=3, escalate_after=30)
    clock.advance(30)
    manager.tick(clock.time())
    assert alarm.next_escalation == clock.time() + 30  # the next one, a period on
    clock.advance(29.5)
    manager.tick(clock.time())
    assert alarm.severity == 2  # not yet
    clock.advance(0.5)
    manager.tick(clock.time())
    assert alarm.severity == 1 and alarm.escalations == 2
    escalated = [t for t in seen if t.event == "escalated"]
    assert [(t.by, t.note) for t in escalated] == [(None, "not acknowledged within 30 s")] * 2


def test_by_default_nothing_escalates_and_the_count_of_transitions_starts_at_zero() -> None:
    manager, clock, seen = manager_with_log()
    assert manager.transitions == 0
    alarm = raise_alarm(manager, clock, severity=1)
    assert alarm.next_escalation is None and alarm.escalate_after is None
    manager.deactivate(rule="r", device="cab", channel=1, value=0.0, ts=clock.time())
    assert manager.transitions == 2 == len(seen)


def test_unshelving_at_the_timer_arms_escalation_from_the_timer_time() -> None:
    manager, clock, seen = manager_with_log(escalate_after=60)
    alarm = raise_alarm(manager, clock, severity=1)
    manager.shelve(alarm.id, by="wang", note="maintenance", minutes=1)
    assert alarm.next_escalation is None
    manager.tick(clock.time() + 90)  # the timer's own "now", later than the clock
    assert alarm.shelved_until is None and alarm.next_escalation == clock.time() + 150
    assert alarm.escalations == 0 and seen[-1].event == "unshelved"  # a full period from now
    manager.shelve(alarm.id, by="wang", minutes=1)
    manager.unshelve(alarm.id, by="li", note="back")
    assert (seen[-1].event, seen[-1].by, seen[-1].note) == ("unshelved", "li", "back")


def test_who_acknowledged_is_kept_when_the_ack_closes_the_alarm() -> None:
    manager, clock, seen = manager_with_log()
    alarm = raise_alarm(manager, clock)
    manager.deactivate(rule="r", device="cab", channel=1, value=0.0, ts=clock.time())
    manager.ack(alarm.id, by="wang", note="checked the cabinet")
    assert [(t.event, t.by, t.note) for t in seen[-2:]] == [
        ("acked", "wang", "checked the cabinet"), ("closed", "wang", "checked the cabinet")]
    assert alarm.next_escalation is None
    [closed] = manager.recently_closed()
    assert closed["id"] == alarm.id and closed["state"] == "closed"


def test_recently_closed_is_newest_first_and_bounded() -> None:
    from gateway.alarms.manager import RECENTLY_CLOSED

    manager, clock, _ = manager_with_log()
    ids = []
    for i in range(RECENTLY_CLOSED + 5):
        a = manager.activate(rule=f"r{i}", severity=3, device="d", kind="k", channel=None,
                             location={}, message="m", value=None, ts=clock.time(), momentary=True)
        manager.ack(a.id, by="x")
        ids.append(a.id)
    closed = manager.recently_closed()
    assert len(closed) == RECENTLY_CLOSED and closed[0]["id"] == ids[-1]


def test_shelving_needs_a_positive_time_up_to_the_limit() -> None:
    manager, clock, _ = manager_with_log(max_shelve=3600)
    alarm = raise_alarm(manager, clock)
    for minutes in (None, 0, -5):
        with pytest.raises(AlarmCommandRefused) as info:
            manager.shelve(alarm.id, by="x", minutes=minutes)
        assert (info.value.alarm_id, info.value.command) == (alarm.id, "shelve")
        assert info.value.reason == "needs a positive number of minutes"
    manager.shelve(alarm.id, by="x", minutes=0.5)  # half a minute is a positive time
    manager.shelve(alarm.id, by="x", minutes=60)  # exactly the limit
    assert alarm.shelved_until == clock.time() + 3600
    with pytest.raises(AlarmCommandRefused) as info:
        manager.shelve(alarm.id, by="x", minutes=60.5)
    assert (info.value.alarm_id, info.value.command) == (alarm.id, "shelve")
    assert "at most 60 minutes" in info.value.reason


def test_a_reset_is_refused_while_the_condition_holds_and_acknowledges_otherwise() -> None:
    manager, clock, seen = manager_with_log()
    alarm = raise_alarm(manager, clock, latch=True)
    with pytest.raises(AlarmCommandRefused) as info:
        manager.reset(alarm.id, by="x")
    assert (info.value.alarm_id, info.value.command) == (alarm.id, "reset")
    manager.deactivate(rule="r", device="cab", channel=1, value=0.0, ts=clock.time())
    manager.reset(alarm.id, by="x")
    assert alarm.acked is True and seen[-1].alarm["acked"] is True
    with pytest.raises(UnknownAlarm) as unknown:
        manager.get(alarm.id)
    assert unknown.value.alarm_id == alarm.id and alarm.id in str(unknown.value)


def test_what_is_published_about_an_alarm() -> None:
    manager, clock, seen = manager_with_log()
    alarm = raise_alarm(manager, clock, momentary=True, kind="door_access")
    assert seen[0].alarm["kind"] == "door_access" and alarm.momentary is True
    assert set(seen[0].to_json()) == {"event", "ts", "alarm"}
    assert manager.deactivate(rule="r", device="cab", channel=1, value=None, ts=clock.time()) is alarm
    assert len(seen) == 1  # an event has no condition to clear
    manager.ack(alarm.id, by="x")
    latched = raise_alarm(manager, clock, latch=True)
    manager.ack(latched.id, by="x")
    manager.deactivate(rule="r", device="cab", channel=1, value=0.0, ts=clock.time())
    assert seen[-1].event == "condition_cleared" and seen[-1].alarm["condition"] is False
    assert raise_alarm(manager, clock) is latched  # a new occurrence: to acknowledge again
    assert seen[-1].event == "repeated" and seen[-1].alarm["acked"] is False
    manager.condition_unknown(latched)
    assert latched.to_json()["condition"] is False


def test_open_alarms_are_most_severe_first_then_newest() -> None:
    manager, clock, _ = manager_with_log()
    for rule, severity in (("a", 2), ("b", 1), ("c", 2)):
        manager.activate(rule=rule, severity=severity, device="d", kind="k", channel=None,
                         location={}, message="m", value=None, ts=clock.time())
        clock.advance(1)
    assert [a.rule for a in manager.open_alarms()] == ["b", "c", "a"]


def test_history_in_memory_keeps_the_newest_entries() -> None:
    from gateway.alarms.manager import HISTORY_IN_MEMORY

    manager, clock, _ = manager_with_log()
    alarm = raise_alarm(manager, clock, momentary=True)
    for _ in range(HISTORY_IN_MEMORY - 1):
        raise_alarm(manager, clock, momentary=True)
    assert len(alarm.history) == HISTORY_IN_MEMORY and alarm.history[0]["event"] == "raised"
    raise_alarm(manager, clock, momentary=True)
    assert len(alarm.history) == HISTORY_IN_MEMORY
    assert alarm.history[0]["event"] == "repeated" and alarm.history[-1]["event"] == "repeated"
    assert alarm.count == HISTORY_IN_MEMORY + 1


def test_alarm_ids_are_time_ordered_base36_milliseconds() -> None:
    manager, clock, _ = manager_with_log()
    a = raise_alarm(manager, clock)
    ms = int(clock.time() * 1000)
    digits = ""
    while ms:
        ms, r = divmod(ms, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
    assert a.id == f"{digits}-000"
    b = manager.activate(rule="other", severity=2, device="cab", kind="k", channel=1,
                         location={}, message="m", value=None, ts=clock.time())
    assert b.id == f"{digits}-001"


def test_a_restored_duplicate_is_skipped_and_the_rest_still_restored() -> None:
    manager, clock, _ = manager_with_log()
    alarm = raise_alarm(manager, clock)
    record = alarm.to_record()
    other = dict(record, id="zz-1", rule="other")
    same_id_other_key = dict(record, rule="third")
    restored = manager.restore([record, same_id_other_key, other])
    assert [a.id for a in restored] == ["zz-1"]
