"""Modbus register maps: the profile model, its expansion per channel, and decoding.

A profile describes one kind of device (or a cabinet of several slaves on one bus):
device-wide ``fields`` and per-channel ``channels.fields`` repeated for channel
1..count, each copy shifted by ``slave_stride`` / ``address_stride``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.device_faults import FaultSource

Table = Literal["coil", "discrete", "holding", "input"]
ValueType = Literal["bool", "bit", "u16", "i16", "u32", "i32", "f32"]
Order = Literal["big", "little"]

BIT_TABLES = ("coil", "discrete")
REGISTER_COUNT = {"bool": 1, "bit": 1, "u16": 1, "i16": 1, "u32": 2, "i32": 2, "f32": 2}
_STRUCT = {"u16": ">H", "i16": ">h", "u32": ">I", "i32": ">i", "f32": ">f"}
# Modbus limits per request (spec: 125 registers, 2000 bits).
MAX_REGISTERS = 125
MAX_BITS = 2000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegisterField(_Strict):
    """One value in the register map."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")
    table: Table
    address: int = Field(ge=0, le=65535)
    type: ValueType = "u16"
    bit: int | None = Field(default=None, ge=0, le=15)
    word_order: Order = "big"
    byte_order: Order = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    slave: int = Field(default=1, ge=0, le=247)
    slave_stride: int = Field(default=0, ge=0, le=247)
    address_stride: int = Field(default=0, ge=0, le=1000)
    writable: bool = False

    @model_validator(mode="after")
    def _coherent(self) -> "RegisterField":
        in_bits = self.table in BIT_TABLES
        if in_bits and self.type != "bool":
            raise ValueError(f"a {self.table} holds single bits: type must be 'bool', not '{self.type}'")
        if not in_bits and self.type == "bool":
            raise ValueError(f"{self.table} registers are 16-bit: use type 'bit' with 'bit: N' for one bit")
        if (self.type == "bit") != (self.bit is not None):
            raise ValueError("'bit: N' goes with type 'bit' and only with it")
        if REGISTER_COUNT[self.type] < 2 and self.word_order != "big":
            raise ValueError(f"word_order needs a 32-bit type; '{self.type}' is one register")
        if self.writable and self.table not in ("coil", "holding"):
            raise ValueError(f"only coils and holding registers can be written, not {self.table}")
        if self.scale == 0:
            raise ValueError("scale 0 makes every reading the offset; the value cannot be written")
        if self.writable and self.type == "bit":
            raise ValueError("a single bit of a holding register cannot be written safely; map a coil")
        return self


class ChannelGroup(_Strict):
    """Fields repeated for each channel (charging port, door) of a device."""

    name: str = Field(default="port", pattern=r"^[a-z][a-z0-9_]{0,31}$")
    count: int = Field(ge=1, le=256)
    fields: list[RegisterField] = Field(min_length=1)


class RequestLimits(_Strict):
    """How adjacent fields are merged into one request."""

    max_gap: int = Field(default=8, ge=0, le=100)
    max_registers: int = Field(default=MAX_REGISTERS, ge=1, le=MAX_REGISTERS)
    max_bits: int = Field(default=MAX_BITS, ge=1, le=MAX_BITS)


class ModbusProfile(_Strict):
    """A device profile file: what a kind of device holds and where."""

    kind: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    description: str | None = None
    fields: list[RegisterField] = []
    channels: ChannelGroup | None = None
    requests: RequestLimits = RequestLimits()
    faults: list[FaultSource] = Field(default=[], description="the device's own faults "
                                                              "(gateway.device_faults)")

    @model_validator(mode="after")
    def _has_fields(self) -> "ModbusProfile":
        if not self.fields and self.channels is None:
            raise ValueError("a profile needs 'fields' or 'channels'")
        return self


@dataclass(slots=True, frozen=True)
class Point:
    """A register field placed on one slave and address, for one channel (or None)."""

    name: str
    channel: int | None
    slave: int
    table: str
    address: int
    type: str
    bit: int | None
    word_order: str
    byte_order: str
    scale: float
    offset: float
    writable: bool

    @property
    def width(self) -> int:
        """Registers (or bits) the point occupies."""
        return REGISTER_COUNT[self.type]


def expand(profile: ModbusProfile, channels: int | None = None, slave_base: int = 0) -> list[Point]:
    """Every concrete point of a device: device-wide fields, then each channel's."""
    points = [_place(f, None, slave_base) for f in profile.fields]
    if profile.channels is not None:
        count = channels if channels is not None else profile.channels.count
        for ch in range(1, count + 1):
            points += [_place(f, ch, slave_base) for f in profile.channels.fields]
    return points


def _place(f: RegisterField, channel: int | None, slave_base: int) -> Point:
    k = 0 if channel is None else channel - 1
    return Point(
        name=f.name, channel=channel, slave=slave_base + f.slave + k * f.slave_stride,
        table=f.table, address=f.address + k * f.address_stride, type=f.type, bit=f.bit,
        word_order=f.word_order, byte_order=f.byte_order, scale=f.scale, offset=f.offset,
        writable=f.writable,
    )


def overlaps(points: list[Point]) -> list[tuple[Point, Point]]:
    """Pairs of points that claim the same register (or bit) on the same slave."""
    clashes = []
    by_block: dict[tuple[int, str], list[Point]] = {}
    for p in points:
        by_block.setdefault((p.slave, p.table), []).append(p)
    for block in by_block.values():
        block.sort(key=lambda p: p.address)
        for a, b in zip(block, block[1:]):
            same_register_bits = a.type == b.type == "bit" and a.address == b.address and a.bit != b.bit
            if b.address < a.address + a.width and not same_register_bits:
                clashes.append((a, b))
    return clashes


def decode(point: Point, words: list[int] | list[bool], at: int) -> float:
    """The point's engineering value from a response, starting at index ``at``."""
    t = point.type
    if t == "bool":
        raw: float = 1.0 if words[at] else 0.0
    elif t == "bit":
        raw = float((words[at] >> point.bit) & 1)  # type: ignore[operator]
    elif t == "u16":
        raw = words[at]
        if point.byte_order == "little":
            raw = ((raw & 0xFF) << 8) | (raw >> 8)
    else:
        pair = list(words[at:at + point.width])
        if t == "i16":
            pair = pair[:1]
        if point.word_order == "little":
            pair.reverse()
        if point.byte_order == "little":
            pair = [((w & 0xFF) << 8) | (w >> 8) for w in pair]
        raw = struct.unpack(_STRUCT[t], b"".join(w.to_bytes(2, "big") for w in pair))[0]
    return raw * point.scale + point.offset


def encode(point: Point, value: float) -> list[int] | bool:
    """Registers (or a coil state) that make the point read back as ``value``."""
    if point.table == "coil":
        return bool(value)
    raw = (value - point.offset) / point.scale
    t = point.type
    if t == "f32":
        data = struct.pack(">f", raw)
    else:
        data = struct.pack(_STRUCT[t], int(round(raw)))
    words = [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]
    if point.byte_order == "little":
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    if point.word_order == "little":
        words.reverse()
    return words
