"""Threshold rules with hysteresis, on-delay and off-delay, on an injected timeline."""

from __future__ import annotations

from gateway.config.rules import ThresholdRule
from gateway.rules.threshold import ThresholdState


def rule(**kw) -> ThresholdRule:
    return ThresholdRule(type="threshold", id="r", field="power", **kw)


def run(state: ThresholdState, series: list[tuple[float, float]]) -> list[tuple[float, bool]]:
    out = []
    for ts, value in series:
        change = state.update("d", 1, value, ts)
        if change is not None:
            out.append((ts, change))
    return out


def test_above_with_hysteresis_clears_only_past_it() -> None:
    s = ThresholdState(rule(above=1000, hysteresis=100))
    assert run(s, [(0, 900), (1, 1001), (2, 950), (3, 901), (4, 899)]) == [(1, True), (4, False)]


def test_on_delay_needs_the_condition_to_hold() -> None:
    s = ThresholdState(rule(above=60, on_delay=5))
    # a 3 s spike does nothing; a sustained one fires 5 s after it began
    assert run(s, [(0, 70), (3, 70), (3.5, 50), (10, 70), (14, 70), (15, 71)]) == [(15, True)]


def test_off_delay_holds_the_alarm() -> None:
    s = ThresholdState(rule(above=60, off_delay=10))
    assert run(s, [(0, 70), (1, 50), (5, 70), (6, 50), (15, 50), (16, 50)]) == [(0, True), (16, False)]


def test_chattering_input_yields_one_activation() -> None:
    s = ThresholdState(rule(above=100, hysteresis=10, on_delay=1))
    series = [(i * 0.1, 101 if i % 2 else 99) for i in range(200)]
    changes = run(s, series)
    assert changes == []  # never held for the on-delay
    s = ThresholdState(rule(above=100, hysteresis=10))
    assert run(s, series) == [(0.1, True)]  # hysteresis keeps it active


def test_below_with_floor_is_a_finished_charge_not_an_empty_port() -> None:
    s = ThresholdState(rule(below=30, ignore_at_or_below=1, on_delay=120))
    assert run(s, [(0, 0), (200, 0)]) == []  # nothing plugged
    assert run(s, [(300, 250), (400, 12), (519, 12), (520, 12), (521, 0)]) == [(520, True), (521, False)]


def test_channels_are_independent() -> None:
    s = ThresholdState(rule(above=10))
    assert s.update("d", 1, 11, 0) is True
    assert s.update("d", 2, 5, 0) is None
    assert s.is_active("d", 1) and not s.is_active("d", 2)


def test_a_quiet_device_is_alarmed_when_the_on_delay_runs_out() -> None:
    # A device that reports only on change says "70" once and then nothing:
    # the timer, not the next reading, must settle the on-delay.
    s = ThresholdState(rule(above=60, on_delay=5))
    assert s.update("d", 1, 70, 0) is None
    assert s.tick(4.9) == []
    [change] = s.tick(5.0)
    assert change.active is True and change.value == 70 and change.ts == 5.0
    assert s.tick(100) == [] and s.is_active("d", 1)


def test_the_timer_settles_an_off_delay_and_forgets_a_condition_that_went_away() -> None:
    s = ThresholdState(rule(above=60, off_delay=10))
    assert s.update("d", 1, 70, 0) is True
    assert s.update("d", 1, 50, 1) is None
    [change] = s.tick(11)
    assert change.active is False and change.value == 50
    s2 = ThresholdState(rule(above=60, on_delay=5))
    s2.update("d", 1, 70, 0)
    s2.update("d", 1, 50, 1)  # gone before the delay: nothing pending any more
    assert s2.tick(10) == []
