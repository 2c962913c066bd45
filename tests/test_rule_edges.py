"""Rule edges a slip would pass quietly: hysteresis on a `below` limit, and a rate from two
readings that carry one timestamp."""

from __future__ import annotations

from gateway.config.rules import RateRule, ThresholdRule
from gateway.rules.rate import RateState
from gateway.rules.threshold import ThresholdState


def feed(state, series: list[tuple[float, float]]) -> list[tuple[float, bool]]:
    out = []
    for ts, value in series:
        change = state.update("d", 1, value, ts)
        if change is not None:
            out.append((ts, change))
    return out


def test_below_with_hysteresis_clears_only_once_back_past_it() -> None:
    # low battery under 20 %, cleared only at 25 % or more: 21-25 % keeps the alarm
    s = ThresholdState(ThresholdRule(type="threshold", id="low", field="soc", below=20,
                                     hysteresis=5))
    assert feed(s, [(0, 30), (1, 19), (2, 21), (3, 24.9), (4, 25.1)]) == [(1, True), (4, False)]
    assert s.is_active("d", 1) is False
    assert feed(s, [(5, 19.9), (6, 20.5)]) == [(5, True)]  # back under, and not yet past 25
    assert s.is_active("d", 1) is True


def rate_rule(**kw) -> RateState:
    return RateState(RateRule(type="rate", id="fast", field="power", above=100, **kw))


def test_two_readings_with_one_timestamp_give_no_rate() -> None:
    for window in (None, 10.0):
        s = rate_rule(window=window)
        assert s.on_value("d", 1, 0.0, 100.0) is None
        assert s.on_value("d", 1, 500.0, 100.0) is None  # same instant: no rate, no error
        assert s.on_value("d", 1, 900.0, 99.0) is None  # older than the last: skipped too
        change = s.on_value("d", 1, 300.0, 101.0)  # 300 over 1 s, against the first reading
        assert change is not None and change.active is True and change.value == 300.0


# -- threshold: the exact edges (found by mutation testing) ------------------------------


def threshold(**kw) -> ThresholdState:
    return ThresholdState(ThresholdRule(type="threshold", id="r", field="power", **kw))


def test_a_value_exactly_at_the_limit_is_not_past_it() -> None:
    assert feed(threshold(above=1000), [(0, 1000), (1, 1000.5)]) == [(1, True)]
    assert feed(threshold(below=20), [(0, 20), (1, 19.5)]) == [(1, True)]


def test_a_value_exactly_at_the_release_point_keeps_the_alarm() -> None:
    assert feed(threshold(above=1000, hysteresis=100),
                [(0, 1001), (1, 900), (2, 899.9)]) == [(0, True), (2, False)]
    assert feed(threshold(below=20, hysteresis=5),
                [(0, 19), (1, 25), (2, 25.1)]) == [(0, True), (2, False)]


def test_the_floor_itself_is_ignored_and_clears_an_active_alarm() -> None:
    # a charge finished (under 20 W) but not an empty port (0 W, at the floor)
    s = threshold(below=20, ignore_at_or_below=0)
    assert feed(s, [(0, 0), (1, 0.1)]) == [(1, True)]
    assert feed(s, [(2, 0)]) == [(2, False)]  # unplugged: at the floor, not "below"


def test_the_timer_visits_only_the_tracks_with_a_delay_running() -> None:
    s = threshold(above=60, on_delay=5)
    feed(s, [(0, 70)])
    assert s._pending == {("d", 1)}
    feed(s, [(5, 70)])  # settled by a reading: nothing left for the timer
    assert s._pending == set()
    feed(s, [(6, 50)])
    s2 = threshold(above=60, on_delay=5)
    feed(s2, [(0, 70)])
    [change] = s2.tick(5)  # settled by the timer
    assert change.field == "power" and change.value == 70 and change.active is True
    assert s2._pending == set() and s2.tick(100) == []
    s3 = threshold(above=60, on_delay=5)
    feed(s3, [(0, 70)])
    assert s3.restore("d", 1) is True and s3._pending == set()


# -- rate: what goes into the threshold and into the alarm -------------------------------


def test_the_rate_goes_through_the_rules_hysteresis_and_delays() -> None:
    s = rate_rule(hysteresis=50, on_delay=2, off_delay=2)
    assert s.on_value("d", 1, 0.0, 0.0) is None
    assert s.on_value("d", 1, 200.0, 1.0) is None  # 200/s, but not for 2 s yet
    assert s.on_value("d", 1, 400.0, 2.0) is None
    assert s.on_value("d", 1, 600.0, 3.0).active is True  # 2 s over the limit
    assert s.on_value("d", 1, 660.0, 4.0) is None  # 60/s: under 100, within the hysteresis
    assert s.on_value("d", 1, 700.0, 5.0) is None  # 40/s: past it, off-delay running
    assert s.on_value("d", 1, 700.0, 6.0) is None
    assert s.on_value("d", 1, 700.0, 7.0).active is False


def test_each_device_and_channel_has_its_own_rate() -> None:
    s = rate_rule()
    s.on_value("a", 1, 0.0, 0.0)
    s.on_value("a", 2, 1000.0, 0.5)
    s.on_value("b", 1, 5000.0, 0.7)
    change = s.on_value("a", 1, 150.0, 1.0)  # 150/s against a's channel 1 only
    assert (change.device, change.channel, change.field) == ("a", 1, "power")
    assert change.value == 150.0 and change.active is True
    assert s.on_value("a", 2, 1010.0, 1.5) is None  # 10/s on channel 2: its own track


def test_the_rate_and_its_details_are_rounded_as_published() -> None:
    s = rate_rule()
    s.on_value("d", None, 0.0, 0.0)
    change = s.on_value("d", None, 100.0, 0.3)  # 333.333... per second over 0.3 s
    assert change.value == 333.333333 and change.details == {"reading": 100.0, "over_s": 0.3}
    assert s.on_value("d", None, 0.0, 10.0).active is False  # falling: cleared
    change = s.on_value("d", None, 40.0, 10.12345)  # 324/s over 0.12345 s
    assert change.active is True and change.details["over_s"] == 0.123


def test_the_window_takes_the_newest_reading_at_least_that_old() -> None:
    s = rate_rule(window=10)
    s.on_value("d", 1, 0.0, 0.0)
    s.on_value("d", 1, 0.0, 5.0)
    change = s.on_value("d", 1, 2000.0, 15.0)  # against t=5 (10 s old), not t=0
    assert change.details["over_s"] == 10.0 and change.value == 200.0
    s = rate_rule(window=10)
    s.on_value("d", 1, 0.0, 0.0)
    change = s.on_value("d", 1, 4000.0, 20.0)  # a gap longer than the window: still a rate
    assert change is not None and change.details["over_s"] == 20.0


def test_a_restored_rate_alarm_clears_at_the_next_normal_rate() -> None:
    s = rate_rule()
    assert s.restore("d", 1) is True
    s.on_value("d", 1, 0.0, 0.0)
    change = s.on_value("d", 1, 10.0, 1.0)
    assert change is not None and change.active is False
