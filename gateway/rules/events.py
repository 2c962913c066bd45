"""Event rules: a device event in a set (optionally a condition until a clearing
event), or a reading's field in a set of values; and counts of events in a window."""

from __future__ import annotations

from collections import deque

from gateway.config.rules import CountRule, EventRule
from gateway.readings import DeviceEvent
from gateway.rules.base import RuleState, json_safe, numeric
from gateway.rules.change import RuleChange
from gateway.rules.match import compile_where, value_set, where_matches
from gateway.config.rule_checks import emitting

Key = tuple[str, int | None]


class EventState(RuleState):
    """Runs one event rule (either form) for every device and channel it watches."""

    __slots__ = ("_names", "_clear", "_where", "_values", "_active")

    def __init__(self, rule: EventRule):
        super().__init__(rule)
        self._names = frozenset(rule.event or ())
        self._clear = frozenset(rule.clear_on)
        self._where = compile_where(rule.where)
        self._values = value_set(rule.equals, rule.in_)
        self._active: set[Key] = set()  # conditions that hold (field form, clear_on form)

    def reading_routes(self, selected):
        """Field form: every selected device that reads the field."""
        field = self.rule.field
        if field is None:
            return ()
        return [(d.id, field, self.on_value) for d in selected if field in d.fields]

    def event_routes(self, selected):
        """Event form: every selected device that may emit one of the names."""
        if self.rule.field is not None:
            return ()
        return [(d.id, self.on_event) for d in emitting(selected, self._names | self._clear)]

    def on_event(self, event: DeviceEvent) -> RuleChange | None:
        """An event from a watched device."""
        key = (event.device, event.channel)
        if event.name in self._names and where_matches(self._where, event.attrs):
            if self._clear:
                if key in self._active:
                    return None
                self._active.add(key)
            return RuleChange(self.rule, event.device, event.channel, event.name,
                              numeric(event.attrs.get("value")), event.ts, True,
                              details=json_safe(event.attrs) or None, momentary=not self._clear)
        if event.name in self._clear and key in self._active:
            self._active.discard(key)
            return RuleChange(self.rule, event.device, event.channel, event.name,
                              numeric(event.attrs.get("value")), event.ts, False)
        return None

    def on_value(self, device: str, channel: int | None, value: float, ts: float) -> RuleChange | None:
        """Field form: active while the value is in the set."""
        key = (device, channel)
        hit = value in self._values
        if hit == (key in self._active):
            return None
        if hit:
            self._active.add(key)
        else:
            self._active.discard(key)
        return RuleChange(self.rule, device, channel, self.rule.field, value, ts, hit)

    def restore(self, device: str, channel: int | None) -> bool:
        """Field and clear_on forms hold a condition; plain events do not."""
        if self.rule.field is None and not self._clear:
            return False
        self._active.add((device, channel))
        return True


class CountState(RuleState):
    """``count`` matching events within ``window`` seconds, per device and channel."""

    __slots__ = ("_names", "_reset", "_where", "_count", "_window", "_seen")

    def __init__(self, rule: CountRule):
        super().__init__(rule)
        self._names = frozenset(rule.event)
        self._reset = frozenset(rule.reset_on)
        self._where = compile_where(rule.where)
        self._count = rule.count
        self._window = rule.window
        self._seen: dict[Key, deque[float]] = {}

    def event_routes(self, selected):
        """Every selected device that may emit one of the names."""
        return [(d.id, self.on_event) for d in emitting(selected, self._names | self._reset)]

    def on_event(self, event: DeviceEvent) -> RuleChange | None:
        """Count a matching event; fire on the count-th within the window."""
        key = (event.device, event.channel)
        if event.name in self._reset:
            self._seen.pop(key, None)
            return None
        if event.name not in self._names or not where_matches(self._where, event.attrs):
            return None
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = deque(maxlen=self._count)
        seen.append(event.ts)
        if len(seen) < self._count or event.ts - seen[0] > self._window:
            return None
        span = event.ts - seen[0]
        seen.clear()  # the next alarm needs another full burst
        details = json_safe(event.attrs)
        details.update(count=self._count, within_s=round(span, 3))
        return RuleChange(self.rule, event.device, event.channel, event.name, float(self._count),
                          event.ts, True, details=details, momentary=True)
