"""The alarm manager: opens, repeats, clears, acknowledges, resets, shelves,
escalates and closes alarms.

It is synchronous and called from the pipeline (rules), the timer (``tick``)
and operators' commands; every transition is handed to the listeners (MQTT
publisher, state file, webhook, log), which must not block.

Lifecycle (after ISA-18.2 and GB 50394):

- one alarm per (rule, device, channel); a new occurrence while it is open
  raises its ``count`` (event ``repeated``) and needs a new acknowledgement;
- ``condition`` follows the rule; a non-latched alarm whose condition goes is
  ``cleared``; a latched one stays ``active`` (event ``condition_cleared``)
  until a person resets it; a momentary one (an event) has no condition and
  stays ``active`` until acknowledged;
- it closes once acknowledged with its condition gone (a latched one only by
  ``reset``, which needs the condition gone);
- ``shelve`` hides it for at most ``max_shelve`` seconds (events go on being
  recorded and published, with ``shelved_until`` set; the webhook and the
  escalation hold back); it is unshelved by a person or when the time is up;
- an alarm left unacknowledged (and not shelved) escalates every
  ``escalate_after`` seconds: event ``escalated``, severity one more urgent
  (the number one lower, down to 0, which only escalation reaches).
"""

from __future__ import annotations

import collections
import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway.alarms.alarm import Alarm, iso
from gateway.errors import GatewayError

log = logging.getLogger(__name__)

# Each open alarm carries its recent history (the console shows it, the state file
# rewrites it with every transition): bounded in entries and in note length, so a
# flood of operator commands with long notes keeps each alarm's record small. The
# state file's transitions keep every note whole.
HISTORY_IN_MEMORY = 20  # entries per alarm
HISTORY_NOTE_CHARS = 200  # of each note, in the in-memory history
RECENTLY_CLOSED = 200


class UnknownAlarm(GatewayError):
    """An operator's command names an alarm that is not open."""

    def __init__(self, alarm_id: str):
        self.alarm_id = alarm_id
        super().__init__(f"no open alarm {alarm_id!r}")


class AlarmCommandRefused(GatewayError, ValueError):
    """An operator's command that the alarm's state does not allow (a reset while
    the condition is still present, shelving for longer than allowed)."""

    def __init__(self, alarm_id: str, command: str, reason: str):
        self.alarm_id = alarm_id
        self.command = command
        self.reason = reason
        super().__init__(f"{command} of {alarm_id} refused: {reason}")


@dataclass(slots=True, frozen=True)
class Transition:
    """One change of an alarm: ``event`` is raised, repeated, cleared,
    condition_cleared, acked, reset, shelved, unshelved, escalated or closed.

    ``alarm`` is its public JSON after the change; ``record`` everything about
    it (for the state file).
    """

    event: str
    alarm: dict[str, object]
    ts: float
    by: str | None = None
    note: str | None = None
    record: dict[str, object] | None = None

    def to_json(self) -> dict[str, object]:
        """The transition as published on ``alarm_events`` (and to webhooks)."""
        out: dict[str, object] = {"event": self.event, "ts": iso(self.ts), "alarm": self.alarm}
        if self.by is not None:
            out["by"] = self.by
        if self.note:
            out["note"] = self.note
        return out


Listener = Callable[[Transition], None]


class AlarmManager:
    """Keeps the open alarms; never drops one."""

    def __init__(self, *, clock, listeners: list[Listener] | None = None,
                 escalate_after: float = 0.0, max_shelve: float = 8 * 3600.0):
        self._clock = clock
        self._listeners: list[Listener] = list(listeners or [])
        self._open: dict[tuple[str, str, int | None], Alarm] = {}
        self._by_id: dict[str, Alarm] = {}
        self._seq = itertools.count()
        self._closed: deque[dict[str, object]] = deque(maxlen=RECENTLY_CLOSED)
        self.escalate_after = escalate_after  # default for severity 1; 0 = never
        self.max_shelve = max_shelve
        self.transitions = 0
        # (rule, device, channel, ts) -> why no alarm may be raised now, or None
        # (devices out of service, bypassed inputs: gateway.alarms.protection)
        self.hold_back: Callable[[str, str, int | None, float], str | None] | None = None
        self.held_back: collections.Counter[str] = collections.Counter()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with every transition from now on."""
        self._listeners.append(listener)

    def open_alarms(self) -> list[Alarm]:
        """Open alarms, most severe first, then newest."""
        return sorted(self._open.values(), key=lambda a: (a.severity, -a.last_ts))

    def recently_closed(self) -> list[dict[str, object]]:
        """The JSON of the alarms closed lately (since the start), newest first."""
        return list(reversed(self._closed))

    def get(self, alarm_id: str) -> Alarm:
        """The open alarm with that id, or UnknownAlarm."""
        try:
            return self._by_id[alarm_id]
        except KeyError:
            raise UnknownAlarm(alarm_id) from None

    def find(self, rule: str, device: str, channel: int | None) -> Alarm | None:
        """The open alarm of that rule on that device and channel, if any."""
        return self._open.get((rule, device, channel))

    # -- from the rules ---------------------------------------------------------------

    def activate(self, *, rule: str, severity: int, device: str, kind: str,
                 channel: int | None, location: dict[str, object], message: str,
                 value: float | None, ts: float, latch: bool = False, momentary: bool = False,
                 details: dict[str, object] | None = None,
                 escalate_after: float | None = None,
                 reset_needs_note: bool = False) -> Alarm | None:
        """A rule's condition holds (or, ``momentary``, an event happened): open the
        alarm, or count a new occurrence of the open one.

        ``escalate_after``: None takes the manager's default for severity 1 (none
        for the others), 0 never escalates. Nothing is raised for a device out of
        service or a bypassed input (``hold_back``): counted in ``held_back``.
        """
        alarm = self._open.get((rule, device, channel))
        if self.hold_back is not None:
            reason = self.hold_back(rule, device, channel, ts)
            if reason is not None:
                self.held_back[reason] += 1
                return alarm
        if alarm is None:
            after = self.escalate_after if severity == 1 else 0.0
            if escalate_after is not None:
                after = escalate_after
            alarm = Alarm(id=self._new_id(ts), rule=rule, severity=severity, device=device,
                          kind=kind, channel=channel, location=location, message=message,
                          value=value, first_ts=ts, last_ts=ts, latched=latch,
                          condition=not momentary, momentary=momentary, base_severity=severity,
                          escalate_after=after or None, details=dict(details or {}),
                          reset_needs_note=reset_needs_note)
            self._arm_escalation(alarm)
            self._open[alarm.key] = alarm
            self._by_id[alarm.id] = alarm
            self._emit("raised", alarm, ts)
            return alarm
        alarm.value, alarm.last_ts, alarm.message = value, ts, message
        if details:
            alarm.details = dict(details)
        if alarm.condition and not momentary:
            return alarm  # the same occurrence, still going
        alarm.count += 1
        alarm.state = "active"
        alarm.condition = not momentary
        alarm.acked = False  # a new occurrence needs a new acknowledgement
        alarm.severity = min(alarm.severity, severity)  # an escalation stands
        self._arm_escalation(alarm)
        self._emit("repeated", alarm, ts)
        return alarm

    def deactivate(self, *, rule: str, device: str, channel: int | None,
                   value: float | None, ts: float) -> Alarm | None:
        """A rule's condition is gone: clear its alarm unless it latches."""
        alarm = self._open.get((rule, device, channel))
        if alarm is None or not alarm.condition:
            return alarm
        alarm.condition = False
        alarm.value, alarm.last_ts = value, ts
        if alarm.latched:
            self._emit("condition_cleared", alarm, ts)  # still active until a person resets it
            return alarm
        alarm.state = "cleared"
        if alarm.acked:
            self._close(alarm, ts, "cleared")
        else:
            self._emit("cleared", alarm, ts)
        return alarm

    # -- from operators ---------------------------------------------------------------

    def ack(self, alarm_id: str, *, by: str, note: str | None = None) -> Alarm:
        """An operator acknowledges an alarm; one whose condition is gone then closes
        (a latched one waits for a reset). Acknowledging twice changes nothing."""
        alarm = self.get(alarm_id)
        if alarm.acked:
            return alarm
        ts = self._clock.time()
        alarm.acked = True
        alarm.next_escalation = None
        if not alarm.latched and not alarm.condition:
            self._close(alarm, ts, "acked", by, note)
        else:
            self._emit("acked", alarm, ts, by, note)
        return alarm

    def reset(self, alarm_id: str, *, by: str, note: str | None = None) -> Alarm:
        """An operator declares the alarm over (the way to end a latched one): it is
        acknowledged and closed. Refused while its condition is still present."""
        alarm = self.get(alarm_id)
        if alarm.condition:
            raise AlarmCommandRefused(alarm_id, "reset", "its condition is still present "
                                                         "(acknowledge it; reset once it is gone)")
        if alarm.reset_needs_note and not (note and note.strip()):
            raise AlarmCommandRefused(alarm_id, "reset", "needs a note saying what was found "
                                                         "(a one-key alarm is reset with a note)")
        alarm.acked = True
        self._close(alarm, self._clock.time(), "reset", by, note)
        return alarm

    def shelve(self, alarm_id: str, *, by: str, note: str | None = None,
               minutes: float | None = None) -> Alarm:
        """An operator hides an alarm for ``minutes`` (at most ``max_shelve``);
        shelving again sets a new end."""
        alarm = self.get(alarm_id)
        if minutes is None or not minutes > 0:
            raise AlarmCommandRefused(alarm_id, "shelve", "needs a positive number of minutes")
        if minutes * 60 > self.max_shelve:
            raise AlarmCommandRefused(alarm_id, "shelve", f"at most {self.max_shelve / 60:g} "
                                                          f"minutes (asked {minutes:g})")
        ts = self._clock.time()
        alarm.shelved_until = ts + minutes * 60
        alarm.next_escalation = None
        self._emit("shelved", alarm, ts, by, note)
        return alarm

    def shelve_until(self, alarm_id: str, *, until: float, by: str,
                     note: str | None = None) -> Alarm:
        """Shelve up to a given time: another hub replica's shelve of the same alarm
        (gateway.hub.alarm_sync), whose end is the operator's, not this clock's. The same
        ``shelved`` transition as ``shelve``; an end already past, or further than
        ``max_shelve`` from now, is refused."""
        alarm = self.get(alarm_id)
        ts = self._clock.time()
        if not until > ts:
            raise AlarmCommandRefused(alarm_id, "shelve", "the shelving's end is past")
        if until - ts > self.max_shelve:
            raise AlarmCommandRefused(alarm_id, "shelve", f"at most {self.max_shelve / 60:g} "
                                                          f"minutes")
        alarm.shelved_until = until
        alarm.next_escalation = None
        self._emit("shelved", alarm, ts, by, note)
        return alarm

    def unshelve(self, alarm_id: str, *, by: str, note: str | None = None) -> Alarm:
        """An operator shows a shelved alarm again (nothing happens if it is not shelved)."""
        alarm = self.get(alarm_id)
        if alarm.shelved_until is not None:
            self._unshelve(alarm, self._clock.time(), by, note)
        return alarm

    # -- from the timer ---------------------------------------------------------------

    def tick(self, now: float) -> None:
        """End shelving whose time is up; escalate what waited too long unacknowledged."""
        for alarm in list(self._open.values()):
            if alarm.shelved_until is not None and now >= alarm.shelved_until:
                self._unshelve(alarm, now, None, "shelving time is up")
            due = alarm.next_escalation
            if due is not None and now >= due and not alarm.acked and alarm.shelved_until is None:
                alarm.escalations += 1
                alarm.severity = max(0, alarm.severity - 1)
                self._arm_escalation(alarm, now)  # the next one a full period from now
                self._emit("escalated", alarm, now, None,
                           f"not acknowledged within {alarm.escalate_after:g} s")

    # -- after a restart --------------------------------------------------------------

    def restore(self, records: Iterable[dict[str, object]]) -> list[Alarm]:
        """Take back the alarms that were open before a restart, unchanged and
        without any transition (their retained state is republished as it was)."""
        restored = []
        for record in records:
            alarm = Alarm.from_record(record)
            if alarm.key in self._open or alarm.id in self._by_id:
                log.warning("state file: alarm %s duplicates an open one; skipped", alarm.id)
                continue
            self._open[alarm.key] = alarm
            self._by_id[alarm.id] = alarm
            restored.append(alarm)
        return restored

    def condition_unknown(self, alarm: Alarm) -> None:
        """No rule will ever report on this restored alarm's condition again (its
        rule is gone from the config): treat the condition as gone, so a person
        can acknowledge and reset it."""
        alarm.condition = False

    # -- inside -----------------------------------------------------------------------

    def _unshelve(self, alarm: Alarm, ts: float, by: str | None, note: str | None) -> None:
        alarm.shelved_until = None
        self._arm_escalation(alarm, ts)
        self._emit("unshelved", alarm, ts, by, note)

    def _arm_escalation(self, alarm: Alarm, now: float | None = None) -> None:
        if alarm.escalate_after and not alarm.acked and alarm.shelved_until is None:
            alarm.next_escalation = (self._clock.time() if now is None else now) + alarm.escalate_after
        else:
            alarm.next_escalation = None

    def _close(self, alarm: Alarm, ts: float, cause: str, by: str | None = None,
               note: str | None = None) -> None:
        self._emit(cause, alarm, ts, by, note)
        alarm.state = "closed"
        alarm.next_escalation = None
        del self._open[alarm.key]
        del self._by_id[alarm.id]
        self._emit("closed", alarm, ts, by, note)
        self._closed.append(alarm.to_json())

    def _emit(self, event: str, alarm: Alarm, ts: float, by: str | None = None,
              note: str | None = None) -> None:
        self.transitions += 1
        short = note if note is None or len(note) <= HISTORY_NOTE_CHARS \
            else note[:HISTORY_NOTE_CHARS - 1] + "\u2026"
        alarm.history.append({"event": event, "ts": iso(ts), "by": by, "note": short})
        del alarm.history[:-HISTORY_IN_MEMORY]  # the newest entries (nothing while fewer)
        transition = Transition(event, alarm.to_json(), ts, by, note, alarm.to_record())
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
        for _ in range(4096):
            alarm_id = f"{out}-{next(self._seq) % 4096:03x}"
            if alarm_id not in self._by_id:
                return alarm_id
        # 4096 alarms open from one millisecond (one reading raising that many): a longer
        # number, unique since the sequence never repeats, rather than looping forever
        return f"{out}-{next(self._seq):x}"
