"""Each rule kind's state on its own, edge by edge: what it routes, the exact boundaries of its
timers, and every field of the change it reports (device, channel, field, value, time,
details, momentary). Most of these were found by mutation testing (docs/mutation-testing.md):
the end-to-end tests see them only through the alarm JSON."""

from __future__ import annotations

from types import SimpleNamespace

from gateway.clock import FakeClock
from gateway.config.loader import DeviceSpec
from gateway.config.rules import (AbsenceRule, ConfirmRule, CountRule, EventRule, ForcedRule,
                                  HeldRule)
from gateway.readings import DeviceEvent
from gateway.rules.absence import AbsenceState
from gateway.rules.base import NO_CHANGES, RuleState, json_safe, numeric
from gateway.rules.change import RuleChange
from gateway.rules.confirm import ConfirmState
from gateway.rules.events import CountState, EventState
from gateway.rules.forced import ForcedState
from gateway.rules.held import HeldState
from gateway.rules.match import compile_where, value_set, where_matches


def spec(id_: str, fields: list[str], events: list[str] | None = None) -> DeviceSpec:
    return DeviceSpec(config=SimpleNamespace(id=id_, location=SimpleNamespace(building="1", unit="1")),
                      kind="k", channel_name="channel", channel_count=1,
                      fields=frozenset(fields), writable=frozenset(),
                      events=None if events is None else frozenset(events))


def fields_of(change: RuleChange | None) -> tuple:
    """Every field of a change but the rule, in order."""
    assert change is not None
    return (change.device, change.channel, change.field, change.value, change.ts, change.active,
            change.severity, change.details, change.momentary)


def ev(device: str, name: str, ts: float, channel: int | None = 1, **attrs: object) -> DeviceEvent:
    return DeviceEvent(device, channel, name, ts, dict(attrs))


# -- base and match ------------------------------------------------------------------------


def test_the_base_state_routes_nothing_and_holds_no_condition() -> None:
    s = RuleState("r")
    assert list(s.reading_routes([])) == [] and list(s.event_routes([])) == []
    assert s.tick(1.0) == [] and s.restore("d", 1) is False
    assert NO_CHANGES == []


def test_event_attributes_become_plain_json() -> None:
    class Thing:
        def __str__(self) -> str:
            return "thing"

    attrs = {"n": None, "s": "x", "i": 3, "f": 0.5, "b": True, "l": (1, Thing()),
             "d": {"k": Thing(), 2: [None]}, 7: Thing()}
    assert json_safe(attrs) == {"n": None, "s": "x", "i": 3, "f": 0.5, "b": True,
                                "l": [1, "thing"], "d": {"k": "thing", "2": [None]}, "7": "thing"}
    assert numeric(3) == 3.0 and isinstance(numeric(3), float) and numeric(2.5) == 2.5
    assert numeric(True) is None and numeric("3") is None and numeric(None) is None


def test_value_sets_and_where() -> None:
    assert value_set(None, None) == {1.0}
    assert value_set(None, None, default=5) == {5.0}
    assert value_set(0, None) == {0.0}  # equals 0 is a value, not "not given"
    assert value_set(3, [1, 2]) == {1.0, 2.0}
    where = compile_where({"zone": 38, "state": ["on", True], "f": 1.5})
    assert where_matches(where, {"zone": "38", "state": "on", "f": 1.5})
    assert where_matches(where, {"zone": 38.0, "state": "true", "f": "1.5"})
    assert not where_matches(where, {"zone": 38, "state": False, "f": 1.5})
    assert not where_matches(where, {"zone": 39, "state": "on", "f": 1.5})
    assert not where_matches(where, {"state": "on", "f": 1.5})  # an attribute missing
    assert where_matches(compile_where({"b": False}), {"b": "false"})
    assert not where_matches(compile_where({"x": 2.5}), {"x": 2})


# -- absence -------------------------------------------------------------------------------


def absence(for_: float = 60) -> tuple[AbsenceState, FakeClock]:
    clock = FakeClock(1000.0)
    rule = AbsenceRule.model_validate({"type": "absence", "id": "quiet", "for": for_})
    return AbsenceState(rule, clock=clock), clock


def test_absence_routes_every_reading_and_event_of_each_selected_device() -> None:
    s, _ = absence()
    b, a = spec("b", ["x"]), spec("a", [])
    routes = s.reading_routes([b, a, b])
    assert [(d, f) for d, f, _ in routes] == [("a", None), ("b", None)]
    assert all(h == s.on_value for _, _, h in routes)
    assert s.event_routes([b, a]) == [("b", s.on_event), ("a", s.on_event)]


def test_absence_counts_silence_on_the_gateway_clock_from_the_first_tick() -> None:
    s, clock = absence(60)
    assert s.tick(0.0) == []  # no devices routed yet: nothing to watch
    s.reading_routes([spec("a", []), spec("b", [])])
    assert s.tick(1000.0) == []  # the count starts here for both
    clock.advance(10.0)
    s.on_value("a", 3, 1.0, 5.0)  # the device's own clock is far off: the arrival counts
    assert s.tick(1059.0) == []
    [change] = s.tick(1060.0)  # b: exactly `for` seconds
    assert fields_of(change) == ("b", None, "", 60.0, 1060.0, True, None, {"silent_for": 60.0},
                                 False)
    assert s.tick(1061.0) == []  # once
    assert s.tick(1069.9) == []
    [change] = s.tick(1070.0)  # a: heard at 1010 by the gateway's clock
    assert (change.device, change.value, change.ts) == ("a", 60.0, 1070.0)
    cleared = s.on_value("a", 2, None, 7.5)
    assert fields_of(cleared) == ("a", None, "", None, 7.5, False, None, None, False)
    assert s.on_value("a", 2, None, 8.0) is None  # already cleared
    cleared = s.on_event(ev("b", "x", 9.5))
    assert (cleared.device, cleared.ts, cleared.active) == ("b", 9.5, False)


def test_absence_rounds_the_silence_and_a_restored_one_clears_at_the_next_sign() -> None:
    s, _ = absence(1)
    s.reading_routes([spec("a", [])])
    s.tick(0.0)
    [change] = s.tick(1.23456)
    assert change.value == 1.235 and change.details == {"silent_for": 1.235}
    s2, _ = absence(60)
    s2.reading_routes([spec("a", [])])
    assert s2.restore("a", None) is True
    assert s2.tick(0.0) == [] and s2.tick(100.0) == []  # still silent: not raised again
    assert s2.on_event(ev("a", "x", 3.0)).active is False


# -- held ----------------------------------------------------------------------------------


def held(**kw) -> HeldState:
    return HeldState(HeldRule.model_validate({"type": "held", "id": "open", "field": "door_open",
                                              "for": 10, **kw}))


def test_held_routes_only_the_devices_with_its_field() -> None:
    s = held()
    assert s.reading_routes([spec("a", ["door_open"]), spec("b", ["x"])]) == [
        ("a", "door_open", s.on_value)]


def test_held_fires_at_exactly_for_seconds_on_a_reading_and_reports_every_field() -> None:
    s = held(equals=2)
    assert s.on_value("d", 1, 2.0, 100.0) is None
    assert s.on_value("d", 1, 2.0, 109.9) is None
    change = s.on_value("d", 1, 2.0, 110.0)
    assert fields_of(change) == ("d", 1, "door_open", 2.0, 110.0, True, None, {"held_for": 10.0},
                                 False)
    assert s.on_value("d", 1, 2.0, 200.0) is None and s.tick(300.0) == []
    cleared = s.on_value("d", 1, 0.0, 201.0)
    assert fields_of(cleared) == ("d", 1, "door_open", 0.0, 201.0, False, None, None, False)
    assert s.on_value("d", 1, 0.0, 202.0) is None


def test_held_by_the_timer_counts_from_the_first_reading_of_the_value() -> None:
    s = held()
    s.on_value("d", None, 1.0, 0.0)
    s.on_value("d", None, 1.0, 5.0)  # still the same holding: counted from 0
    s.on_value("e", 2, 1.0, 3.0)
    assert s.tick(9.99) == []
    [change] = s.tick(10.0)
    assert (change.device, change.channel, change.value, change.ts) == ("d", None, 1.0, 10.0)
    assert change.details == {"held_for": 10.0}
    [change] = s.tick(13.12345)
    assert (change.device, change.channel, change.details) == ("e", 2, {"held_for": 10.123})
    assert s.tick(20.0) == []


def test_held_forgets_a_holding_that_stopped() -> None:
    s = held()
    s.on_value("d", 1, 1.0, 0.0)
    s.on_value("d", 1, 0.0, 5.0)
    assert s.tick(30.0) == []
    s.on_value("d", 1, 1.0, 31.0)
    assert s.on_value("d", 1, 1.0, 40.0) is None
    assert s.on_value("d", 1, 1.0, 41.0).details == {"held_for": 10.0}


def test_a_restored_held_alarm_clears_at_the_next_other_value_only() -> None:
    s = held()
    assert s.restore("d", 1) is True
    assert s.on_value("d", 1, 1.0, 0.0) is None and s.tick(100.0) == []
    assert s.on_value("d", 1, 0.0, 101.0).active is False


# -- event ---------------------------------------------------------------------------------


def event_rule(**kw) -> EventState:
    return EventState(EventRule.model_validate({"type": "event", "id": "ev", **kw}))


def test_the_event_form_routes_events_and_the_field_form_readings() -> None:
    a, b = spec("a", ["fall"], ["tamper"]), spec("b", ["x"], ["ok", "restored"])
    c = spec("c", ["fall"])  # declares no events: may emit anything
    s = event_rule(event="tamper", clear_on="restored")
    assert s.reading_routes([a, b, c]) == ()
    assert s.event_routes([a, b, c]) == [("a", s.on_event), ("b", s.on_event),
                                             ("c", s.on_event)]
    plain = event_rule(event="tamper")
    assert [d for d, _ in plain.event_routes([a, b, c])] == ["a", "c"]
    f = event_rule(field="fall")
    assert f.event_routes([a, b, c]) == ()
    assert f.reading_routes([a, b, c]) == [("a", "fall", f.on_value), ("c", "fall", f.on_value)]


def test_a_momentary_event_reports_its_value_and_attributes() -> None:
    s = event_rule(event=["throw", "fire"], where={"facade": "east"})
    change = s.on_event(ev("cam", "fire", 5.0, channel=2, facade="east", value=3, at=(1, 2)))
    assert fields_of(change) == ("cam", 2, "fire", 3.0, 5.0, True, None,
                                 {"facade": "east", "value": 3, "at": [1, 2]}, True)
    assert s.on_event(ev("cam", "fire", 6.0, facade="west")) is None
    assert s.on_event(ev("cam", "other", 6.0, facade="east")) is None
    again = s.on_event(ev("cam", "throw", 7.0, channel=2, facade="east"))
    assert again is not None and again.value is None and again.momentary is True
    bare = event_rule(event="knock").on_event(ev("d", "knock", 1.0))
    assert bare.details is None and bare.value is None  # no attributes: no details at all


def test_an_event_with_clear_on_is_a_condition_per_channel() -> None:
    s = event_rule(event="tamper", clear_on=["restored", "reset"])
    change = s.on_event(ev("d", "tamper", 1.0, channel=1, value=True))
    assert fields_of(change) == ("d", 1, "tamper", None, 1.0, True, None, {"value": True}, False)
    assert s.on_event(ev("d", "tamper", 2.0, channel=1)) is None  # the same condition
    assert s.on_event(ev("d", "tamper", 2.0, channel=2)).active is True  # another channel
    assert s.on_event(ev("d", "restored", 3.0, channel=3)) is None  # not active there
    cleared = s.on_event(ev("d", "reset", 4.0, channel=1, value=2.5))
    assert fields_of(cleared) == ("d", 1, "reset", 2.5, 4.0, False, None, None, False)
    assert s.on_event(ev("d", "reset", 5.0, channel=1)) is None
    assert s.on_event(ev("d", "tamper", 6.0, channel=1)).active is True


def test_the_field_form_follows_in_values() -> None:
    s = event_rule(field="state", **{"in": [2, 3]})
    assert s.on_value("d", 1, 1.0, 0.0) is None
    change = s.on_value("d", 1, 3.0, 1.0)
    assert fields_of(change) == ("d", 1, "state", 3.0, 1.0, True, None, None, False)
    assert s.on_value("d", 1, 2.0, 2.0) is None
    assert s.on_value("d", 2, 2.0, 2.0).active is True
    cleared = s.on_value("d", 1, 1.0, 3.0)
    assert fields_of(cleared) == ("d", 1, "state", 1.0, 3.0, False, None, None, False)
    assert s.on_value("d", 1, 0.0, 4.0) is None
    eq = event_rule(field="state", equals=0)
    assert eq.on_value("d", 1, 0.0, 0.0).active is True
    default = event_rule(field="state")
    assert default.on_value("d", 1, 0.0, 0.0) is None and default.on_value("d", 1, 1.0, 1.0).active


def test_which_event_rules_hold_a_condition_after_a_restart() -> None:
    plain = event_rule(event="throw")
    assert plain.restore("d", 1) is False
    assert plain.on_event(ev("d", "throw", 1.0)).active is True  # momentary: still raised
    cond = event_rule(event="tamper", clear_on="restored")
    assert cond.restore("d", 1) is True
    assert cond.on_event(ev("d", "tamper", 1.0)) is None
    assert cond.on_event(ev("d", "restored", 2.0)).active is False
    field = event_rule(field="fall")
    assert field.restore("d", 1) is True
    assert field.on_value("d", 1, 0.0, 1.0).active is False


# -- count ---------------------------------------------------------------------------------


def count_rule(**kw) -> CountState:
    return CountState(CountRule.model_validate({"type": "count", "id": "n", "event": "denied",
                                                "count": 3, "window": 10, **kw}))


def test_count_routes_the_devices_that_emit_its_events_or_its_resets() -> None:
    s = count_rule(reset_on=["granted"])
    devs = [spec("a", [], ["denied"]), spec("b", [], ["granted"]), spec("c", [], ["other"])]
    assert [d for d, _ in s.event_routes(devs)] == ["a", "b"]


def test_count_fires_on_the_count_th_event_within_the_window_exactly() -> None:
    s = count_rule(where={"door": [1, 2]})
    assert s.on_event(ev("t", "denied", 0.0, door=1)) is None
    assert s.on_event(ev("t", "denied", 5.0, door=3)) is None  # `where` does not match
    assert s.on_event(ev("t", "other", 5.0, door=1)) is None
    assert s.on_event(ev("t", "denied", 5.0, door=2)) is None
    change = s.on_event(ev("t", "denied", 10.0, door=1, why=(1,)))  # span exactly the window
    assert fields_of(change) == ("t", 1, "denied", 3.0, 10.0, True, None,
                                 {"door": 1, "why": [1], "count": 3, "within_s": 10.0}, True)
    # the count starts again after an alarm
    assert s.on_event(ev("t", "denied", 11.0, door=1)) is None
    assert s.on_event(ev("t", "denied", 12.0, door=1)) is None
    assert s.on_event(ev("t", "denied", 12.12345, door=1)).details["within_s"] == 1.123


def test_count_slides_its_window_and_counts_each_channel_apart() -> None:
    s = count_rule()
    for ts in (0.0, 6.0, 10.5):  # 10.5 s: one too many
        assert s.on_event(ev("t", "denied", ts)) is None
    assert s.on_event(ev("t", "denied", 9.0, channel=2)) is None
    change = s.on_event(ev("t", "denied", 16.0))  # 6, 10.5, 16: within 10 s
    assert change is not None and change.details == {"count": 3, "within_s": 10.0}


def test_a_reset_event_starts_the_count_again_for_its_channel_only() -> None:
    s = count_rule(reset_on=["granted"])
    for ch in (1, 2):
        s.on_event(ev("t", "denied", 0.0, channel=ch))
        s.on_event(ev("t", "denied", 1.0, channel=ch))
    assert s.on_event(ev("t", "granted", 2.0, channel=1)) is None
    assert s.on_event(ev("t", "denied", 3.0, channel=1)) is None
    assert s.on_event(ev("t", "denied", 3.0, channel=2)).active is True
    assert s.on_event(ev("t", "denied", 4.0, channel=1)) is None
    assert s.on_event(ev("t", "denied", 5.0, channel=1)).active is True
    assert s.on_event(ev("x", "granted", 6.0)) is None  # a reset never seen before


# -- confirm -------------------------------------------------------------------------------


def confirm(first: dict, then: dict, **kw) -> ConfirmState:
    return ConfirmState(ConfirmRule.model_validate({"type": "confirm", "id": "c", "first": first,
                                                    "then": then, **kw}))


FALL = {"event": "fall"}
STILL = {"field": "motion", "equals": 0, "for": 30}


def test_confirm_watches_devices_that_have_then_and_can_give_the_first_sign() -> None:
    radar = spec("radar", ["motion", "fall"], ["fall"])
    mute = spec("mute", ["motion"], ["other"])
    anything = spec("any", ["motion"])
    nothen = spec("nothen", ["fall"], ["fall"])
    s = confirm(FALL, STILL)
    devs = [radar, mute, anything, nothen]
    assert s.reading_routes(devs) == [("radar", "motion", s.on_then),
                                          ("any", "motion", s.on_then)]
    assert s.event_routes(devs) == [("radar", s.on_event), ("any", s.on_event)]
    f = confirm({"field": "fall"}, STILL)
    assert f.event_routes(devs) == ()
    assert f.reading_routes(devs) == [("radar", "motion", f.on_then),
                                          ("radar", "fall", f.on_first_value)]


def test_a_confirmation_reports_every_field_at_exactly_then_for() -> None:
    s = confirm({"event": ["fall", "slip"], "where": {"level": [2, 3]}}, STILL)
    assert s.on_event(ev("r", "fall", 0.0, level=1)) is None  # `where` does not match
    assert s.on_then("r", 1, 0.0, 0.0) is None
    assert s.tick(100.0) == []  # nothing pending
    assert s.on_event(ev("r", "slip", 10.0, level=3, at=(1,))) is None
    assert s.on_then("r", 1, 0.0, 39.9) is None
    change = s.on_then("r", 1, 0.0, 40.0)  # then held since the first sign: 30 s
    assert fields_of(change) == ("r", 1, "motion", 0.0, 40.0, True, None,
                                 {"level": 3, "at": [1], "first": "slip", "confirmed_after": 30.0},
                                 True)
    assert s.on_then("r", 1, 0.0, 41.0) is None and s.tick(100.0) == []


def test_then_counts_from_when_it_starts_holding_and_the_timer_confirms() -> None:
    s = confirm(FALL, {"field": "motion", "in": [0, 1], "for": 30})
    s.on_then("r", None, 2.0, 0.0)
    s.on_event(ev("r", "fall", 1.0, channel=None))
    assert s.on_then("r", None, 3.0, 5.0) is None  # not holding yet: no call-off
    s.on_then("r", None, 1.0, 10.0)  # 1 is in the set: holding from here
    assert s.tick(39.99) == []
    [change] = s.tick(40.0)
    assert fields_of(change) == ("r", None, "motion", None, 40.0, True, None,
                                 {"first": "fall", "confirmed_after": 39.0}, True)


def test_then_never_reported_does_not_hold() -> None:
    s = confirm(FALL, STILL)
    s.on_event(ev("r", "fall", 0.0))  # no motion reading yet from this radar
    assert s.tick(30.0) == []
    s.on_then("r", 1, 0.0, 10.0)  # holding from here
    assert s.tick(39.9) == []
    assert s.tick(40.0)[0].details["confirmed_after"] == 40.0


def test_a_second_sign_while_waiting_changes_nothing() -> None:
    s = confirm(FALL, STILL)
    s.on_then("r", 1, 0.0, 0.0)
    s.on_event(ev("r", "fall", 0.0, n=1))
    s.on_event(ev("r", "fall", 20.0, n=2))
    [change] = s.tick(30.0)
    assert change.details == {"n": 1, "first": "fall", "confirmed_after": 30.0}


def test_then_that_stops_holding_calls_the_confirmation_off() -> None:
    s = confirm(FALL, {"field": "motion", "in": [0, 1], "for": 30})
    s.on_then("r", 1, 0.0, 0.0)
    s.on_event(ev("r", "fall", 0.0))
    s.on_then("r", 1, 1.0, 10.0)  # still in the set
    s.on_then("r", 1, 5.0, 20.0)  # moved
    s.on_then("r", 1, 0.0, 21.0)
    assert s.tick(60.0) == [] and s.tick(1000.0) == []


def test_nothing_confirms_after_within_which_defaults_to_twice_then_for() -> None:
    s = confirm(FALL, STILL)
    s.on_then("r", 1, 5.0, 0.0)
    s.on_event(ev("r", "fall", 0.0))
    s.on_then("r", 1, 0.0, 30.0)  # holding from 30: held 30 s at 60 = within
    [change] = s.tick(60.0)
    assert change.details["confirmed_after"] == 60.0
    s.on_then("r", 1, 5.0, 99.0)
    s.on_event(ev("r", "fall", 100.0))
    assert s.tick(130.0) == []  # a hold starting now would still end by 160
    s.on_then("r", 1, 0.0, 130.0)
    [change] = s.tick(160.0)
    assert change.details["confirmed_after"] == 60.0
    s.on_then("r", 1, 5.0, 199.0)
    s.on_event(ev("r", "fall", 200.0))
    assert s.tick(230.001) == []  # too late now for a 30 s hold within 60 s: forgotten
    s.on_then("r", 1, 0.0, 230.001)
    assert s.tick(1000.0) == []
    w = confirm(FALL, STILL, within=45)
    w.on_then("r", 1, 5.0, 0.0)
    w.on_event(ev("r", "fall", 0.0))
    w.on_then("r", 1, 0.0, 15.5)  # would end at 45.5
    assert w.tick(45.5) == [] and w.tick(46.0) == []


def test_a_confirmation_does_not_depend_on_when_the_timer_runs() -> None:
    def run(hold_from: float, ticks: list[float]) -> list[float]:
        s = confirm(FALL, STILL, within=45)
        s.on_then("r", 1, 5.0, 0.0)
        s.on_event(ev("r", "fall", 0.0))
        s.on_then("r", 1, 0.0, hold_from)
        return [c.ts for t in ticks for c in s.tick(t)]

    assert run(15.0, [45.0]) == [45.0]  # held 30 s by 45 s
    assert run(15.0, [44.0, 50.0]) == [50.0]  # a late timer still confirms it
    assert run(16.0, [44.0, 45.0, 46.0]) == []  # held 30 s only at 46 s: after `within`
    assert run(16.0, [46.0]) == []


def test_then_in_values_hold() -> None:
    s = confirm(FALL, {"field": "motion", "in": [0, 2], "for": 30})
    s.on_then("r", 1, 1.0, 0.0)
    s.on_event(ev("r", "fall", 0.0))
    s.on_then("r", 1, 2.0, 5.0)
    assert s.tick(34.9) == []
    [change] = s.tick(35.12345)
    assert change.details["confirmed_after"] == 35.123


def test_a_first_sign_as_a_field_entering_its_set() -> None:
    s = confirm({"field": "fall", "in": [1, 2]}, STILL)
    s.on_then("r", 1, 0.0, 0.0)
    assert s.on_first_value("r", 1, 0.0, 1.0) is None
    assert s.on_first_value("r", 1, 2.0, 2.0) is None  # the sign
    s.on_first_value("r", 1, 1.0, 20.0)  # still in the set: not a new sign
    [change] = s.tick(32.0)
    assert change.details == {"first": "fall", "first_value": 2.0, "confirmed_after": 30.0}
    s.on_first_value("r", 1, 1.0, 40.0)  # has stayed in since 2.0: not a new sign
    assert s.tick(100.0) == []
    s.on_first_value("r", 1, 0.0, 101.0)
    s.on_first_value("r", 1, 1.0, 102.0)  # left and entered again: a new sign
    [change] = s.tick(132.0)
    assert change.details["first_value"] == 1.0
    eq = confirm({"field": "fall", "equals": 3}, STILL)
    eq.on_then("r", 1, 0.0, 0.0)
    eq.on_first_value("r", 1, 1.0, 0.0)
    assert eq.tick(100.0) == []
    eq.on_first_value("r", 1, 3.0, 100.0)
    assert len(eq.tick(130.0)) == 1
    default = confirm({"field": "fall"}, {"field": "motion", "for": 30})  # both default to 1
    default.on_then("r", 1, 1.0, 0.0)
    default.on_first_value("r", 1, 1.0, 0.0)
    assert len(default.tick(30.0)) == 1


# -- forced --------------------------------------------------------------------------------


def forced(**kw) -> ForcedState:
    return ForcedState(ForcedRule.model_validate({"type": "forced", "id": "f", **kw}))


def test_forced_routes_door_contacts_and_grants_once_per_device() -> None:
    s = forced(grants_from=["term", "door1"], field="contact")
    d1, d2, t = spec("door1", ["contact"]), spec("door2", ["contact"]), spec("term", ["x"])
    assert s.reading_routes([d1, t, d2]) == [("door1", "contact", s.on_value),
                                                 ("door2", "contact", s.on_value)]
    assert [d for d, _ in s.event_routes([d1, t, d2])] == ["door1", "door2", "term"]


def test_a_forced_opening_reports_every_field() -> None:
    s = forced(equals=2, field="contact")
    assert s.on_value("d", 1, 0.0, 0.0) is None
    assert s.on_value("d", 1, 1.0, 0.5) is None  # not the open value
    change = s.on_value("d", 1, 2.0, 1.0)
    assert fields_of(change) == ("d", 1, "contact", 2.0, 1.0, True, None, None, True)
    assert s.on_value("d", 1, 2.0, 2.0) is None  # still open: not a new opening
    assert s.on_value("d", 2, 2.0, 2.0) is None  # first seen open


def test_a_grant_counts_within_exactly_within_seconds_and_once() -> None:
    s = forced(within=5)
    s.on_value("d", 1, 0.0, 0.0)
    s.on_event(ev("d", "granted", 10.0, channel=1))
    assert s.on_value("d", 1, 1.0, 15.0) is None  # granted exactly `within` ago
    s.on_value("d", 1, 0.0, 16.0)
    assert s.on_value("d", 1, 1.0, 17.0).active is True  # the grant is used up
    s.on_value("d", 1, 0.0, 18.0)
    s.on_event(ev("d", "granted", 20.0, channel=1))
    assert s.on_value("d", 1, 1.0, 25.001).active is True  # too old


def test_grants_count_from_the_door_itself_and_grants_from_on_its_channel_or_none() -> None:
    s = forced(grants_from=["t1", "t2"])
    s.on_value("d", 1, 0.0, 0.0)
    s.on_event(ev("t2", "exit_button", 1.0, channel=2))  # another door
    s.on_event(ev("t2", "denied", 1.0, channel=1))  # not a grant
    assert s.on_value("d", 1, 1.0, 2.0).active is True
    s.on_value("d", 1, 0.0, 3.0)
    s.on_event(ev("t2", "exit_button", 3.0, channel=1))
    assert s.on_value("d", 1, 1.0, 4.0) is None
    s.on_value("d", 1, 0.0, 5.0)
    s.on_event(ev("t1", "granted", 5.0, channel=None))
    assert s.on_value("d", 1, 1.0, 6.0) is None
    s.on_value("d", 1, 0.0, 7.0)
    s.on_event(ev("d", "granted", 7.0, channel=None))
    assert s.on_value("d", 1, 1.0, 8.0) is None


def test_the_latest_grant_is_kept() -> None:
    s = forced(within=5)
    s.on_value("d", 1, 0.0, 0.0)
    s.on_event(ev("d", "granted", 10.0, channel=1))
    s.on_event(ev("d", "granted", 4.0, channel=1))  # late and older: the newer one stays
    assert s.on_value("d", 1, 1.0, 14.0) is None
    s2 = forced(within=5)
    s2.on_value("d", 1, 0.0, 0.0)
    s2.on_event(ev("d", "granted", 4.0, channel=1))
    s2.on_event(ev("d", "granted", 10.0, channel=1))
    assert s2.on_value("d", 1, 1.0, 14.0) is None


def test_the_grace_waits_for_a_late_grant_and_fires_at_exactly_grace() -> None:
    s = forced(grace=2, within=5)
    assert s.tick(0.0) == []
    s.on_value("d", 1, 0.0, 0.0)
    assert s.on_value("d", 1, 1.0, 100.0) is None
    s.on_value("d", 1, 0.0, 100.5)
    s.on_value("d", 1, 1.0, 101.0)  # a second opening within the grace: the first one counts
    assert s.tick(101.99) == []
    [change] = s.tick(102.0)
    assert fields_of(change) == ("d", 1, "door_open", 1.0, 102.0, True, None,
                                 {"opened_at": "1970-01-01T00:01:40.000Z"}, True)
    assert s.tick(200.0) == []
    s.on_value("d", 1, 0.0, 300.0)
    s.on_value("d", 1, 1.0, 301.0)
    s.on_event(ev("d", "granted", 296.5, channel=1))  # late, but 4.5 s before the opening
    assert s.tick(310.0) == []


def test_with_no_grace_the_opening_fires_at_once_without_opened_at() -> None:
    s = forced()
    s.on_value("d", 1, 0.0, 0.0)
    assert s.on_value("d", 1, 1.0, 1.0).details is None
    assert s.tick(10.0) == []


# -- engine --------------------------------------------------------------------------------


def test_the_engine_routes_readings_by_field_and_channel() -> None:
    from gateway.config.rules import ThresholdRule
    from gateway.readings import Reading
    from gateway.rules.engine import RuleEngine

    clock = FakeClock(1000.0)
    rules = [HeldRule.model_validate({"type": "held", "id": "held", "field": "door_open",
                                      "for": 10, "select": {"channels": [2]}}),
             ThresholdRule(type="threshold", id="hot", field="temp", above=50),
             AbsenceRule.model_validate({"type": "absence", "id": "quiet", "for": 60,
                                         "select": {"devices": ["d"]}})]
    devices = {"d": spec("d", ["door_open", "temp"]), "e": spec("e", ["temp"])}
    engine = RuleEngine(rules, devices, clock=clock)
    assert engine.evaluate(Reading("x", 1, {"temp": 99.0}, 0.0)) == []
    assert engine.tick(1000.0) == []  # the absence rule starts counting
    # the held rule's field is missing: the threshold after it still runs
    [hot] = engine.evaluate(Reading("d", 1, {"temp": 60.0}, 1001.0))
    assert (hot.rule.id, hot.device, hot.channel, hot.value, hot.ts) == ("hot", "d", 1, 60.0, 1001.0)
    assert engine.evaluate(Reading("d", 1, {"door_open": 1.0}, 1040.0)) == []  # channel 1: unwatched
    assert engine.evaluate(Reading("d", 2, {"door_open": 1.0}, 1055.0)) == []
    clock.advance(59.0)  # the readings above were heard at 1000 by the gateway's clock
    [quiet] = engine.tick(1060.0)
    assert quiet.rule.id == "quiet" and quiet.details == {"silent_for": 60.0}
    changes = engine.evaluate(Reading("d", 2, {"door_open": 1.0, "temp": 70.0}, 1065.0))
    assert [(c.rule.id, c.active) for c in changes] == [("held", True), ("hot", True),
                                                        ("quiet", False)]
    [held_change] = [c for c in changes if c.rule.id == "held"]
    assert (held_change.device, held_change.channel) == ("d", 2)  # through the channel filter
    assert held_change.details == {"held_for": 10.0}
    [hot_e] = engine.evaluate(Reading("e", None, {"temp": 51.0}, 1066.0))
    assert hot_e.device == "e"
    # both timers at once, in rule order
    engine.evaluate(Reading("d", 2, {"door_open": 0.0}, 1070.0))
    engine.evaluate(Reading("d", 2, {"door_open": 1.0}, 1071.0))
    assert [c.rule.id for c in engine.tick(2000.0)] == ["held", "quiet"]


def test_the_engine_routes_events_by_channel_and_restores_by_rule_id() -> None:
    from gateway.rules.engine import RuleEngine

    rules = [EventRule.model_validate({"type": "event", "id": "tamper", "event": "tamper",
                                       "clear_on": "ok", "select": {"channels": [1]}}),
             EventRule.model_validate({"type": "event", "id": "knock", "event": "knock"})]
    engine = RuleEngine(rules, {"d": spec("d", [])})
    assert engine.evaluate_event(ev("x", "tamper", 0.0)) == []
    assert engine.evaluate_event(ev("d", "tamper", 0.0, channel=2)) == []
    assert engine.evaluate_event(ev("d", "other", 0.0)) == []
    [change] = engine.evaluate_event(ev("d", "tamper", 0.0, channel=1))
    assert change.rule.id == "tamper" and change.active is True
    [change] = engine.evaluate_event(ev("d", "knock", 0.0, channel=2))
    assert change.rule.id == "knock"
    assert engine.restore_active("nope", "d", 1) is False
    assert engine.restore_active("knock", "d", 1) is False  # momentary
    assert engine.restore_active("tamper", "d", 3) is True
    assert engine.tick(0.0) == []
