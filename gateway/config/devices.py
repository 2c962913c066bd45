"""Config models for buses and devices: a discriminated union on ``type``."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from gateway.config.base import Id, Location, Strict


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
    # Quiet time after each transaction; slow RS-485 adapters and some meters
    # (PZEM-004T among them) need more than the 3.5 characters of the spec.
    frame_gap: float = Field(default=0.01, ge=0, le=1)


Bus = Annotated[Union[ModbusTcpBus, ModbusRtuBus], Field(discriminator="type")]


class DeviceBase(Strict):
    """What every device has."""

    id: Id
    location: Location = Location()
    poll_interval: float = Field(default=1.0, gt=0, le=86400)
    # After this many failed polls in a row the device is declared offline.
    offline_after: int = Field(default=2, ge=1, le=100)


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


class SyntheticDevice(DeviceBase):
    """A generated source (random walks) for benchmarks and trials without hardware."""

    type: Literal["synthetic"]
    kind: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    fields: list[str] = Field(min_length=1)
    channels: int | None = Field(default=None, ge=1, le=256)


Device = Annotated[Union[ModbusDevice, SyntheticDevice], Field(discriminator="type")]
