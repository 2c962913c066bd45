"""The ``fire_centre:`` section: the city fire remote-monitoring centre (GB/T 26875.3).

Kept apart from ``models.py`` so the section and its checks against the site's
devices and rules live in one place; the protocol code itself is only imported when
a site configures the section.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from gateway.config.base import Id, Strict

ADDRESS_MAX = (1 << 48) - 1
# Mirrors drivers.gb26875 (kept here so `check` does not import it).
STATE_NAMES = ("fire_alarm", "fault", "shielded", "supervisory", "started", "feedback",
               "delayed", "power_fault")
ANALOG_NAMES = ("event_count", "height", "temperature", "pressure_mpa", "pressure_kpa", "gas",
                "time", "voltage", "current", "flow", "air_volume", "wind_speed")
# Alarms the gateway raises itself (not from a configured rule) that a component may map.
BUILT_IN_ALARMS = ("device_offline", "actuation_failed")


class AnalogMapping(Strict):
    """A reading sent as the component's analog value (type 3), at most every ``interval``."""

    field: str
    type: Literal["event_count", "height", "temperature", "pressure_mpa", "pressure_kpa",
                  "gas", "time", "voltage", "current", "flow", "air_volume", "wind_speed"]
    interval: float = Field(default=60.0, gt=0, description="seconds between values sent")


class FireComponent(Strict):
    """One fire-facility component (部件) the centre knows: which device (and port) it is,
    its codes and addresses, and which alarms set which state bit."""

    device: Id
    channel: int | None = Field(default=None, ge=1, description="port/door; default: the device")
    system_type: int = Field(default=1, ge=0, le=255, description="1 = fire alarm system")
    system_address: int = Field(default=1, ge=0, le=255)
    component_type: int = Field(ge=0, le=255, description="e.g. 40 smoke detector, 30 heat "
                                                         "detector, 121 alarm device")
    component_address: int = Field(ge=0, le=0xFFFFFFFF)
    description: str = Field(description="shown at the centre; at most 31 bytes in GB18030 "
                                          "(15 Chinese characters)")
    alarms: dict[str, Literal["fire_alarm", "fault", "shielded", "supervisory", "started",
                              "feedback", "delayed", "power_fault"]] = Field(
        default_factory=dict, description="alarm rule id -> state bit, e.g. {smoke: fire_alarm, "
                                          "device_offline: fault}")
    analog: AnalogMapping | None = None

    @field_validator("description")
    @classmethod
    def _fits_31_bytes(cls, value: str) -> str:
        try:
            size = len(value.encode("gb18030"))
        except UnicodeEncodeError as exc:
            raise ValueError(f"not encodable in GB18030: {exc}") from None
        if size > 31:
            raise ValueError(f"{size} bytes in GB18030; the protocol allows 31")
        return value

    @model_validator(mode="after")
    def _reports_something(self) -> "FireComponent":
        if not self.alarms and self.analog is None:
            raise ValueError("give 'alarms' (rule id -> state bit) or 'analog', or both")
        return self


class FireCentreConfig(Strict):
    """The centre's address and the codes it assigned; the link's timing.

    Defaults follow the standard: confirm within 10 s, 3 resends, heartbeat every
    20-30 s. Tests shorten them.
    """

    host: str
    port: int = Field(ge=1, le=65535)
    source_address: int = Field(ge=0, le=ADDRESS_MAX, description="this device's address, "
                                                                  "assigned by the centre")
    destination_address: int = Field(default=0, ge=0, le=ADDRESS_MAX,
                                     description="the centre's address")
    utc_offset_hours: float = Field(default=8.0, ge=-12, le=14,
                                    description="time tags are local time (China: 8)")
    heartbeat_interval: float = Field(default=25.0, gt=0, le=600)
    confirm_timeout: float = Field(default=10.0, gt=0, le=60)
    retries: int = Field(default=3, ge=0, le=20, description="resends of an unconfirmed frame "
                                                             "before the link is reopened")
    reconnect_interval: float = Field(default=1.0, gt=0, le=60, description="first retry delay")
    # GB 26875.1 wants a fire alarm at the centre within 10 s, and the usual practice is a
    # 5 s rhythm while the link is in trouble: retry at least that often.
    reconnect_max: float = Field(default=5.0, gt=0, le=3600, description="longest retry delay")
    allow_set_time: bool = Field(default=False, description="confirm the centre's time sync "
                                                            "(logged; NTP keeps the clock)")
    operators: dict[str, int] = Field(default_factory=dict,
                                      description="operator name -> the centre's operator number")
    components: list[FireComponent] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_addresses(self) -> "FireCentreConfig":
        seen: dict[tuple[int, int, int], int] = {}
        for i, c in enumerate(self.components):
            key = (c.system_type, c.system_address, c.component_address)
            if key in seen:
                raise ValueError(f"components[{i}] has the same system and component address "
                                 f"as components[{seen[key]}]")
            seen[key] = i
        return self


def check_fire_centre(config: Any, devices: dict[str, Any]) -> list[tuple[str, str]]:
    """Problems of ``fire_centre`` against the site: devices, ports, fields and rules exist."""
    fc = config.fire_centre
    if fc is None:
        return []
    rules = {r.id for r in config.rules}
    problems: list[tuple[str, str]] = []
    for i, c in enumerate(fc.components):
        where = f"fire_centre.components[{i}]"
        spec = devices.get(c.device)
        if spec is None:
            problems.append((f"{where}.device", f"no device with id {c.device!r}"))
            continue
        if c.channel is not None and c.channel > spec.channel_count:
            problems.append((f"{where}.channel", f"{c.device} has {spec.channel_count} "
                                                 f"{spec.channel_name}s"))
        for rule in c.alarms:
            if rule not in rules and rule not in BUILT_IN_ALARMS:
                problems.append((f"{where}.alarms.{rule}",
                                 f"no rule with id {rule!r}; rules: {sorted(rules)}, built in: "
                                 f"{list(BUILT_IN_ALARMS)}"))
        if c.analog is not None and c.analog.field not in spec.fields:
            problems.append((f"{where}.analog.field", f"{c.device} has no field "
                                                      f"{c.analog.field!r}; fields: {sorted(spec.fields)}"))
    return problems
