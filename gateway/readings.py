"""What flows through the pipeline: plain slotted records, no validation per item."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Reading:
    """Values of one device (and one channel of it, e.g. a charging port) at one instant.

    ``ts`` is seconds since the epoch (UTC), taken when the value was read at the
    source. ``channel`` is the sub-key inside a device (port number, door number) or
    None for device-wide values. ``values`` maps field name to a number (bools as 0/1).
    """

    device: str
    channel: int | None
    values: dict[str, float]
    ts: float


@dataclass(slots=True)
class DeviceEvent:
    """Something a device reported happening (a door forced, a throw, a card denied).

    ``name`` is the normalised event name (``forced_open``, ``denied``, ``throw``);
    ``attrs`` carries its details (reason code, floor estimate, snapshot reference).
    """

    device: str
    channel: int | None
    name: str
    ts: float
    attrs: dict[str, object] = field(default_factory=dict)
