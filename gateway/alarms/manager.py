"""The alarm manager: opens, repeats, clears, acknowledges and closes alarms.

It is synchronous and called from the pipeline; every transition is handed to
the listeners (MQTT publisher, log) which must not block.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from gateway.alarms.alarm import Alarm, iso
from gateway.errors import GatewayError

log = logging.getLogger(__name__)


class UnknownAlarm(GatewayError):
    """An operator's command names an alarm that is not open."""

    def __init__(self, alarm_id: str):
        self.alarm_id = alarm_id
        super().__init__(f"no open alarm {alarm_id!r}")


@dataclass(slots=True, frozen=True)
class Transition:
    """One change of an alarm: ``event`` is raised, repeated, cleared, acked or closed."""

    event: str
    alarm: dict[str, object]
    ts: float
    by: str | None = None
    note: str | None = None

    def to_json(self) -> dict[str, object]:
        """The transition as published on ``alarm_events``."""
        out: dict[str, object] = {"event": self.event, "ts": iso(self.ts), "alarm": self.alarm}
        if self.by is not None:
            out["by"] = self.by
        if self.note:
            out["note"] = self.note
        return out


Listener = Callable[[Transition], None]


class AlarmManager:
    """Keeps the open alarms; never drops one."""

    def __init__(self, *, clock, listeners: list[Listener] | None = None):
        self._clock = clock
        self._listeners: list[Listener] = list(listeners or [])
        self._open: dict[tuple[str, str, int | None], Alarm] = {}
        self._by_id: dict[str, Alarm] = {}
        self._seq = itertools.count()
        self.transitions = 0

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with every transition from now on."""
        self._listeners.append(listener)

    def open_alarms(self) -> list[Alarm]:
        """Open alarms, most severe first, then newest."""
        return sorted(self._open.values(), key=lambda a: (a.severity, -a.last_ts))

    def get(self, alarm_id: str) -> Alarm:
        """The open alarm with that id, or UnknownAlarm."""
        try:
            return self._by_id[alarm_id]
        except KeyError:
            raise UnknownAlarm(alarm_id) from None

    def activate(self, *, rule: str, severity: int, device: str, kind: str,
                 channel: int | None, location: dict[str, object], message: str,
                 value: float | None, ts: float, latch: bool = False) -> Alarm:
        """A rule's condition holds: open the alarm, or count a repeat of the open one."""
        alarm = self._open.get((rule, device, channel))
        if alarm is None:
            alarm = Alarm(id=self._new_id(ts), rule=rule, severity=severity, device=device,
                          kind=kind, channel=channel, location=location, message=message,
                          value=value, first_ts=ts, last_ts=ts, latched=latch)
            self._open[alarm.key] = alarm
            self._by_id[alarm.id] = alarm
            self._emit("raised", alarm, ts)
            return alarm
        alarm.value, alarm.last_ts, alarm.message = value, ts, message
        if alarm.state == "cleared":
            alarm.state = "active"
            alarm.count += 1
            alarm.acked = False  # a new occurrence needs a new acknowledgement
            self._emit("repeated", alarm, ts)
        return alarm

    def deactivate(self, *, rule: str, device: str, channel: int | None,
                   value: float | None, ts: float) -> Alarm | None:
        """A rule's condition is gone: clear its alarm unless it latches."""
        alarm = self._open.get((rule, device, channel))
        if alarm is None or alarm.state != "active":
            return alarm
        alarm.value, alarm.last_ts = value, ts
        if alarm.latched:
            return alarm  # stays active until a person resets it
        alarm.state = "cleared"
        if alarm.acked:
            self._close(alarm, ts, "cleared")
        else:
            self._emit("cleared", alarm, ts)
        return alarm

    def ack(self, alarm_id: str, *, by: str, note: str | None = None) -> Alarm:
        """An operator acknowledges an alarm; a cleared one then closes."""
        alarm = self.get(alarm_id)
        ts = self._clock.time()
        if not alarm.acked:
            alarm.acked = True
            if alarm.state == "cleared":
                self._close(alarm, ts, "acked", by, note)
            else:
                self._emit("acked", alarm, ts, by, note)
        return alarm

    def _close(self, alarm: Alarm, ts: float, cause: str, by: str | None = None,
               note: str | None = None) -> None:
        self._emit(cause, alarm, ts, by, note)
        alarm.state = "closed"
        del self._open[alarm.key]
        del self._by_id[alarm.id]
        self._emit("closed", alarm, ts, by, note)

    def _emit(self, event: str, alarm: Alarm, ts: float, by: str | None = None,
              note: str | None = None) -> None:
        self.transitions += 1
        alarm.history.append({"event": event, "ts": iso(ts), "by": by, "note": note})
        transition = Transition(event, alarm.to_json(), ts, by, note)
        for listener in self._listeners:
            try:
                listener(transition)
            except Exception:  # a broken listener must not stop the others
                log.exception("alarm listener failed on %s %s", event, alarm.id)

    def _new_id(self, ts: float) -> str:
        # time-ordered and short: ms since epoch in base 36, plus a sequence number
        ms = int(ts * 1000)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"
        out = ""
        while ms:
            ms, r = divmod(ms, 36)
            out = digits[r] + out
        return f"{out}-{next(self._seq) % 4096:03x}"
