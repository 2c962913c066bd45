"""One alarm and its JSON form (the contract the security room's software reads)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone


def iso(ts: float) -> str:
    """ISO 8601 UTC with milliseconds, e.g. 2024-05-01T08:15:30.123Z."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Alarm:
    """An open alarm: one per (rule, device, channel).

    ``state`` is ``active`` while its condition holds, while it is latched, or
    (momentary alarms: events) until acknowledged; ``cleared`` once the condition
    is gone. ``condition`` says whether the rule's condition holds now. It closes
    when it is acknowledged and its condition is gone (and, if latched, reset).
    ``severity`` is 1 (urgent) .. 4; escalation lowers the number, down to 0.
    """

    id: str
    rule: str
    severity: int
    device: str
    kind: str
    channel: int | None
    location: dict[str, object]
    message: str
    value: float | None
    first_ts: float
    last_ts: float
    state: str = "active"
    acked: bool = False
    count: int = 1
    latched: bool = False
    condition: bool = True
    momentary: bool = False
    base_severity: int | None = None  # the rule's, before any escalation
    escalate_after: float | None = None
    next_escalation: float | None = None  # wall-clock time of the next escalation
    escalations: int = 0
    shelved_until: float | None = None
    reset_needs_note: bool = False  # one-key alarms: a reset says what was found
    details: dict[str, object] = field(default_factory=dict)
    history: list[dict[str, object]] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, int | None]:
        """What makes two occurrences the same alarm."""
        return (self.rule, self.device, self.channel)

    def to_json(self) -> dict[str, object]:
        """The alarm as published: the design's field set, timestamps in ISO 8601 UTC,
        then the lifecycle extras (latched, condition, shelved_until, escalated, details)."""
        out: dict[str, object] = {
            "id": self.id, "rule": self.rule, "severity": self.severity, "state": self.state,
            "acked": self.acked, "device": self.device, "kind": self.kind,
            "location": self.location, "message": self.message, "value": self.value,
            "first_ts": iso(self.first_ts), "last_ts": iso(self.last_ts), "count": self.count,
            "latched": self.latched, "condition": self.condition,
            "shelved_until": iso(self.shelved_until) if self.shelved_until is not None else None,
            "escalated": self.escalations, "details": self.details,
        }
        if self.reset_needs_note:
            out["reset_needs_note"] = True
        return out

    def to_record(self) -> dict[str, object]:
        """Everything about the alarm, for the state file (plain JSON values)."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, object]) -> "Alarm":
        """An alarm back from ``to_record`` (unknown keys from a newer version are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})  # type: ignore[arg-type]
