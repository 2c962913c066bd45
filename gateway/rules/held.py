"""Held rule: a field has kept one value for too long (a door left open)."""

from __future__ import annotations

from gateway.config.rules import HeldRule
from gateway.rules.base import NO_CHANGES, RuleState
from gateway.rules.change import RuleChange

Key = tuple[str, int | None]


class HeldState(RuleState):
    """Runs one held rule for every (device, channel) it watches.

    ``_since`` holds when the value started to equal ``equals`` for the tracks
    that are not active yet; only those are looked at by ``tick``, so the timer
    costs nothing while every door is shut.
    """

    __slots__ = ("_equals", "_for", "_since", "_active")

    def __init__(self, rule: HeldRule):
        super().__init__(rule)
        self._equals = float(rule.equals)
        self._for = rule.for_
        self._since: dict[Key, float] = {}  # pending: value held since, not yet alarmed
        self._active: set[Key] = set()      # alarmed

    def reading_routes(self, selected):
        """Every selected device that reads the rule's field."""
        return [(d.id, self.rule.field, self.on_value) for d in selected if self.rule.field in d.fields]

    def on_value(self, device: str, channel: int | None, value: float, ts: float) -> RuleChange | None:
        """Feed one value of the field."""
        key = (device, channel)
        if value == self._equals:
            if key in self._active:
                return None
            since = self._since.setdefault(key, ts)
            if ts - since >= self._for:
                return self._fire(key, since, ts)
            return None
        self._since.pop(key, None)
        if key in self._active:
            self._active.discard(key)
            return RuleChange(self.rule, device, channel, self.rule.field, value, ts, False)
        return None

    def tick(self, now: float) -> list[RuleChange]:
        """Fire the tracks that have now held long enough without a new reading."""
        if not self._since:
            return NO_CHANGES
        due = [(key, since) for key, since in self._since.items() if now - since >= self._for]
        return [self._fire(key, since, now) for key, since in due]

    def _fire(self, key: Key, since: float, now: float) -> RuleChange:
        del self._since[key]
        self._active.add(key)
        return RuleChange(self.rule, key[0], key[1], self.rule.field, self._equals, now, True,
                          details={"held_for": round(now - since, 3)})

    def restore(self, device: str, channel: int | None) -> bool:
        """Take the value as still held (its alarm was open before a restart)."""
        self._active.add((device, channel))
        return True
