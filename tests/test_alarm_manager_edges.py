"""The alarm manager's edges, one behaviour at a time (found by mutation testing,
docs/mutation-testing.md): what a raised alarm holds, what a repeat and a clear change,
what is held back, the exact limits of shelving and escalation, what each transition
carries, the in-memory history, ids and the default settings."""

from __future__ import annotations

import pytest

from gateway.alarms.manager import (
    HISTORY_NOTE_CHARS,
    AlarmCommandRefused,
    AlarmManager,
    Transition,
    UnknownAlarm,
)
from gateway.clock import FakeClock

T0 = 1_700_000_000.0


def manager(**kw):
    clock = FakeClock(start=T0)
    seen: list[Transition] = []
    return AlarmManager(clock=clock, listeners=[seen.append], **kw), clock, seen


def occur(mgr, ts, *, rule="fire", device="pump", channel=2, severity=2, **kw):
    kw.setdefault("kind", "fire_water")
    kw.setdefault("location", {"building": "7"})
    kw.setdefault("message", "low pressure")
    kw.setdefault("value", 0.12)
    return mgr.activate(rule=rule, severity=severity, device=device, channel=channel, ts=ts, **kw)


def clear(mgr, ts, *, rule="fire", device="pump", channel=2, value=0.5):
    return mgr.deactivate(rule=rule, device=device, channel=channel, value=value, ts=ts)


# -- the errors ----------------------------------------------------------------------


def test_the_errors_name_the_alarm_and_the_reason() -> None:
    unknown = UnknownAlarm("abc-001")
    assert unknown.alarm_id == "abc-001" and str(unknown) == "no open alarm 'abc-001'"
    refused = AlarmCommandRefused("abc-001", "reset", "not now")
    assert (refused.alarm_id, refused.command, refused.reason) == ("abc-001", "reset", "not now")
    assert str(refused) == "reset of abc-001 refused: not now"
    assert isinstance(refused, ValueError)


# -- a transition as published --------------------------------------------------------


def test_a_transition_publishes_who_and_a_note_only_when_given() -> None:
    alarm = {"id": "x"}
    full = Transition("acked", alarm, T0, "wang", "on my way").to_json()
    assert full == {"event": "acked", "ts": "2023-11-14T22:13:20.000Z", "alarm": alarm,
                    "by": "wang", "note": "on my way"}
    assert Transition("raised", alarm, T0).to_json() == {
        "event": "raised", "ts": "2023-11-14T22:13:20.000Z", "alarm": alarm}
    # an empty name is still a name; an empty note says nothing
    assert Transition("acked", alarm, T0, "", "").to_json() == {
        "event": "acked", "ts": "2023-11-14T22:13:20.000Z", "alarm": alarm, "by": ""}


# -- the settings ---------------------------------------------------------------------


def test_the_default_settings() -> None:
    mgr = AlarmManager(clock=FakeClock(start=T0))  # no listeners: nothing to call
    assert mgr.escalate_after == 0.0 and mgr.max_shelve == 8 * 3600.0
    assert mgr.transitions == 0 and mgr.hold_back is None and not mgr.held_back
    alarm = occur(mgr, T0, severity=1)
    assert alarm.escalate_after is None and alarm.next_escalation is None
    mgr.shelve(alarm.id, by="x", minutes=8 * 60)  # eight hours is allowed
    with pytest.raises(AlarmCommandRefused) as info:
        mgr.shelve(alarm.id, by="x", minutes=8 * 60 + 0.5)
    assert info.value.reason == "at most 480 minutes (asked 480.5)"
    assert mgr.transitions == 2


def test_a_listener_added_later_gets_every_transition_from_then_on() -> None:
    mgr, clock, seen = manager()
    occur(mgr, T0)
    later: list[Transition] = []
    mgr.add_listener(later.append)
    clear(mgr, T0 + 1)
    assert [t.event for t in seen] == ["raised", "cleared"]
    assert [t.event for t in later] == ["cleared"]


def test_a_failing_listener_does_not_stop_the_others() -> None:
    seen: list[str] = []

    def broken(_t: Transition) -> None:
        raise RuntimeError("listener bug")

    mgr = AlarmManager(clock=FakeClock(start=T0), listeners=[broken, lambda t: seen.append(t.event)])
    occur(mgr, T0)
    assert seen == ["raised"] and mgr.transitions == 1


# -- raising ----------------------------------------------------------------------------


def test_a_raised_alarm_holds_everything_the_rule_said() -> None:
    mgr, clock, seen = manager()
    details = {"limit": 0.2}
    alarm = occur(mgr, T0 + 0.5, latch=True, details=details, reset_needs_note=True,
                  escalate_after=45)
    details["limit"] = 99  # the rule's dict is copied, not kept
    record = alarm.to_record()
    assert record == {
        "id": alarm.id, "rule": "fire", "severity": 2, "device": "pump", "kind": "fire_water",
        "channel": 2, "location": {"building": "7"}, "message": "low pressure", "value": 0.12,
        "first_ts": T0 + 0.5, "last_ts": T0 + 0.5, "state": "active", "acked": False, "count": 1,
        "latched": True, "condition": True, "momentary": False, "base_severity": 2,
        "escalate_after": 45, "next_escalation": T0 + 45, "escalations": 0,
        "shelved_until": None, "reset_needs_note": True, "details": {"limit": 0.2},
        "history": [{"event": "raised", "ts": "2023-11-14T22:13:20.500Z", "by": None, "note": None}],
    }
    [raised] = seen
    assert (raised.event, raised.ts, raised.by, raised.note) == ("raised", T0 + 0.5, None, None)
    assert raised.alarm == alarm.to_json() and raised.record == record
    assert mgr.find("fire", "pump", 2) is alarm and mgr.get(alarm.id) is alarm
    assert mgr.find("fire", "pump", 3) is None and mgr.find("fire", "pump", None) is None
    assert mgr.open_alarms() == [alarm]


def test_the_defaults_of_a_raised_alarm() -> None:
    mgr, clock, _ = manager()
    alarm = occur(mgr, T0)
    assert (alarm.latched, alarm.momentary, alarm.condition, alarm.reset_needs_note) == (
        False, False, True, False)
    assert alarm.details == {} and "reset_needs_note" not in alarm.to_json()
    event = occur(mgr, T0, rule="button", momentary=True)
    assert (event.momentary, event.condition, event.state) == (True, False, "active")


def test_only_urgent_alarms_take_the_managers_escalation_unless_the_rule_says() -> None:
    mgr, clock, _ = manager(escalate_after=60)
    urgent = occur(mgr, T0, rule="a", severity=1)
    assert (urgent.escalate_after, urgent.next_escalation) == (60, T0 + 60)
    for severity in (0, 2, 3):
        other = occur(mgr, T0, rule=f"s{severity}", severity=severity)
        assert (other.escalate_after, other.next_escalation) == (None, None)
    never = occur(mgr, T0, rule="b", severity=1, escalate_after=0)
    assert (never.escalate_after, never.next_escalation) == (None, None)
    own = occur(mgr, T0, rule="c", severity=3, escalate_after=10)
    assert (own.escalate_after, own.next_escalation) == (10, T0 + 10)


# -- held back --------------------------------------------------------------------------


def test_a_held_back_occurrence_is_counted_by_reason_and_changes_nothing() -> None:
    mgr, clock, seen = manager()
    asked: list[tuple] = []
    reason: list[str | None] = ["bypassed"]

    def hold_back(rule, device, channel, ts):
        asked.append((rule, device, channel, ts))
        return reason[0]

    mgr.hold_back = hold_back
    assert occur(mgr, T0) is None and occur(mgr, T0 + 1) is None
    assert mgr.held_back == {"bypassed": 2} and seen == [] and mgr.open_alarms() == []
    assert asked == [("fire", "pump", 2, T0), ("fire", "pump", 2, T0 + 1)]
    reason[0] = None  # back in service
    alarm = occur(mgr, T0 + 2)
    assert alarm is not None and [t.event for t in seen] == ["raised"]
    clear(mgr, T0 + 3)
    reason[0] = "out_of_service"
    assert occur(mgr, T0 + 4, value=9.0) is alarm  # the open one, untouched
    assert (alarm.count, alarm.state, alarm.value, alarm.last_ts) == (1, "cleared", 0.5, T0 + 3)
    assert mgr.held_back == {"bypassed": 2, "out_of_service": 1}
    assert [t.event for t in seen] == ["raised", "cleared"]


# -- repeats ----------------------------------------------------------------------------


def test_a_report_of_the_same_occurrence_updates_its_value_and_details_only() -> None:
    mgr, clock, seen = manager()
    alarm = occur(mgr, T0, details={"a": 1})
    occur(mgr, T0 + 5, value=0.1, message="lower", details={"b": 2})
    assert (alarm.value, alarm.last_ts, alarm.message, alarm.details) == (0.1, T0 + 5, "lower", {"b": 2})
    occur(mgr, T0 + 6, value=0.05)  # no details: the last ones stay
    assert alarm.details == {"b": 2} and alarm.value == 0.05 and alarm.last_ts == T0 + 6
    assert alarm.count == 1 and alarm.first_ts == T0 and [t.event for t in seen] == ["raised"]


def test_a_repeat_counts_reopens_and_needs_a_new_acknowledgement() -> None:
    mgr, clock, seen = manager()
    alarm = occur(mgr, T0, escalate_after=30)
    mgr.ack(alarm.id, by="wang")
    assert alarm.next_escalation is None
    clear(mgr, T0 + 1)  # acknowledged and gone: closed
    alarm = occur(mgr, T0 + 2, latch=True, escalate_after=30)
    mgr.ack(alarm.id, by="wang")
    clear(mgr, T0 + 3)
    assert (alarm.state, alarm.condition) == ("active", False)
    occur(mgr, T0 + 4, value=0.01, message="again", severity=3)
    assert (alarm.count, alarm.state, alarm.condition, alarm.acked) == (2, "active", True, False)
    assert alarm.severity == 2  # a less urgent report does not lower it
    assert (alarm.value, alarm.last_ts, alarm.message) == (0.01, T0 + 4, "again")
    assert alarm.next_escalation == T0 + 30  # armed again, from the clock's time
    clear(mgr, T0 + 5)
    occur(mgr, T0 + 6, severity=1)
    assert alarm.count == 3 and alarm.severity == 1  # a more urgent one raises it
    assert [t.event for t in seen] == ["raised", "acked", "cleared", "closed", "raised", "acked",
                                       "condition_cleared", "repeated", "condition_cleared",
                                       "repeated"]
    assert seen[-1].alarm["count"] == 3 and seen[-1].ts == T0 + 6


def test_an_event_repeats_on_every_occurrence_and_stays_without_a_condition() -> None:
    mgr, clock, seen = manager()
    alarm = occur(mgr, T0, momentary=True)
    occur(mgr, T0 + 1, momentary=True)
    occur(mgr, T0 + 2, momentary=True)
    assert alarm.count == 3 and alarm.condition is False and alarm.state == "active"
    assert [t.event for t in seen] == ["raised", "repeated", "repeated"]


def test_a_repeat_while_shelved_does_not_arm_the_escalation() -> None:
    mgr, clock, seen = manager()
    alarm = occur(mgr, T0, escalate_after=30)
    mgr.shelve(alarm.id, by="wang", minutes=10)
    clear(mgr, T0 + 1)
    occur(mgr, T0 + 2)
    assert alarm.count == 2 and alarm.next_escalation is None
    mgr.tick(T0 + 300)
    assert alarm.escalations == 0


# -- clearing ---------------------------------------------------------------------------


def test_a_clear_records_the_value_and_time_once() -> None:
    mgr, clock, seen = manager()
    assert clear(mgr, T0) is None  # nothing open: nothing to clear
    alarm = occur(mgr, T0)
    assert clear(mgr, T0 + 3, value=0.4) is alarm
    assert (alarm.state, alarm.condition, alarm.value, alarm.last_ts) == ("cleared", False, 0.4, T0 + 3)
    assert clear(mgr, T0 + 4, value=0.9) is alarm  # already gone: nothing changes
    assert (alarm.value, alarm.last_ts) == (0.4, T0 + 3)
    assert [(t.event, t.ts) for t in seen] == [("raised", T0), ("cleared", T0 + 3)]
    assert seen[-1].alarm["state"] == "cleared" and seen[-1].alarm["condition"] is False


def test_a_latched_alarm_whose_condition_goes_stays_active() -> None:
    mgr, clock, seen = manager()
    alarm = occur(mgr, T0, latch=True)
    clear(mgr, T0 + 1, value=0.3)
    assert (alarm.state, alarm.condition, alarm.value, alarm.last_ts) == ("active", False, 0.3, T0 + 1)
    assert [t.event for t in seen] == ["raised", "condition_cleared"]
    assert alarm in mgr.open_alarms()


def test_an_acknowledged_alarm_closes_when_its_condition_goes() -> None:
    mgr, clock, seen = manager()
    alarm = occur(mgr, T0)
    mgr.ack(alarm.id, by="wang", note="coming")
    clear(mgr, T0 + 7)
    assert [(t.event, t.ts, t.by, t.note) for t in seen[-2:]] == [
        ("cleared", T0 + 7, None, None), ("closed", T0 + 7, None, None)]
    assert alarm.state == "closed" and mgr.open_alarms() == [] and mgr.find("fire", "pump", 2) is None
    with pytest.raises(UnknownAlarm):
        mgr.get(alarm.id)
    [closed] = mgr.recently_closed()
    assert closed == alarm.to_json() and closed["state"] == "closed"


# -- operators ------------------------------------------------------------------------


def test_an_acknowledgement_is_timed_by_the_clock_and_counts_once() -> None:
    mgr, clock, seen = manager()
    alarm = occur(mgr, T0, escalate_after=30)
    clock.advance(12)
    assert mgr.ack(alarm.id, by="wang", note="seen") is alarm
    assert alarm.acked is True and alarm.next_escalation is None and alarm.state == "active"
    assert [(t.event, t.ts, t.by, t.note) for t in seen] == [
        ("raised", T0, None, None), ("acked", T0 + 12, "wang", "seen")]
    assert seen[-1].alarm["acked"] is True
    mgr.ack(alarm.id, by="li")  # twice: nothing new
    assert len(seen) == 2 and mgr.transitions == 2
    mgr.tick(T0 + 300)
    assert alarm.escalations == 0


def test_acknowledging_a_latched_alarm_whose_condition_went_waits_for_the_reset() -> None:
    mgr, clock, seen = manager()
    alarm = occur(mgr, T0, latch=True)
    clear(mgr, T0 + 1)
    mgr.ack(alarm.id, by="wang")
    assert alarm in mgr.open_alarms() and seen[-1].event == "acked"


def test_a_reset_closes_by_the_clock_and_stops_the_escalation() -> None:
    mgr, clock, seen = manager()
    alarm = occur(mgr, T0, latch=True, escalate_after=30)
    clear(mgr, T0 + 1)
    clock.advance(20)
    assert mgr.reset(alarm.id, by="zhang", note="checked") is alarm
    assert [(t.event, t.ts, t.by, t.note) for t in seen[-2:]] == [
        ("reset", T0 + 20, "zhang", "checked"), ("closed", T0 + 20, "zhang", "checked")]
    assert seen[-1].record["next_escalation"] is None and seen[-1].record["state"] == "closed"
    assert seen[-2].record["acked"] is True and alarm.next_escalation is None
    assert mgr.open_alarms() == [] and mgr.recently_closed()[0]["id"] == alarm.id


def test_a_reset_is_refused_while_the_condition_holds() -> None:
    mgr, clock, seen = manager()
    alarm = occur(mgr, T0, latch=True)
    with pytest.raises(AlarmCommandRefused) as info:
        mgr.reset(alarm.id, by="x")
    assert info.value.reason == ("its condition is still present "
                                 "(acknowledge it; reset once it is gone)")
    assert alarm in mgr.open_alarms() and len(seen) == 1


def test_a_reset_that_needs_a_note_needs_one_with_words() -> None:
    mgr, clock, seen = manager()
    alarm = occur(mgr, T0, momentary=True, reset_needs_note=True)
    for note in (None, "", "   "):
        with pytest.raises(AlarmCommandRefused) as info:
            mgr.reset(alarm.id, by="x", note=note)
        assert info.value.reason == ("needs a note saying what was found "
                                     "(a one-key alarm is reset with a note)")
        assert (info.value.alarm_id, info.value.command) == (alarm.id, "reset")
    assert alarm in mgr.open_alarms()
    mgr.reset(alarm.id, by="x", note="a child pressed it")
    assert mgr.open_alarms() == [] and seen[-1].note == "a child pressed it"
    plain = occur(mgr, T0, rule="other", momentary=True)
    mgr.reset(plain.id, by="x")  # no note needed
    assert mgr.open_alarms() == []


def test_shelving_sets_its_end_by_the_clock_and_holds_the_escalation() -> None:
    mgr, clock, seen = manager()
    alarm = occur(mgr, T0, escalate_after=30)
    clock.advance(10)
    assert mgr.shelve(alarm.id, by="wang", note="repair", minutes=2.5) is alarm
    assert alarm.shelved_until == T0 + 10 + 150 and alarm.next_escalation is None
    assert [(t.event, t.ts, t.by, t.note) for t in seen[-1:]] == [("shelved", T0 + 10, "wang", "repair")]
    assert seen[-1].alarm["shelved_until"] == "2023-11-14T22:16:00.000Z"
    mgr.tick(T0 + 159.9)
    assert alarm.shelved_until is not None and alarm.escalations == 0
    mgr.tick(T0 + 160)  # exactly the end: shown again, escalation armed from now
    assert alarm.shelved_until is None and alarm.next_escalation == T0 + 190
    assert (seen[-1].event, seen[-1].ts, seen[-1].by, seen[-1].note) == (
        "unshelved", T0 + 160, None, "shelving time is up")
    assert alarm.escalations == 0


def test_unshelving_by_hand_uses_the_clock_and_an_unshelved_alarm_is_left_alone() -> None:
    mgr, clock, seen = manager()
    alarm = occur(mgr, T0, escalate_after=30)
    mgr.unshelve(alarm.id, by="li")  # not shelved: nothing happens
    assert [t.event for t in seen] == ["raised"] and alarm.next_escalation == T0 + 30
    mgr.shelve(alarm.id, by="wang", minutes=5)
    clock.advance(40)
    assert mgr.unshelve(alarm.id, by="li", note="done") is alarm
    assert alarm.shelved_until is None and alarm.next_escalation == T0 + 70
    assert (seen[-1].event, seen[-1].ts, seen[-1].by, seen[-1].note) == ("unshelved", T0 + 40, "li", "done")


def test_an_acknowledged_alarm_unshelved_does_not_escalate() -> None:
    mgr, clock, seen = manager()
    alarm = occur(mgr, T0, escalate_after=30)
    mgr.ack(alarm.id, by="wang")
    mgr.shelve(alarm.id, by="wang", minutes=1)
    mgr.tick(T0 + 60)
    assert alarm.shelved_until is None and alarm.next_escalation is None
    mgr.tick(T0 + 600)
    assert alarm.escalations == 0 and seen[-1].event == "unshelved"


# -- escalation -----------------------------------------------------------------------


def test_escalation_lowers_the_number_by_one_down_to_zero_at_exactly_its_time() -> None:
    mgr, clock, seen = manager()
    alarm = occur(mgr, T0, severity=2, escalate_after=30)
    mgr.tick(T0 + 29.99)
    assert alarm.escalations == 0 and alarm.severity == 2
    mgr.tick(T0 + 30)
    assert (alarm.escalations, alarm.severity, alarm.next_escalation) == (1, 1, T0 + 60)
    assert (seen[-1].event, seen[-1].ts, seen[-1].by) == ("escalated", T0 + 30, None)
    assert seen[-1].alarm["severity"] == 1 and seen[-1].alarm["escalated"] == 1
    mgr.tick(T0 + 61)  # late: the next one a full period after this tick
    assert (alarm.escalations, alarm.severity, alarm.next_escalation) == (2, 0, T0 + 91)
    mgr.tick(T0 + 91)
    assert (alarm.escalations, alarm.severity) == (3, 0)
    assert alarm.base_severity == 2
    assert [t.event for t in seen] == ["raised", "escalated", "escalated", "escalated"]


def test_a_tick_leaves_alarms_without_escalation_alone() -> None:
    mgr, clock, seen = manager()
    alarm = occur(mgr, T0)
    mgr.tick(T0 + 10_000)
    assert alarm.escalations == 0 and alarm.severity == 2 and len(seen) == 1


# -- after a restart ------------------------------------------------------------------


def test_restored_alarms_are_open_findable_and_silent() -> None:
    mgr, clock, seen = manager()
    source, _, _ = manager()
    a = occur(source, T0, rule="a")
    b = occur(source, T0 + 1, rule="b", escalate_after=30)
    restored = mgr.restore([a.to_record(), b.to_record()])
    assert [x.id for x in restored] == [a.id, b.id] and seen == []
    assert mgr.get(a.id).to_record() == a.to_record() and mgr.find("b", "pump", 2).id == b.id
    assert {x.id for x in mgr.open_alarms()} == {a.id, b.id}
    mgr.tick(T0 + 31)  # a restored alarm escalates on its own schedule
    assert [t.event for t in seen] == ["escalated"]
    dup = mgr.restore([a.to_record(), dict(a.to_record(), id="other-1", rule="c")])
    assert [x.id for x in dup] == ["other-1"]  # the duplicate skipped, the rest still taken


def test_a_condition_nobody_reports_on_is_taken_as_gone() -> None:
    mgr, clock, seen = manager()
    alarm = occur(mgr, T0)
    mgr.condition_unknown(alarm)
    assert alarm.condition is False and seen[-1].event == "raised"
    mgr.ack(alarm.id, by="x")  # now an acknowledgement closes it
    assert mgr.open_alarms() == []


# -- the in-memory history --------------------------------------------------------------


def test_a_note_in_the_history_is_cut_at_its_limit_and_the_transition_keeps_it_whole() -> None:
    mgr, clock, seen = manager()
    alarm = occur(mgr, T0)
    exact = "n" * HISTORY_NOTE_CHARS
    long = "x" * (HISTORY_NOTE_CHARS + 1)
    mgr.shelve(alarm.id, by="a", note=exact, minutes=1)
    mgr.ack(alarm.id, by="b", note=long)
    assert alarm.history[1]["note"] == exact
    assert alarm.history[2]["note"] == "x" * (HISTORY_NOTE_CHARS - 1) + "\u2026"
    assert len(alarm.history[2]["note"]) == HISTORY_NOTE_CHARS
    assert seen[-1].note == long
    assert alarm.history[2] == {"event": "acked", "ts": "2023-11-14T22:13:20.000Z", "by": "b",
                                "note": alarm.history[2]["note"]}


# -- ids --------------------------------------------------------------------------------


def test_the_id_sequence_wraps_at_4096_and_skips_ids_still_open() -> None:
    mgr = AlarmManager(clock=FakeClock(start=T0))
    first = occur(mgr, T0, rule="r0", momentary=True)
    prefix = first.id.split("-")[0]
    assert first.id == f"{prefix}-000"
    for i in range(1, 4096):
        occur(mgr, T0, rule=f"r{i}", momentary=True)
    assert mgr.find("r4095", "pump", 2).id == f"{prefix}-fff"
    # every number of this millisecond is taken: after one round, a longer one
    # (numbers 4096 to 8191 tried, then 8192), never a loop without end
    assert occur(mgr, T0, rule="full", momentary=True).id == f"{prefix}-2000"
    mgr.ack(first.id, by="x")  # 000 is free again
    assert occur(mgr, T0, rule="next", momentary=True).id == f"{prefix}-000"  # wrapped
    mgr.ack(mgr.find("r5", "pump", 2).id, by="x")
    # 001 to 004 are still open: the next free number is taken
    assert occur(mgr, T0, rule="again", momentary=True).id == f"{prefix}-005"
    assert len({a.id for a in mgr.open_alarms()}) == len(mgr.open_alarms()) == 4097
