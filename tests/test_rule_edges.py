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
