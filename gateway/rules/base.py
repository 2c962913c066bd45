"""What every rule kind's state offers the engine: routes, a timer tick, and restore."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from gateway.readings import DeviceEvent
from gateway.rules.change import RuleChange

if TYPE_CHECKING:
    from gateway.config.loader import DeviceSpec

# (device, channel, value of the routed field or None, ts) -> a change or None
ValueHandler = Callable[[str, "int | None", "float | None", float], "RuleChange | None"]
EventHandler = Callable[[DeviceEvent], "RuleChange | None"]
NO_CHANGES: list[RuleChange] = []


class RuleState:
    """Base of each rule kind's runtime state: one object per rule, keyed inside by
    (device, channel).

    The engine asks it once, at start, which readings (device, field) and which
    devices' events to route to it; after that a reading costs a dict lookup and
    a call per interested rule.
    """

    __slots__ = ("rule",)

    def __init__(self, rule) -> None:
        self.rule = rule

    def reading_routes(self, selected: list[DeviceSpec]
                       ) -> Iterable[tuple[str, str | None, ValueHandler]]:
        """(device id, field or None for every reading of it, handler)."""
        return ()

    def event_routes(self, selected: list[DeviceSpec]) -> Iterable[tuple[str, EventHandler]]:
        """(device id, handler) for the devices whose events it wants."""
        return ()

    def tick(self, now: float) -> list[RuleChange]:
        """Changes due by the passing of time alone (durations, silence, grace)."""
        return NO_CHANGES

    def restore(self, device: str, channel: int | None) -> bool:
        """An alarm of this rule was open and active before a restart: take its
        condition as active, so the next normal reading clears it. False if this
        kind has no lasting condition (momentary rules)."""
        return False


def json_safe(attrs: dict[str, object]) -> dict[str, object]:
    """Event attributes as plain JSON values (anything else becomes its str)."""
    return {str(k): _plain(v) for k, v in attrs.items()}


def _plain(value: object) -> object:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return json_safe(value)
    return str(value)


def numeric(value: object) -> float | None:
    """A number from an event attribute, or None (bools are not values)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None
