"""Confirmation rule: a first sign, then a condition that holds for a while (a fall,
then no motion for 30 s) raises a confirmed, more urgent alarm."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.rule_checks import emitting
from gateway.config.rules import ConfirmRule
from gateway.readings import DeviceEvent
from gateway.rules.base import NO_CHANGES, RuleState, json_safe
from gateway.rules.change import RuleChange
from gateway.rules.match import compile_where, value_set, where_matches

Key = tuple[str, int | None]


@dataclass(slots=True)
class _Pending:
    first_ts: float
    hold_from: float | None  # when ``then`` started holding after the first sign
    details: dict[str, object]


class ConfirmState(RuleState):
    """Runs one confirmation rule per (device, channel).

    After the first sign, ``then`` must hold for ``then.for`` seconds, counted
    from the first sign or from when ``then`` starts holding after it; if it
    stops holding once it held (the person moved), the confirmation is called
    off. Nothing confirms unless ``then`` has held its ``for`` seconds by ``within``
    seconds after the first sign.
    """

    __slots__ = ("_first_events", "_first_where", "_first_values", "_then_values", "_for",
                 "_within", "_then_holds", "_first_in", "_pending")

    def __init__(self, rule: ConfirmRule):
        super().__init__(rule)
        first, then = rule.first, rule.then
        self._first_events = frozenset(first.event or ())
        self._first_where = compile_where(first.where)
        self._first_values = value_set(first.equals, first.in_)
        self._then_values = value_set(then.equals, then.in_)
        self._for = then.for_
        self._within = rule.within if rule.within is not None else 2 * then.for_
        self._then_holds: dict[Key, bool] = {}  # last known state of ``then``
        self._first_in: dict[Key, bool] = {}    # field form: whether the first sign's value is in
        self._pending: dict[Key, _Pending] = {}

    def _watched(self, selected):
        rule = self.rule
        have_then = [d for d in selected if rule.then.field in d.fields]
        if rule.first.field is not None:
            return [d for d in have_then if rule.first.field in d.fields]
        return emitting(have_then, self._first_events)

    def reading_routes(self, selected):
        """``then``'s field, and the first sign's field in the field form."""
        watched = self._watched(selected)
        routes = [(d.id, self.rule.then.field, self.on_then) for d in watched]
        if self.rule.first.field is not None:
            routes += [(d.id, self.rule.first.field, self.on_first_value) for d in watched]
        return routes

    def event_routes(self, selected):
        """The first sign, in the event form."""
        if self.rule.first.field is not None:
            return ()
        return [(d.id, self.on_event) for d in self._watched(selected)]

    def on_event(self, event: DeviceEvent) -> RuleChange | None:
        """A first sign as an event."""
        if event.name in self._first_events and where_matches(self._first_where, event.attrs):
            details = json_safe(event.attrs)
            details["first"] = event.name
            self._start((event.device, event.channel), event.ts, details)
        return None

    def on_first_value(self, device: str, channel: int | None, value: float,
                       ts: float) -> RuleChange | None:
        """A first sign as a field entering its set of values."""
        key = (device, channel)
        now_in = value in self._first_values
        if now_in and not self._first_in.get(key):
            self._start(key, ts, {"first": self.rule.first.field, "first_value": value})
        self._first_in[key] = now_in
        return None

    def _start(self, key: Key, ts: float, details: dict[str, object]) -> None:
        if key not in self._pending:  # a second sign while waiting changes nothing
            holds = self._then_holds.get(key)  # None (never reported) does not hold
            self._pending[key] = _Pending(ts, ts if holds else None, details)

    def on_then(self, device: str, channel: int | None, value: float, ts: float) -> RuleChange | None:
        """A value of ``then``'s field."""
        key = (device, channel)
        holds = value in self._then_values
        self._then_holds[key] = holds
        pending = self._pending.get(key)
        if pending is None:
            return None
        if not holds:
            if pending.hold_from is not None:
                del self._pending[key]  # it held, then stopped: the person moved
            return None
        if pending.hold_from is None:
            pending.hold_from = ts
        return self._check(key, pending, ts, value)

    def tick(self, now: float) -> list[RuleChange]:
        """Confirm what has held long enough; forget what waited too long."""
        if not self._pending:
            return NO_CHANGES
        out = []
        for key, pending in list(self._pending.items()):
            change = self._check(key, pending, now, None)
            if change is not None:
                out.append(change)
        return out

    def _check(self, key: Key, pending: _Pending, now: float, value: float | None) -> RuleChange | None:
        # ``then`` must have held ``for`` seconds by ``within`` after the first sign; a hold
        # that has not started yet starts now at the earliest. Judged on the hold's own times,
        # so the answer does not depend on when the timer happens to run.
        hold_from = now if pending.hold_from is None else pending.hold_from
        if hold_from + self._for - pending.first_ts > self._within:
            del self._pending[key]  # too late to be confirmed
            return None
        if pending.hold_from is None or now - hold_from < self._for:
            return None
        del self._pending[key]
        details = dict(pending.details)
        details["confirmed_after"] = round(now - pending.first_ts, 3)
        return RuleChange(self.rule, key[0], key[1], self.rule.then.field, value, now, True,
                          details=details, momentary=True)
