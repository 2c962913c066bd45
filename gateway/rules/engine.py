"""The rule engine: routes each reading to the rules that watch its device and field."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.loader import DeviceSpec, selects
from gateway.config.rules import ThresholdRule
from gateway.readings import DeviceEvent, Reading
from gateway.rules.threshold import ThresholdState


@dataclass(slots=True, frozen=True)
class RuleChange:
    """A rule's condition became active (``active=True``) or cleared on a device."""

    rule: ThresholdRule
    device: str
    channel: int | None
    field: str
    value: float
    ts: float
    active: bool


class RuleEngine:
    """Holds every rule's state; ``evaluate`` is synchronous and allocation-light."""

    def __init__(self, rules: list[ThresholdRule], devices: dict[str, DeviceSpec]):
        self.states = [ThresholdState(r) for r in rules]
        # device id -> [(field, state)], built once so a reading costs one lookup
        self._routes: dict[str, list[tuple[str, ThresholdState]]] = {}
        for state in self.states:
            for spec in devices.values():
                if state.rule.field in spec.fields and selects(state.rule, spec):
                    self._routes.setdefault(spec.id, []).append((state.rule.field, state))
        self.evaluations = 0

    def evaluate(self, reading: Reading) -> list[RuleChange]:
        """Run every rule that watches this reading; return the changes of state."""
        routes = self._routes.get(reading.device)
        if not routes:
            return []
        changes = []
        values = reading.values
        for field, state in routes:
            value = values.get(field)
            if value is None:
                continue
            self.evaluations += 1
            change = state.update(reading.device, reading.channel, value, reading.ts)
            if change is not None:
                changes.append(RuleChange(state.rule, reading.device, reading.channel, field,
                                          value, reading.ts, change))
        return changes

    def evaluate_event(self, event: DeviceEvent) -> list[RuleChange]:
        """Run the rules that watch device events (none of the threshold kind)."""
        return []
