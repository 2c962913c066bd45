"""Rate-of-change rule: a field rising (or falling) faster than a limit per second."""

from __future__ import annotations

from collections import deque

from gateway.config.rules import RateRule, ThresholdRule
from gateway.rules.base import RuleState
from gateway.rules.change import RuleChange
from gateway.rules.threshold import ThresholdState

Key = tuple[str, int | None]


class RateState(RuleState):
    """Runs one rate rule per (device, channel).

    The rate (units per second, signed) is taken against the newest reading at
    least ``window`` seconds old (the previous one without a window), then goes
    through the same limit, hysteresis and delays as a threshold rule.
    """

    __slots__ = ("_window", "_limits", "_history")

    def __init__(self, rule: RateRule):
        super().__init__(rule)
        self._window = rule.window
        self._limits = ThresholdState(ThresholdRule(
            type="threshold", id=rule.id, field=rule.field, above=rule.above, below=rule.below,
            hysteresis=rule.hysteresis, on_delay=rule.on_delay, off_delay=rule.off_delay))
        self._history: dict[Key, deque[tuple[float, float]]] = {}

    def reading_routes(self, selected):
        """Every selected device that reads the field."""
        return [(d.id, self.rule.field, self.on_value) for d in selected if self.rule.field in d.fields]

    def on_value(self, device: str, channel: int | None, value: float, ts: float) -> RuleChange | None:
        """Feed one value; the change of the rate's state, if any."""
        key = (device, channel)
        history = self._history.get(key)
        if history is None:
            history = self._history[key] = deque(maxlen=None if self._window else 2)
        if history and ts <= history[-1][0]:
            return None  # out of order or repeated: no rate from it
        history.append((ts, value))
        if self._window:
            start = ts - self._window
            while len(history) > 2 and history[1][0] <= start:
                history.popleft()
        if len(history) < 2:
            return None
        t0, v0 = history[0]
        rate = (value - v0) / (ts - t0)
        change = self._limits.update(device, channel, rate, ts)
        if change is None:
            return None
        return RuleChange(self.rule, device, channel, self.rule.field, round(rate, 6), ts, change,
                          details={"reading": value, "over_s": round(ts - t0, 3)})

    def restore(self, device: str, channel: int | None) -> bool:
        """Take the rate as still too high until it is seen back under the limit."""
        return self._limits.restore(device, channel)
