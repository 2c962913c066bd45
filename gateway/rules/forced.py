"""Forced-open rule: a door contact opens with no grant or exit-button event shortly before."""

from __future__ import annotations

from gateway.alarms.alarm import iso
from gateway.config.rules import ForcedRule
from gateway.readings import DeviceEvent
from gateway.rules.base import NO_CHANGES, RuleState
from gateway.rules.change import RuleChange

Key = tuple[str, int | None]


class ForcedState(RuleState):
    """Runs one forced-open rule for every door (device, channel) it watches.

    A grant counts for a door when it comes from the door's own device or from
    ``grants_from``, on the same channel (door number) or with no channel (a
    terminal that serves one door). An opening seen first at start-up (no
    earlier value) is not an opening: the door may have been opened rightly
    before the gateway started. A grant lets one opening through and is then used
    up, so a second opening inside ``within`` is still caught. Times are the
    sources' timestamps, so the
    contact and the terminal must keep the same time (NTP) or be stamped by
    their drivers on arrival.
    """

    __slots__ = ("_open", "_unless", "_within", "_grace", "_sources", "_grants", "_last",
                 "_pending")

    def __init__(self, rule: ForcedRule):
        super().__init__(rule)
        self._open = float(rule.equals)
        self._unless = frozenset(rule.unless_events)
        self._within = rule.within
        self._grace = rule.grace
        self._sources: tuple[str, ...] = tuple(rule.grants_from)
        self._grants: dict[Key, float] = {}   # (device, channel) -> latest grant ts
        self._last: dict[Key, float] = {}     # last contact value per door
        self._pending: dict[Key, float] = {}  # doors opened without a grant, within grace

    def reading_routes(self, selected):
        """The contact field of every selected door device."""
        field = self.rule.field
        return [(d.id, field, self.on_value) for d in selected if field in d.fields]

    def event_routes(self, selected):
        """Grants from the door devices themselves and from ``grants_from``."""
        doors = [d.id for d in selected if self.rule.field in d.fields]
        return [(dev, self.on_event) for dev in dict.fromkeys([*doors, *self._sources])]

    def on_event(self, event: DeviceEvent) -> RuleChange | None:
        """Remember a grant (card, face, exit button, remote open)."""
        if event.name in self._unless:
            key = (event.device, event.channel)
            self._grants[key] = max(event.ts, self._grants.get(key, event.ts))  # a late older one
        return None

    def on_value(self, device: str, channel: int | None, value: float, ts: float) -> RuleChange | None:
        """A contact reading: an opening without a grant is forced."""
        key = (device, channel)
        was = self._last.get(key)
        self._last[key] = value
        if value != self._open or was is None or was == self._open:
            return None
        if self._take_grant(key, ts):
            return None
        if self._grace > 0:
            self._pending.setdefault(key, ts)
            return None
        return self._fire(key, ts, ts)

    def tick(self, now: float) -> list[RuleChange]:
        """Decide the openings whose grace is over."""
        if not self._pending:
            return NO_CHANGES
        out = []
        for key, opened in list(self._pending.items()):
            if self._take_grant(key, opened):
                del self._pending[key]
            elif now - opened >= self._grace:
                del self._pending[key]
                out.append(self._fire(key, opened, now))
        return out

    def _take_grant(self, key: Key, opened: float) -> bool:
        """Use up a recent grant for this door, if there is one."""
        device, channel = key
        since = opened - self._within
        grants = self._grants
        for source in (device, *self._sources):
            for ch in (channel, None):
                ts = grants.get((source, ch))
                if ts is not None and ts >= since:
                    del grants[(source, ch)]
                    return True
        return False

    def _fire(self, key: Key, opened: float, now: float) -> RuleChange:
        details = {"opened_at": iso(opened)} if now != opened else None
        return RuleChange(self.rule, key[0], key[1], self.rule.field, self._open, now, True,
                          details=details, momentary=True)
