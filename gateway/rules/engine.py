"""The rule engine: routes each reading and event to the rules that watch it.

Every rule kind keeps its own state in its own module (``RULE_STATES``); the
engine only builds the routes once and calls them. A reading costs one dict
lookup and a call per rule that watches one of its fields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.clock import SystemClock
from gateway.config.loader import DeviceSpec, selects
from gateway.config.rules import (AbsenceRule, ConfirmRule, CountRule, EventRule, ForcedRule,
                                  HeldRule, RateRule, ThresholdRule)
from gateway.readings import DeviceEvent, Reading
from gateway.rules.absence import AbsenceState
from gateway.rules.base import EventHandler, RuleState, ValueHandler
from gateway.rules.change import RuleChange
from gateway.rules.confirm import ConfirmState
from gateway.rules.events import CountState, EventState
from gateway.rules.forced import ForcedState
from gateway.rules.held import HeldState
from gateway.rules.rate import RateState
from gateway.rules.threshold import ThresholdState

__all__ = ["RuleChange", "RuleEngine", "RULE_STATES"]


class RuleEngine:
    """Holds every rule's state; ``evaluate`` is synchronous and allocation-light."""

    def __init__(self, rules: list[Any], devices: dict[str, DeviceSpec], *, clock=None):
        clock = clock or SystemClock()
        self.states: list[RuleState] = [RULE_STATES[type(r)](r, clock) for r in rules]
        self._by_rule = {s.rule.id: s for s in self.states}
        # device id -> [(field or None, handler)], built once
        self._routes: dict[str, list[tuple[str | None, ValueHandler]]] = {}
        self._event_routes: dict[str, list[EventHandler]] = {}
        for state in self.states:
            selected = [d for d in devices.values() if selects(state.rule, d)]
            channels = frozenset(state.rule.select.channels)
            for device, field, handler in state.reading_routes(selected):
                if channels:
                    handler = _on_channels(handler, channels)
                self._routes.setdefault(device, []).append((field, handler))
            for device, handler in state.event_routes(selected):
                if channels:
                    handler = _events_on_channels(handler, channels)
                self._event_routes.setdefault(device, []).append(handler)
        self._tickers = [s for s in self.states if type(s).tick is not RuleState.tick]

    def evaluate(self, reading: Reading) -> list[RuleChange]:
        """Run every rule that watches this reading; return the changes of state."""
        routes = self._routes.get(reading.device)
        if not routes:
            return []
        changes = []
        values = reading.values
        device, channel, ts = reading.device, reading.channel, reading.ts
        for field, handler in routes:
            # a route without a field (None) takes every reading, with no value
            value = values.get(field)  # type: ignore[arg-type]
            if value is None and field is not None:
                continue  # the reading lacks the field
            change = handler(device, channel, value, ts)
            if change is not None:
                changes.append(change)
        return changes

    def evaluate_event(self, event: DeviceEvent) -> list[RuleChange]:
        """Run the rules that watch this device's events."""
        handlers = self._event_routes.get(event.device)
        if not handlers:
            return []
        changes = []
        for handler in handlers:
            change = handler(event)
            if change is not None:
                changes.append(change)
        return changes

    def tick(self, now: float) -> list[RuleChange]:
        """Changes due to time alone (held too long, silent, confirmed, grace over)."""
        changes: list[RuleChange] = []
        for state in self._tickers:
            changes.extend(state.tick(now))
        return changes

    def restore_active(self, rule_id: str, device: str, channel: int | None) -> bool:
        """An alarm of ``rule_id`` was open with its condition present before a restart:
        tell the rule, so the next normal reading clears it. False when no rule
        holds such a condition (unknown rule, momentary kind)."""
        state = self._by_rule.get(rule_id)
        return state is not None and state.restore(device, channel)


def _on_channels(handler: ValueHandler, channels: frozenset[int]) -> ValueHandler:
    """A rule that watches some channels only (``select.channels``: one input of a module)."""
    def on_channel(device: str, channel: int | None, value: float | None, ts: float):
        return handler(device, channel, value, ts) if channel in channels else None
    return on_channel


def _events_on_channels(handler: EventHandler, channels: frozenset[int]) -> EventHandler:
    def on_channel(event: DeviceEvent):
        return handler(event) if event.channel in channels else None
    return on_channel


# One entry per rule config type: how to build its runtime state from (rule, clock).
RULE_STATES: dict[type, Callable[[Any, Any], RuleState]] = {
    ThresholdRule: lambda rule, clock: ThresholdState(rule),
    HeldRule: lambda rule, clock: HeldState(rule),
    EventRule: lambda rule, clock: EventState(rule),
    CountRule: lambda rule, clock: CountState(rule),
    AbsenceRule: lambda rule, clock: AbsenceState(rule, clock=clock),
    RateRule: lambda rule, clock: RateState(rule),
    ConfirmRule: lambda rule, clock: ConfirmState(rule),
    ForcedRule: lambda rule, clock: ForcedState(rule),
}
