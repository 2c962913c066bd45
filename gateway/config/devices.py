"""Config models for buses and devices: a discriminated union on ``type``."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from gateway.device_faults import FaultSource
from gateway.config.base import Id, Location, Secret, Strict


class ModbusTcpBus(Strict):
    """A Modbus TCP device or a TCP-to-RS-485 gateway."""

    type: Literal["modbus_tcp"]
    id: Id
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    timeout: float = Field(default=1.0, gt=0, le=60)
    retries: int = Field(default=1, ge=0, le=5)
    frame_gap: float = Field(default=0.0, ge=0, le=1)


class ModbusRtuBus(Strict):
    """An RS-485 line on a serial port."""

    type: Literal["modbus_rtu"]
    id: Id
    port: str
    baudrate: int = Field(default=9600, ge=1200, le=921600)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    timeout: float = Field(default=0.5, gt=0, le=60)
    retries: int = Field(default=1, ge=0, le=5)
    # Quiet time after each transaction. Default: the Modbus RTU frame delimiter
    # (3.5 character times; a fixed 1.75 ms above 19200 baud), the wire's limit.
    # Slow USB adapters and some meters need more: set it (e.g. 0.01 s).
    frame_gap: float | None = Field(default=None, ge=0, le=1)

    @property
    def char_seconds(self) -> float:
        """One character on the line: start bit, data bits, parity, stop bits."""
        bits = 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits
        return bits / self.baudrate

    @property
    def gap_seconds(self) -> float:
        """The quiet time after each transaction: configured, or 3.5 characters."""
        if self.frame_gap is not None:
            return self.frame_gap
        return 0.00175 if self.baudrate > 19200 else 3.5 * self.char_seconds


Bus = Annotated[Union[ModbusTcpBus, ModbusRtuBus], Field(discriminator="type")]


class AlarmZone(Strict):
    """One zone (an input of a DI module, a zone of an alarm panel): its name and place
    (a household, a fence segment between two gates)."""

    name: str = Field(min_length=1, max_length=64)
    location: Location = Location()


class DeviceBase(Strict):
    """What every device has."""

    id: Id
    location: Location = Location()
    poll_interval: float = Field(default=1.0, gt=0, le=86400)
    # After this many failed polls in a row the device is declared offline.
    offline_after: int = Field(default=2, ge=1, le=100)
    # Personal data (see gateway.runtime.privacy): do readings leave the gateway?
    upstream: Literal["all", "none", "pseudonymised"] | None = Field(
        default=None, description="what the upstream sinks get: all, none, or pseudonymised "
                                  "(default: none for health radars, all otherwise)")
    resident: str | None = Field(default=None, min_length=1, max_length=64,
                                 description="who the device watches, for the pseudonym "
                                             "(default: the device id); never sent")


class ModbusDevice(DeviceBase):
    """A Modbus device (or a cabinet of slaves) described by a register-map profile."""

    type: Literal["modbus"]
    bus: Id
    profile: str = Field(description="profile name (profiles/<name>.yaml) or path to a YAML file")
    kind: str | None = Field(default=None, description="overrides the profile's kind")
    channels: int | None = Field(default=None, ge=1, le=256,
                                 description="channel (port) count, overrides the profile")
    slave_base: int = Field(default=0, ge=0, le=246,
                            description="added to every slave id of the profile")
    zones: dict[int, AlarmZone] = Field(
        default_factory=dict, description="channel (input) -> its name and place, for alarms")
    faults: list[FaultSource] = Field(
        default=[], description="fault contacts as wired on this site (gateway.device_faults), "
                                "beside the profile's own")


class SyntheticDevice(DeviceBase):
    """A generated source (random walks) for benchmarks and trials without hardware."""

    type: Literal["synthetic"]
    kind: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    fields: list[str] = Field(min_length=1)
    channels: int | None = Field(default=None, ge=1, le=256)
    events: list[str] | None = Field(default=None,
                                     description="event names it may emit (put by a test or "
                                                 "benchmark); default: not declared")


class MqttBroker(Strict):
    """Where an MQTT device publishes, when not on the site's ``mqtt`` broker."""

    host: str
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: Secret | None = None


class MqttDevice(DeviceBase):
    """A device that publishes JSON over MQTT (access terminal, camera), mapped by a profile.

    ``source`` is the id the device uses on the wire (the topic level or payload
    field its profile names); default: the device id. ``broker`` defaults to the
    site's ``mqtt`` section.
    """

    type: Literal["mqtt"]
    profile: str = Field(description="profile name (profiles/<name>.yaml) or path to a YAML file")
    kind: str | None = Field(default=None, description="overrides the profile's kind")
    source: str | None = Field(default=None, pattern=r"^[^/+#\s]{1,128}$")
    channels: int | None = Field(default=None, ge=1, le=256,
                                 description="channel (door) count, overrides the profile")
    broker: MqttBroker | None = None
    silence_timeout: float | None = Field(
        default=None, gt=0, le=86400,
        description="offline after this many seconds without a message (default: never)")

    @property
    def wire_id(self) -> str:
        """The id the device uses in its topics or payloads."""
        return self.source or self.id


class RadarSetup(Strict):
    """Settings written to a radar each time its port opens, each confirmed by the radar."""

    fall_sensitivity: int | None = Field(default=None, ge=0, le=0xFFFF,
                                         description="MR60FDA1: 0..255 (83 0D); TinyFrame: 0E0A")
    mount_height: float | None = Field(default=None, ge=1.0, le=6.0,
                                       description="metres above the floor (TinyFrame radars)")
    fall_detection: bool | None = Field(default=None, description="fall detection on/off (MR60FDA1)")

    def values(self) -> dict[str, float]:
        """The settings given, as numbers (bools as 0/1)."""
        return {k: float(v) for k, v in self.model_dump(exclude_none=True).items()}


class SerialFramesDevice(DeviceBase):
    """A device streaming binary frames on a serial port: the UART fall-detection radars.

    ``poll_interval`` and ``offline_after`` do not apply: the radar talks by itself,
    and ``silence_timeout`` seconds without a good frame make it offline.
    """

    type: Literal["serial_frames"]
    port: str = Field(min_length=1, description="serial device, e.g. /dev/serial/by-id/...")
    baudrate: int = Field(default=115200, ge=1200, le=921600)
    codec: Literal["mr60fda1", "ld6002c", "mr60fda2", "mr60bha2"]
    kind: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,31}$",
                             description="default: fall_radar, or health_radar for mr60bha2")
    silence_timeout: float | None = Field(
        default=30.0, gt=0, le=86400,
        description="offline after this many seconds without a good frame (null: never)")
    quiet_gap: float = Field(default=0.05, gt=0, le=1,
                             description="idle line time that ends an unfinished frame")
    command_timeout: float = Field(default=1.0, gt=0, le=30)
    setup: RadarSetup = RadarSetup()


class AlarmHostDevice(DeviceBase):
    """An intrusion / emergency panel reporting to the gateway over TCP, the gateway
    being its SIA DC-09 receiver (Contact ID events, ``NULL`` heartbeats).

    Panels whose ``listen`` is the same share one listening socket and are told
    apart by ``account``. ``silence_timeout`` is the supervision: a panel whose
    heartbeats stop for that long is offline. ``zones`` name the panel's zones
    (zone number -> name and location), which alarms then carry.
    """

    type: Literal["alarm_host"]
    listen: str = Field(pattern=r"^[^\s:]+:[0-9]{1,5}$",
                        description="address:port the gateway receives on, e.g. 0.0.0.0:9000")
    account: str = Field(pattern=r"^[0-9A-Fa-f]{3,16}$",
                         description="the panel's account (3-16 hex digits); quote it in YAML")
    kind: str = Field(default="alarm_host", pattern=r"^[a-z][a-z0-9_]{0,31}$")
    silence_timeout: float | None = Field(
        default=300.0, gt=0, le=86400,
        description="offline after this many seconds without a frame or heartbeat (null: never)")
    time_window: tuple[float, float] | None = Field(
        default=None, description="[seconds behind, seconds ahead] a panel's time stamp may be; "
                                  "outside it the frame is NAKed with our time (null: not checked)")
    zones: dict[int, AlarmZone] = Field(default_factory=dict)

    @property
    def address(self) -> tuple[str, int]:
        """``listen`` as (host, port)."""
        host, _, port = self.listen.rpartition(":")
        return host, int(port)


Device = Annotated[Union[ModbusDevice, SyntheticDevice, MqttDevice, SerialFramesDevice,
                         AlarmHostDevice],
                   Field(discriminator="type")]
