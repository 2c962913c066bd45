"""One alarm and its JSON form (the contract the security room's software reads)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone


def iso(ts: float) -> str:
    """ISO 8601 UTC with milliseconds, e.g. 2024-05-01T08:15:30.123Z."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Alarm:
    """An open alarm: one per (rule, device, channel).

    ``state`` is ``active`` while its condition holds (or it is latched) and
    ``cleared`` once the condition is gone; it closes when cleared and acknowledged.
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
    history: list[dict[str, object]] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, int | None]:
        """What makes two occurrences the same alarm."""
        return (self.rule, self.device, self.channel)

    def to_json(self) -> dict[str, object]:
        """The alarm as published: the design's field set, timestamps in ISO 8601 UTC."""
        return {
            "id": self.id, "rule": self.rule, "severity": self.severity, "state": self.state,
            "acked": self.acked, "device": self.device, "kind": self.kind,
            "location": self.location, "message": self.message, "value": self.value,
            "first_ts": iso(self.first_ts), "last_ts": iso(self.last_ts), "count": self.count,
        }
