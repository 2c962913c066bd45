"""The running gateway seen through ``gateway.views``: its alarms, devices and digest."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from gateway.alarms.commands import apply_command
from gateway.alarms.digest import DeviceDigest
from gateway.alarms.manager import AlarmManager, Transition
from gateway.alarms.store import AlarmStore

if TYPE_CHECKING:
    from gateway.alarms.alarm import Alarm
    from gateway.config.loader import DeviceSpec
    from gateway.device_health import DeviceHealth
    from gateway.readings import Reading


class SiteAlarms:
    """One site's alarm manager and its state file, as an ``AlarmsView``."""

    def __init__(self, manager: AlarmManager, store: AlarmStore):
        self._manager = manager
        self._store = store

    @property
    def max_shelve(self) -> float:
        return self._manager.max_shelve

    def open_alarms(self) -> list[Alarm]:
        return self._manager.open_alarms()

    def recently_closed(self) -> list[dict[str, object]]:
        return self._manager.recently_closed()

    async def history(self, *, alarm_id: str | None = None,
                      limit: int = 100) -> list[dict[str, object]]:
        return await self._store.history(alarm_id=alarm_id, limit=limit)

    def apply_command(self, alarm_id: str, command: str,
                      body: bytes | str | dict | None) -> Alarm:
        return apply_command(self._manager, alarm_id, command, body)

    def add_listener(self, listener: Callable[[Transition], None]) -> None:
        self._manager.add_listener(listener)


class SiteDevices:
    """One site's devices as a ``DevicesView``: read from the parts that own the data,
    through functions, so a reload's new specs and runners are seen at once."""

    def __init__(self, *, specs: Callable[[], Mapping[str, DeviceSpec]],
                 health: Callable[[], Mapping[str, DeviceHealth]],
                 latest: Callable[[], Mapping[tuple[str, int | None], Reading]]):
        self.specs = specs
        self.health = health
        self.latest = latest


class SiteDigest:
    """One site's daily device digest as a ``DigestView``."""

    def __init__(self, digest: DeviceDigest):
        self._digest = digest

    def report(self) -> dict[str, object]:
        return {"latest": self._digest.latest, "since": self._digest.build(new_day=False)}
