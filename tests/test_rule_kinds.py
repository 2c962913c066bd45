"""Every rule kind on an injected clock, through the real pipeline and alarm manager."""

from __future__ import annotations

from alarm_support import Bench

SEL_DOORS = {"devices": ["doors"]}


# -- threshold: hysteresis, delays, chattering -------------------------------------------


def test_chattering_input_yields_exactly_one_alarm(tmp_path) -> None:
    b = Bench(tmp_path, [{"id": "hot", "type": "threshold", "select": {"kinds": ["ev_charging"]},
                          "field": "temperature", "above": 60, "hysteresis": 5}])
    for i in range(200):  # 59 / 61 every 100 ms for 20 s: inside the hysteresis band
        b.read("charger", 2, temperature=61.0 if i % 2 else 59.0)
        b.tick(0.1)
    assert b.events() == ["raised"]
    assert b.only("hot").count == 1 and b.only("hot").state == "active"
    b.read("charger", 2, temperature=54.0)
    assert b.events() == ["raised", "cleared"]


def test_off_delay_rides_out_a_chattering_contact(tmp_path) -> None:
    b = Bench(tmp_path, [{"id": "hot", "type": "threshold", "select": {"devices": ["charger"]},
                          "field": "temperature", "above": 60, "off_delay": 5}])
    for i in range(100):  # crossing the limit both ways every 100 ms
        b.read("charger", 1, temperature=61.0 if i % 2 == 0 else 59.0)
        b.tick(0.1)
    for _ in range(49):
        b.read("charger", 1, temperature=50.0)
        b.tick(0.1)
    assert b.events() == ["raised"]  # 4.9 s calm: still within the off-delay
    b.tick(0.2)
    b.read("charger", 1, temperature=50.0)
    assert b.events() == ["raised", "cleared"]


def test_on_delay_ignores_a_short_spike(tmp_path) -> None:
    b = Bench(tmp_path, [{"id": "hot", "type": "threshold", "select": {"devices": ["charger"]},
                          "field": "temperature", "above": 60, "on_delay": 2}])
    b.read("charger", 1, temperature=70.0)
    b.tick(1.5)
    b.read("charger", 1, temperature=50.0)
    b.tick(1.0)
    b.read("charger", 1, temperature=70.0)
    b.tick(2.0)
    b.read("charger", 1, temperature=71.0)
    assert b.events() == ["raised"]
    assert b.only("hot").value == 70.0  # raised by the timer the moment the delay ran out


# -- held -------------------------------------------------------------------------------


HELD = {"id": "held-open", "type": "held", "select": SEL_DOORS, "field": "door_open",
        "equals": 1, "for": 90, "severity": 2}


def test_held_fires_on_the_timer_without_another_reading(tmp_path) -> None:
    b = Bench(tmp_path, [HELD])
    b.read("doors", 1, door_open=0.0)
    b.read("doors", 1, door_open=1.0)
    b.tick(89.0)
    assert b.events() == []
    b.tick(1.0)
    [alarm] = b.alarms.open_alarms()
    # a synthetic device names its channels "channel" (a door profile names them "door")
    assert alarm.location == {"building": "3", "unit": "1", "channel": 1}
    assert alarm.details == {"held_for": 90.0}
    assert alarm.message == "door open at 1 for over 90 s at building 3, unit 1, channel 1 (doors)"
    b.tick(30.0)
    b.read("doors", 1, door_open=1.0)
    assert b.events() == ["raised"]  # still the same holding
    b.read("doors", 1, door_open=0.0)
    assert b.events() == ["raised", "cleared"]


def test_held_door_opened_and_shut_often_never_fires(tmp_path) -> None:
    b = Bench(tmp_path, [HELD])
    for i in range(300):
        b.read("doors", 2, door_open=float(i % 2))
        b.tick(1.0)
    assert b.events() == []


# -- event ------------------------------------------------------------------------------


def test_event_is_momentary_counts_repeats_and_carries_its_details(tmp_path) -> None:
    b = Bench(tmp_path, [{"id": "throw", "type": "event", "select": {"kinds": ["throw_camera"]},
                          "event": "throw", "where": {"facade": ["east", "south"]}, "severity": 1,
                          "message": "Object thrown at building {building}, floors {floor_est}"}])
    b.event("camera", "throw", facade="north", floor_est=[3, 4])
    assert b.events() == []  # `where` does not match
    b.event("camera", "throw", facade="east", floor_est=[11, 13], snapshot="http://x/s.jpg",
            clip="http://x/c.mp4", confidence=0.92)
    alarm = b.only("throw")
    assert alarm.state == "active" and not alarm.condition
    j = alarm.to_json()
    assert j["details"] == {"facade": "east", "floor_est": [11, 13], "snapshot": "http://x/s.jpg",
                            "clip": "http://x/c.mp4", "confidence": 0.92}
    assert j["message"] == "Object thrown at building 3, floors [11, 13]"
    b.tick(5)
    b.event("camera", "throw", facade="south", floor_est=[2, 2])
    assert alarm.count == 2 and alarm.details["floor_est"] == [2, 2]
    b.alarms.ack(alarm.id, by="guard li")
    assert b.events() == ["raised", "repeated", "acked", "closed"]


def test_event_with_clear_on_is_a_condition(tmp_path) -> None:
    b = Bench(tmp_path, [{"id": "tamper", "type": "event", "select": SEL_DOORS, "event": "tamper",
                          "clear_on": "tamper_restored"}])
    b.event("doors", "tamper", channel=1)
    b.event("doors", "tamper", channel=1)  # still the same condition
    assert b.only("tamper").condition and b.events() == ["raised"]
    b.event("doors", "tamper_restored", channel=1)
    assert b.events() == ["raised", "cleared"]


def test_event_field_form_follows_the_value(tmp_path) -> None:
    b = Bench(tmp_path, [{"id": "fall-flag", "type": "event", "select": {"devices": ["radar"]},
                          "field": "fall", "in": [1, 2]}])
    b.read("radar", fall=0.0)
    b.read("radar", fall=2.0)
    b.read("radar", fall=1.0)
    assert b.events() == ["raised"]
    b.read("radar", fall=0.0)
    assert b.events() == ["raised", "cleared"]


# -- count ------------------------------------------------------------------------------


DENIALS = {"id": "denials", "type": "count", "select": {"devices": ["terminal"]}, "event": "denied",
           "count": 5, "window": 60, "reset_on": ["granted"], "severity": 3}


def test_five_denials_within_a_minute_at_one_door(tmp_path) -> None:
    b = Bench(tmp_path, [DENIALS])
    for _ in range(4):
        b.event("terminal", "denied", channel=1, reason="no_permission")
        b.event("terminal", "denied", channel=2)  # another door counts apart
        b.tick(10)
    assert b.events() == []
    b.event("terminal", "denied", channel=1, reason="wrong_pin")
    alarm = b.only("denials")
    assert alarm.channel == 1 and alarm.details == {"reason": "wrong_pin", "count": 5, "within_s": 40.0}
    for _ in range(4):  # the count starts again after an alarm
        b.event("terminal", "denied", channel=1)
    assert alarm.count == 1
    b.event("terminal", "denied", channel=1)
    assert alarm.count == 2 and b.events() == ["raised", "repeated"]


def test_denials_spread_out_or_broken_by_a_grant_do_not_count(tmp_path) -> None:
    b = Bench(tmp_path, [DENIALS])
    for _ in range(10):
        b.event("terminal", "denied", channel=1)
        b.tick(16)  # 5 denials span 64 s
    for i in range(8):
        b.event("terminal", "denied", channel=2)
        if i == 3:
            b.event("terminal", "granted", channel=2)
    assert b.events() == []


# -- absence ----------------------------------------------------------------------------


def test_absence_raises_on_silence_and_clears_on_the_next_sign_of_life(tmp_path) -> None:
    b = Bench(tmp_path, [{"id": "quiet", "type": "absence", "select": {"kinds": ["fall_radar",
                                                                                 "throw_camera"]},
                          "for": 120, "severity": 3}])
    for _ in range(13):  # the radar talks every 10 s; the camera says nothing at all
        b.read("radar", presence=1.0)
        b.tick(10)
    assert [a.device for a in b.alarms.open_alarms()] == ["camera"]
    b.tick(110)  # radar silent for 120 s now
    assert sorted(a.device for a in b.alarms.open_alarms()) == ["camera", "radar"]
    assert b.alarms.find("quiet", "radar", None).value == 120.0
    b.event("camera", "throw")
    b.read("radar", motion=0.0)
    assert b.events() == ["raised", "raised", "cleared", "cleared"]


# -- rate -------------------------------------------------------------------------------


def test_rate_of_rise_with_window_and_hysteresis(tmp_path) -> None:
    b = Bench(tmp_path, [{"id": "heating-fast", "type": "rate", "select": {"devices": ["charger"]},
                          "field": "temperature", "above": 0.5, "window": 10, "hysteresis": 0.2}])
    temp = 30.0
    for _ in range(20):  # +0.3 °C/s: fine
        b.read("charger", 3, temperature=temp)
        temp += 0.3
        b.tick(1)
    assert b.events() == []
    for _ in range(12):  # +1 °C/s: too fast once the 10 s window sees it
        b.read("charger", 3, temperature=temp)
        temp += 1.0
        b.tick(1)
    alarm = b.only("heating-fast")
    assert alarm.value is not None and alarm.value > 0.5 and alarm.details["over_s"] == 10.0
    for _ in range(30):  # flat again: the rate falls under 0.3
        b.read("charger", 3, temperature=temp)
        b.tick(1)
    assert b.events() == ["raised", "cleared"]


def test_rate_falling_uses_a_negative_below(tmp_path) -> None:
    b = Bench(tmp_path, [{"id": "power-drop", "type": "rate", "select": {"devices": ["charger"]},
                          "field": "power", "below": -100}])
    b.read("charger", 1, power=500.0)
    b.tick(1)
    b.read("charger", 1, power=450.0)
    b.tick(1)
    assert b.events() == []
    b.read("charger", 1, power=100.0)  # -350 W/s
    assert b.events() == ["raised"] and b.only("power-drop").value == -350.0


# -- confirm ----------------------------------------------------------------------------


CONFIRM = {"id": "fall-confirmed", "type": "confirm", "select": {"kinds": ["fall_radar"]},
           "first": {"event": "fall"}, "then": {"field": "motion", "equals": 0, "for": 30},
           "severity": 1, "latch": True}


def test_a_fall_then_no_motion_is_confirmed_on_the_timer(tmp_path) -> None:
    b = Bench(tmp_path, [CONFIRM])
    b.read("radar", motion=2.0)
    b.event("radar", "fall", height=0.3)
    b.tick(3)
    b.read("radar", motion=0.0)  # still from here on; no further reading
    b.tick(29)
    assert b.events() == []
    b.tick(1)
    alarm = b.only("fall-confirmed")
    assert alarm.severity == 1 and alarm.latched
    assert alarm.details == {"height": 0.3, "first": "fall", "confirmed_after": 33.0}
    assert alarm.location == {"building": "5", "unit": "2", "floor": "7", "room": "701"}


def test_a_fall_then_moving_again_is_not_confirmed(tmp_path) -> None:
    b = Bench(tmp_path, [CONFIRM])
    b.read("radar", motion=0.0)
    b.event("radar", "fall")
    b.tick(10)
    b.read("radar", motion=2.0)  # got up
    b.tick(60)
    b.read("radar", motion=0.0)
    b.tick(60)
    assert b.events() == []


def test_no_confirmation_after_within(tmp_path) -> None:
    rule = dict(CONFIRM, within=40)
    b = Bench(tmp_path, [rule])
    b.read("radar", motion=2.0)
    b.event("radar", "fall")
    b.tick(41)
    b.read("radar", motion=0.0)
    b.tick(60)
    assert b.events() == []


def test_confirm_with_a_field_as_the_first_sign(tmp_path) -> None:
    rule = dict(CONFIRM, first={"field": "fall", "equals": 1})
    b = Bench(tmp_path, [rule])
    b.read("radar", fall=0.0, motion=0.0)
    b.read("radar", fall=1.0)
    b.tick(30)
    assert b.events() == ["raised"]


# -- forced -----------------------------------------------------------------------------


FORCED = {"id": "forced", "type": "forced", "select": SEL_DOORS, "grants_from": ["terminal"],
          "within": 5, "severity": 1}


def test_forced_open_without_a_grant_and_not_after_one(tmp_path) -> None:
    b = Bench(tmp_path, [FORCED])
    b.read("doors", 1, door_open=1.0)  # open at start-up: not an opening
    b.read("doors", 2, door_open=0.0)
    assert b.events() == []
    b.read("doors", 1, door_open=0.0)
    b.event("terminal", "granted", channel=1)
    b.tick(3)
    b.read("doors", 1, door_open=1.0)  # granted 3 s ago: fine
    b.read("doors", 1, door_open=0.0)
    b.event("doors", "exit_button", channel=2)
    b.tick(1)
    b.read("doors", 2, door_open=1.0)  # exit button on the door's own module: fine
    b.read("doors", 2, door_open=0.0)
    assert b.events() == []
    b.event("terminal", "granted", channel=2)  # the other door
    b.tick(2)
    b.read("doors", 1, door_open=1.0)  # door 1's grant is 6 s old now
    alarm = b.only("forced")
    assert alarm.channel == 1 and alarm.severity == 1 and alarm.state == "active"
    assert alarm.message == "Door forced open at building 3, unit 1, channel 1 (doors)"
    b.read("doors", 1, door_open=0.0)
    assert alarm.state == "active"  # momentary: until acknowledged
    b.alarms.ack(alarm.id, by="guard")
    assert b.events() == ["raised", "acked", "closed"]


def test_one_grant_lets_one_opening_through(tmp_path) -> None:
    b = Bench(tmp_path, [FORCED])
    b.read("doors", 1, door_open=0.0)
    b.event("terminal", "granted", channel=1)
    b.tick(1)
    b.read("doors", 1, door_open=1.0)  # the card holder
    b.read("doors", 1, door_open=0.0)
    b.tick(1)
    b.read("doors", 1, door_open=1.0)  # opened again inside `within`, no new grant
    assert b.events() == ["raised"]


def test_forced_waits_the_grace_for_a_late_grant(tmp_path) -> None:
    b = Bench(tmp_path, [dict(FORCED, grace=1.0)])
    b.read("doors", 1, door_open=0.0)
    b.read("doors", 1, door_open=1.0)
    b.tick(0.5)
    b.event("terminal", "granted", channel=1)  # arrived after the contact
    b.tick(1.0)
    assert b.events() == []
    b.read("doors", 1, door_open=0.0)
    b.tick(10)
    b.read("doors", 1, door_open=1.0)
    b.tick(0.5)
    assert b.events() == []
    b.tick(0.5)
    assert b.events() == ["raised"]
    assert "opened_at" in b.only("forced").details


def test_a_terminal_without_channels_grants_its_door(tmp_path) -> None:
    b = Bench(tmp_path, [FORCED])
    b.read("doors", 2, door_open=0.0)
    b.event("terminal", "granted", channel=None)
    b.read("doors", 2, door_open=1.0)
    assert b.events() == []
