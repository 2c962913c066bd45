"""Absence rule: nothing heard from a device for a while (a device gone quiet)."""

from __future__ import annotations

from gateway.config.rules import AbsenceRule
from gateway.readings import DeviceEvent
from gateway.rules.base import RuleState
from gateway.rules.change import RuleChange


class AbsenceState(RuleState):
    """Runs one absence rule for every selected device.

    Silence is measured on the gateway's clock at arrival, not on the devices'
    own timestamps: a device whose clock is off must not look silent. Counting
    starts at the first tick, so a device that never says anything after a
    start is reported ``for`` seconds later.
    """

    __slots__ = ("_clock", "_for", "_devices", "_last", "_active")

    def __init__(self, rule: AbsenceRule, *, clock):
        super().__init__(rule)
        self._clock = clock
        self._for = rule.for_
        self._devices: list[str] = []
        self._last: dict[str, float] = {}
        self._active: set[str] = set()

    def reading_routes(self, selected):
        """Every reading of every selected device."""
        self._devices = sorted({d.id for d in selected})
        return [(d, None, self.on_value) for d in self._devices]

    def event_routes(self, selected):
        """Every event of every selected device."""
        return [(d.id, self.on_event) for d in selected]

    def on_value(self, device: str, channel: int | None, value: float | None,
                 ts: float) -> RuleChange | None:
        """A sign of life from the device (any channel)."""
        return self._heard(device, ts)

    def on_event(self, event: DeviceEvent) -> RuleChange | None:
        """An event is a sign of life too."""
        return self._heard(event.device, event.ts)

    def _heard(self, device: str, ts: float) -> RuleChange | None:
        self._last[device] = self._clock.time()
        if device in self._active:
            self._active.discard(device)
            return RuleChange(self.rule, device, None, "", None, ts, False)
        return None

    def tick(self, now: float) -> list[RuleChange]:
        """Raise for each device silent for ``for`` seconds."""
        out = []
        last = self._last
        for device in self._devices:
            seen = last.get(device)
            if seen is None:
                last[device] = now
            elif now - seen >= self._for and device not in self._active:
                self._active.add(device)
                out.append(RuleChange(self.rule, device, None, "", round(now - seen, 3), now, True,
                                      details={"silent_for": round(now - seen, 3)}))
        return out

    def restore(self, device: str, channel: int | None) -> bool:
        """Still silent until heard from."""
        self._active.add(device)
        return True
