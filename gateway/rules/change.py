"""What a rule reports: its condition became active or cleared on a device and channel."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True, frozen=True)
class RuleChange:
    """A rule's condition became active (``active=True``) or cleared on a device.

    ``field`` is the field or event name that triggered it. ``severity`` overrides
    the rule's (None: the rule's). ``details`` goes into the alarm JSON as its
    ``details`` object (an event's attributes: floor estimate, snapshot, clip).
    ``momentary``: the condition has no "back to normal" (an event); the alarm
    stays active until acknowledged.
    """

    rule: Any
    device: str
    channel: int | None
    field: str
    value: float | None
    ts: float
    active: bool
    severity: int | None = None
    details: dict[str, object] | None = None
    momentary: bool = False
