"""The MQTT device profile: how one kind of device's JSON messages map to readings and events.

Validated once, when the config is loaded (pydantic at the edge); ``compile_profile``
in ``drivers.mqtt.mapping`` then turns it into plain tuples that are walked per
message. A payload path is dot-separated keys; a numeric segment indexes a list
(``floor_est.0``). Keys that themselves contain dots cannot be addressed.

Example (``configs/profiles/access-terminal.yaml``)::

    kind: door_access
    topic: access/+/events            # subscription filter, MQTT wildcards
    device_id: {topic_segment: 1}     # which '+' carries the device's id (or {path: ...})
    timestamp: time                   # ISO 8601 or epoch s/ms; arrival time when absent
    channels: {name: door, count: 1, path: door}
    fields:
      uptime: {path: uptime}
    events:
      path: code
      codes:
        1: {event: granted, attrs: {method: card}}
        6: {event: denied, attrs: {reason: no_permission}}
      attrs: {card: card_no, person: person_id}
    pseudonymise: [card, person]
    max_payload: 65536                # bytes; larger messages are skipped unread (default)
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.device_faults import FaultSource

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
Path = Annotated[str, Field(pattern=r"^[^.\s]+(\.[^.\s]+)*$", max_length=200)]
Scalar = Union[str, int, float, bool]

# Bytes of the largest message a device's profile lets through to the JSON parser
# by default. An access event or a camera's throw is well under 1 KiB; the cap
# keeps a broken or hostile device from making every message a megabyte of
# parsing on a small gateway.
MAX_PAYLOAD = 64 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceIdFrom(_Strict):
    """Where a message names its device: a '+' level of the topic, or a payload path.

    Without it, every message on the topic belongs to the one configured device.
    """

    topic_segment: int | None = Field(default=None, ge=0, le=31)
    path: Path | None = None

    @model_validator(mode="after")
    def _one(self) -> "DeviceIdFrom":
        if (self.topic_segment is None) == (self.path is None):
            raise ValueError("give exactly one of 'topic_segment' (index of a '+' level) or 'path'")
        return self


class ChannelsFrom(_Strict):
    """Messages about one of several sub-units (doors of a terminal): its number's path."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")] = "channel"
    count: int = Field(default=1, ge=1, le=256)
    path: Path


class FieldMap(_Strict):
    """A numeric reading field: a payload path, and optionally a text-to-number table."""

    path: Path
    map: dict[str, float] | None = Field(
        default=None, description="text values to numbers, e.g. {open: 1, closed: 0}")
    scale: float = 1.0


class CodeEntry(_Strict):
    """What one event code means: the event's name plus constant attributes."""

    event: Name
    attrs: dict[Name, Scalar] = {}


class EventMap(_Strict):
    """Events: a payload path holding a code (or name), and a table from code to event.

    ``path`` may list several paths when a code is built from several payload fields,
    as Hikvision ISAPI terminals send ``major`` and ``minor``: the code is then their
    values joined by ``:`` (``path: [AccessControllerEvent.major, AccessControllerEvent.minor]``
    with ``codes: {"5:75": granted}``).
    """

    path: Path | list[Path] = Field(description="payload path of the code, or paths whose "
                                                "values make it, joined by ':'")
    codes: dict[str, CodeEntry]
    attrs: dict[Name, Path | list[Path]] = Field(
        default={}, description="attribute name -> payload path (or paths, first present wins)")
    required: list[Name] = Field(default=[], description="attrs whose absence is counted")
    code_attr: Name | None = Field(default="code", description="attr that keeps the raw code "
                                                                "(null: not kept)")
    once_per: Path | None = Field(
        default=None, description="payload path of an event id: later messages with an id "
                                  "already seen (a stop pulse, a redelivery) are dropped")
    no_event: list[str] = Field(
        default=[], description="codes that are no event (a heartbeat): the message's fields "
                                "are taken, nothing is raised or counted as unknown")

    @field_validator("codes", mode="before")
    @classmethod
    def _normalise_codes(cls, codes: object) -> object:
        # YAML gives int keys for numeric codes and the payload may carry 1 or "1":
        # both are looked up by their text. A bare name is short for {event: name}.
        if not isinstance(codes, dict):
            return codes
        return {str(k): ({"event": v} if isinstance(v, str) else v) for k, v in codes.items()}

    @model_validator(mode="after")
    def _coherent(self) -> "EventMap":
        if not self.codes:
            raise ValueError("'codes' needs at least one code")
        if isinstance(self.path, list):
            if len(self.path) < 2:
                raise ValueError("'path' as a list needs two or more paths (or give one path)")
            parts = len(self.path)
            for code in self.codes:
                if len(code.split(":")) != parts:
                    raise ValueError(f"code {code!r} must have {parts} parts joined by ':' "
                                     f"(one per path), e.g. '5:75'")
        for name in self.required:
            if name not in self.attrs:
                raise ValueError(f"required attr {name!r} is not in 'attrs'")
        return self


class MqttProfile(_Strict):
    """A device profile file for ``type: mqtt`` devices."""

    kind: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
    description: str | None = None
    topic: str = Field(min_length=1, max_length=200, description="subscription filter")
    device_id: DeviceIdFrom | None = None
    timestamp: Path | None = Field(default=None, description="payload path of the event time")
    channels: ChannelsFrom | None = None
    max_payload: int = Field(
        default=MAX_PAYLOAD, ge=64, le=16 * 1024 * 1024,
        description="largest message in bytes that is parsed; a larger one is counted "
                    "(too_large) and skipped unread")
    fields: dict[Name, FieldMap] = {}
    events: EventMap | None = None
    pseudonymise: list[Name] = Field(
        default=[], description="event attrs replaced by a keyed hash before leaving the gateway")
    faults: list[FaultSource] = Field(default=[], description="the device's own faults "
                                                              "(gateway.device_faults)")

    @field_validator("fields", mode="before")
    @classmethod
    def _short_fields(cls, fields: object) -> object:
        if isinstance(fields, dict):  # `uptime: uptime` is short for `uptime: {path: uptime}`
            return {k: ({"path": v} if isinstance(v, str) else v) for k, v in fields.items()}
        return fields

    @model_validator(mode="after")
    def _coherent(self) -> "MqttProfile":
        levels = self.topic.split("/")
        for i, level in enumerate(levels):
            if ("#" in level and (level != "#" or i != len(levels) - 1)) or ("+" in level and level != "+"):
                raise ValueError(f"topic {self.topic!r}: '+' must be a whole level and '#' the last one")
        if self.device_id is not None and self.device_id.topic_segment is not None:
            seg = self.device_id.topic_segment
            if seg >= len(levels) or levels[seg] != "+":
                raise ValueError(f"device_id.topic_segment {seg} must point at a '+' level of "
                                 f"topic {self.topic!r}")
        if not self.fields and self.events is None:
            raise ValueError("a profile needs 'fields' or 'events'")
        attrs = set(self.events.attrs) if self.events else set()
        for name in self.pseudonymise:
            if name not in attrs:
                raise ValueError(f"pseudonymise: {name!r} is not an event attr; attrs: {sorted(attrs)}")
        return self

    @property
    def event_names(self) -> frozenset[str]:
        """Every event name the code table can produce."""
        return frozenset(c.event for c in self.events.codes.values()) if self.events else frozenset()


def check_device(device, profile: MqttProfile, site) -> list[tuple[str, str]]:
    """Problems of one ``type: mqtt`` device against its profile and the site config,
    as (key under the device, what is expected) pairs.

    ``device`` is a ``gateway.config.devices.MqttDevice``; ``site`` the whole
    ``GatewayConfig`` (or None when not known).
    """
    problems = []
    if device.channels is not None and profile.channels is None:
        problems.append(("channels", f"profile {device.profile!r} has no channels"))
    if device.broker is None and site is not None and site.mqtt is None:
        problems.append(("broker", "no broker: give 'broker: {host: ..., port: ...}' or a site "
                                   "'mqtt' section"))
    if profile.pseudonymise and site is not None and getattr(site, "privacy", None) is None:
        problems.append(("profile", f"profile {device.profile!r} pseudonymises "
                                    f"{profile.pseudonymise}: the site needs "
                                    "'privacy: {key: {env: NAME} or {file: PATH}}'"))
    return problems
