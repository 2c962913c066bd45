"""The seams between the running gateway and what shows it or counts it.

The HTTP API and the security-room console see alarms and devices only through
``AlarmsView`` and ``DevicesView`` (zones and the device digest through ``ZonesView``
and ``DigestView``, where the process has them) (with a clock and the site's identity, bundled
in ``Views``); metrics and liveness read ``RunningParts``. The gateway process
implements them (``gateway.runtime.views``); a process showing many sites' alarms
(the hub) can serve the same console by implementing them for its sites.
Nothing here imports the runtime, so neither does anything that uses these.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gateway.alarms.alarm import Alarm
    from gateway.alarms.manager import Transition
    from gateway.clock import Clock
    from gateway.config.loader import DeviceSpec, Site
    from gateway.config.models import ConsoleConfig, HttpConfig, SiteInfo
    from gateway.device_health import DeviceHealth
    from gateway.readings import Reading


class AlarmsView(Protocol):
    """Open alarms, their history, and the operators' commands on them."""

    @property
    def max_shelve(self) -> float:
        """The longest an alarm may be shelved, in seconds."""
        ...

    def open_alarms(self) -> list[Alarm]:
        """Open alarms, most severe first, then newest."""
        ...

    def recently_closed(self) -> list[dict[str, object]]:
        """The JSON of the alarms closed lately, newest first."""
        ...

    async def history(self, *, alarm_id: str | None = None,
                      limit: int = 100) -> list[dict[str, object]]:
        """Stored transitions, newest first: of one alarm, or of every alarm."""
        ...

    def apply_command(self, alarm_id: str, command: str,
                      body: bytes | str | dict | None) -> Alarm:
        """Validate and apply an operator's command (gateway.alarms.commands); the alarm
        afterwards, or CommandError."""
        ...

    def add_listener(self, listener: Callable[[Transition], None]) -> None:
        """Call ``listener`` with every transition from now on."""
        ...


class DevicesView(Protocol):
    """The configured devices, how each is doing and what each read last."""

    def specs(self) -> Mapping[str, DeviceSpec]:
        """Every configured device by id (changes with a config reload)."""
        ...

    def health(self) -> Mapping[str, DeviceHealth]:
        """The health of each running device, by id."""
        ...

    def latest(self) -> Mapping[tuple[str, int | None], Reading]:
        """The latest reading per device and channel."""
        ...


class ZonesView(Protocol):
    """Arming groups, bypassed inputs and devices out of service (gateway.alarms.protection),
    and the operators' changes to them; each change is logged with who and why."""

    def snapshot(self) -> dict[str, object]:
        """``{"groups": [...], "bypassed": [...], "out_of_service": [...]}`` as they are now."""
        ...

    def set_armed(self, group: str, armed: bool, *, by: str, note: str,
                  until: float | None = None) -> object:
        """Arm or disarm a group by hand (KeyError: no such group)."""
        ...

    def bypass(self, device: str, channel: int, *, by: str, note: str, until: float) -> object:
        """Hold back every alarm of one input until ``until``."""
        ...

    def end_bypass(self, device: str, channel: int, *, by: str) -> bool:
        """End a bypass now; False if the input was not bypassed."""
        ...

    def take_out_of_service(self, device: str, *, by: str, note: str, until: float) -> object:
        """Hold back every alarm of a device until ``until``."""
        ...

    def return_to_service(self, device: str, *, by: str) -> bool:
        """End a device's out-of-service now; False if it was in service."""
        ...


class DigestView(Protocol):
    """The daily digest of devices that were offline or faulty (gateway.alarms.digest)."""

    def report(self) -> dict[str, object]:
        """``{"latest": the last digest or None, "since": the one building up since}``."""
        ...


class DisplayHints(Protocol):
    """How the console words the site: its header, alarm values worth showing, units."""

    def title(self) -> dict[str, Any]:
        """``{"title": compound name, "buildings": [...]}``."""
        ...

    def values(self) -> dict[str, dict[str, Any]]:
        """Rule id -> ``{"field", "unit"}`` for rules whose alarm value means something."""
        ...

    def units(self, spec: DeviceSpec) -> dict[str, str]:
        """A device's field units, where its profile gives them."""
        ...


class CommandOutcome(Exception):
    """A command that was not done, as a console shows it: ``state`` is "not_delivered"
    (no confirmation in time) or "refused" (the gateway said why); ``status`` as in HTTP."""

    state = "failed"
    status = 502


class ManySites(Protocol):
    """What a console showing many sites (the hub) adds: its identity for the page and
    the fleet by level. Alarm and device rows then carry ``site``, ``subdistrict``,
    ``community``, ``compound`` and ``building``, and each user's scope (users file)
    limits every read, stream and command to the rows it covers."""

    def me(self) -> dict[str, Any]:
        """``{"hub": True, "levels": [...], ...}`` for ``/console/api/me``."""
        ...

    def fleet(self, covers: Callable[[dict[str, Any]], bool] | None) -> dict[str, Any]:
        """subdistricts -> communities -> compounds -> gateways, limited to the places
        ``covers`` accepts (None: all)."""
        ...


@dataclass(frozen=True)
class Views:
    """What the HTTP API and the console read and do, and nothing more."""

    site: SiteInfo  # the site's id, name and language
    config_dir: Path  # relative paths in the site's file (users, sessions) start here
    console: ConsoleConfig | None
    alarms: AlarmsView
    devices: DevicesView
    clock: Clock
    http: HttpConfig | None = None  # the listener: read policy, trusted proxies, stream cap
    display: DisplayHints | None = None  # the console's header, alarm values, units
    zones: ZonesView | None = None  # arming groups, bypasses, out of service (console "Zones")
    digest: DigestView | None = None  # the daily device digest (console "Digest")
    hub: ManySites | None = None  # set by the hub: many sites, users with a scope


class RunningParts(Protocol):
    """What ``/metrics``, ``/healthz``, the watchdog and the status line read: each running
    part's own counters, looked at when asked (nothing on the hot path updates a metric).

    ``gateway.runtime.app.Gateway`` is one; each attribute is a part with the plain
    counters named in gateway.operations.metrics' docstring.
    """

    site: Site
    runners: list[Any]  # DeviceRunner | StreamRunner: device_id, health
    device_tasks: Mapping[str, Any]  # asyncio.Task per device id
    drivers: Mapping[str, Any]  # optional counters(), failing_slaves
    buses: Mapping[str, Any]  # requests
    pipeline: Any  # queue, queue_full, readings, events, failed
    actions: Any  # done, failed
    sinks: list[Any]  # SinkRunner: name, stats()
    outbox: Any  # stats(), or None without sinks
    mqtt: Any  # MqttLink or None: connected, pending, published, ...
    alarms: Any  # AlarmManager: open_alarms(), transitions
    reloads: Mapping[str, int]  # applied, refused, failed
