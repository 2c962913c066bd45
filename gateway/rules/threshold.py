"""Threshold rule: a value above (or below) a limit, with hysteresis and delays."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.rules import ThresholdRule
from gateway.rules.base import NO_CHANGES, RuleState
from gateway.rules.change import RuleChange


@dataclass(slots=True)
class _Track:
    """Where one (device, channel) stands against the rule."""

    active: bool = False
    since: float | None = None  # when the pending transition's condition began
    value: float = 0.0  # the last value seen, reported if a timer settles the transition


class ThresholdState(RuleState):
    """Runs one threshold rule for every (device, channel) it watches.

    ``update`` returns True when the condition becomes active, False when it
    clears, and None when nothing changes. On-delay: the condition must hold that
    long before it counts; off-delay likewise before it clears. Hysteresis: an
    active condition clears only once the value is back past the limit by that much.
    A pending delay is also settled by ``tick``, so a device that reports only on
    change (and stays quiet while the condition holds) is not alarmed late.
    """

    __slots__ = ("_tracks", "_pending", "_above", "_limit", "_release", "_floor")

    def __init__(self, rule: ThresholdRule):
        super().__init__(rule)
        self._tracks: dict[tuple[str, int | None], _Track] = {}
        self._pending: set[tuple[str, int | None]] = set()  # tracks with a delay running
        self._above = rule.above is not None
        self._limit = rule.above if rule.above is not None else rule.below
        self._release = (self._limit - rule.hysteresis if self._above  # type: ignore[operator]
                         else self._limit + rule.hysteresis)  # type: ignore[operator]
        self._floor = rule.ignore_at_or_below

    def reading_routes(self, selected):
        """Every selected device that reads the rule's field."""
        return [(d.id, self.rule.field, self.on_value) for d in selected if self.rule.field in d.fields]

    def on_value(self, device: str, channel: int | None, value: float, ts: float) -> RuleChange | None:
        """Feed one value; the change it makes, if any."""
        change = self.update(device, channel, value, ts)
        if change is None:
            return None
        return RuleChange(self.rule, device, channel, self.rule.field, value, ts, change)

    def restore(self, device: str, channel: int | None) -> bool:
        """Take the condition as active (its alarm was open before a restart)."""
        track = self._tracks.setdefault((device, channel), _Track())
        track.active, track.since = True, None
        self._pending.discard((device, channel))
        return True

    def update(self, device: str, channel: int | None, value: float, now: float) -> bool | None:
        """Feed one value; report a change of state."""
        key = (device, channel)
        track = self._tracks.get(key)
        if track is None:
            track = self._tracks[key] = _Track()
        track.value = value
        if not track.active:
            if self._above:
                hit = value > self._limit  # type: ignore[operator]
            else:
                hit = value < self._limit and (self._floor is None or value > self._floor)  # type: ignore[operator]
            change = self._settle(track, hit, self.rule.on_delay, now, True)
        else:
            if self._above:
                gone = value < self._release
            else:
                gone = value > self._release or (self._floor is not None and value <= self._floor)
            change = self._settle(track, gone, self.rule.off_delay, now, False)
        if track.since is None:
            self._pending.discard(key)
        else:
            self._pending.add(key)
        return change

    def tick(self, now: float) -> list[RuleChange]:
        """Settle the delays that have run out with no new reading to do it."""
        if not self._pending:
            return NO_CHANGES
        changes = []
        for key in list(self._pending):
            track = self._tracks[key]
            delay = self.rule.off_delay if track.active else self.rule.on_delay
            if track.since is not None and now - track.since >= delay:
                track.active = not track.active
                track.since = None
                changes.append(RuleChange(self.rule, key[0], key[1], self.rule.field,
                                          track.value, now, track.active))
            if track.since is None:
                self._pending.discard(key)
        return changes

    @staticmethod
    def _settle(track: _Track, condition: bool, delay: float, now: float,
                becomes: bool) -> bool | None:
        if not condition:
            track.since = None
            return None
        if track.since is None:
            track.since = now
        if now - track.since >= delay:
            track.active = becomes
            track.since = None
            return becomes
        return None

    def is_active(self, device: str, channel: int | None) -> bool:
        """Whether the condition currently holds for that device and channel."""
        track = self._tracks.get((device, channel))
        return bool(track and track.active)
