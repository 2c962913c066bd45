"""GB/T 26875.3-2011 frames and information objects: bytes in, bytes out, no I/O.

A frame (数据包) is::

    '@@' | control unit (25 bytes) | application data unit (0..1024) | checksum | '##'

control unit: sequence number (2, little-endian), protocol version (major, minor),
time tag (6: second, minute, hour, day, month, year - 2000), source address
(6, little-endian), destination address (6, little-endian), application data
length (2, little-endian), command (1). The checksum is the sum of the control
unit and the application data unit, modulo 256 (start bytes excluded). An
application data unit is a type flag (1), an object count (1) and the objects;
a heartbeat is a ``send`` with an empty data unit.

Every field here was checked against two independent open implementations and
the worked examples that circulate with the standard:

- shootingfans/codec_gb26875_3_2011 (Go): ``codec/codec.go`` (frame layout, LE
  sequence/addresses/length, version major then minor, checksum over bytes 2..),
  ``codec/codec_test.go`` ``TestDecodeAppData`` (object layouts, component address
  LE u32, state LE u16, 31-byte GB18030 description, time tag order) and
  ``codec/reader_decoder_test.go`` (a whole captured frame), ``constant/`` (commands
  1..6, state and operation bits, analog types 1..12);
- ActorLancer/GB-T-26875.3.2011-rs (Rust): ``src/frame/header.rs`` (25-byte
  control unit), ``src/frame/checksum.rs``, ``src/frame/timestamp.rs``,
  ``src/info_object/component_status.rs`` and ``GB26875文档.md``, whose example
  frames (a smoke detector's fire alarm, a main-power fault of the transmission
  device, its software version, its time, the centre's "read state" request and
  the confirms) are the byte-exact cases of ``tests/test_fire_centre_codec.py``;
- chengming0916/GB26875 (C#) for the type-flag and component-type tables.

Time tags are local wall time at the site (the Go codec reads them with
``time.Local``); ``utc_offset`` says which (China: +8 h, no daylight saving).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import IntEnum

START = b"@@"
END = b"##"
CONTROL_UNIT_SIZE = 25
MAX_DATA = 1024  # the standard's limit on the application data unit
FRAME_OVERHEAD = 2 + CONTROL_UNIT_SIZE + 1 + 2
DESCRIPTION_SIZE = 31
ADDRESS_MAX = (1 << 48) - 1
PROTOCOL_VERSION = (1, 1)  # major is fixed at 1; "user version" 1 as in every example
CHINA_UTC_OFFSET = 8 * 3600.0


class Command(IntEnum):
    """The control unit's command byte."""

    CONTROL = 1   # 控制命令 (the centre: set time, initialise, inspection)
    SEND = 2      # 发送数据 (the device: states, alarms; empty = heartbeat)
    CONFIRM = 3   # 确认
    REQUEST = 4   # 请求 (the centre: read state, version, time)
    RESPONSE = 5  # 应答
    DENY = 6      # 否认


class TypeFlag(IntEnum):
    """The application data unit's type flag (数据单元类型标志)."""

    SYSTEM_STATE = 1
    COMPONENT_STATE = 2
    COMPONENT_ANALOG = 3
    OPERATION = 4
    SYSTEM_VERSION = 5
    SYSTEM_TIME = 8
    DEVICE_STATE = 21
    DEVICE_OPERATION = 24
    DEVICE_VERSION = 25
    DEVICE_TIME = 28
    READ_SYSTEM_STATE = 61
    READ_COMPONENT_STATE = 62
    READ_COMPONENT_ANALOG = 63
    READ_SYSTEM_TIME = 68
    READ_DEVICE_STATE = 81
    READ_DEVICE_OPERATIONS = 84
    READ_DEVICE_VERSION = 85
    READ_DEVICE_CONFIG = 86
    READ_DEVICE_TIME = 88
    INITIALISE_DEVICE = 89
    SET_DEVICE_TIME = 90
    INSPECTION = 91  # 查岗


# Component (部件) and system state bits, low byte first on the wire.
STATE_BITS = {"normal": 0, "fire_alarm": 1, "fault": 2, "shielded": 3, "supervisory": 4,
              "started": 5, "feedback": 6, "delayed": 7, "power_fault": 8}
# The system state word adds these (建筑消防设施系统状态).
SYSTEM_STATE_BITS = {**STATE_BITS, "backup_power_fault": 9, "bus_fault": 10, "manual": 11,
                     "config_changed": 12, "reset": 13}
# The transmission device's own running state (1 byte).
DEVICE_STATE_BITS = {"normal": 0, "fire_alarm": 1, "fault": 2, "main_power_fault": 3,
                     "backup_power_fault": 4, "centre_link_fault": 5, "line_fault": 6}
OPERATION_BITS = {"reset": 0, "silence": 1, "manual_alarm": 2, "alarm_cleared": 3,
                  "self_test": 4, "confirm": 5, "test": 6}  # device ops: bit 5 = inspection answer
# Analog value types: (code, unit, resolution of one count).
ANALOG_TYPES = {"event_count": (1, "", 1.0), "height": (2, "m", 0.01),
                "temperature": (3, "°C", 0.1), "pressure_mpa": (4, "MPa", 0.1),
                "pressure_kpa": (5, "kPa", 0.1), "gas": (6, "%LEL", 0.1), "time": (7, "s", 1.0),
                "voltage": (8, "V", 0.1), "current": (9, "A", 0.1), "flow": (10, "L/s", 0.1),
                "air_volume": (11, "m3/min", 0.1), "wind_speed": (12, "m/s", 1.0)}


class FrameError(ValueError):
    """Bytes that are not a valid frame or data unit; ``reason`` says which check failed."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


# -- time tags --------------------------------------------------------------------------


def time_tag(ts: float, utc_offset: float = CHINA_UTC_OFFSET) -> bytes:
    """The 6-byte time tag of ``ts`` (seconds since the epoch) in local time at ``utc_offset``."""
    t = datetime.fromtimestamp(int(ts), timezone(timedelta(seconds=utc_offset)))
    if not 2000 <= t.year <= 2255:
        raise ValueError(f"year {t.year} does not fit a time tag")
    return bytes((t.second, t.minute, t.hour, t.day, t.month, t.year - 2000))


def tag_time(tag: bytes, utc_offset: float = CHINA_UTC_OFFSET) -> float:
    """Seconds since the epoch of a 6-byte time tag; FrameError if it is no date."""
    if len(tag) != 6:
        raise FrameError("bad_time", f"{len(tag)} bytes")
    second, minute, hour, day, month, year = tag
    try:
        t = datetime(2000 + year, month, day, hour, minute, second,
                     tzinfo=timezone(timedelta(seconds=utc_offset)))
    except ValueError as exc:
        raise FrameError("bad_time", f"{tag.hex(' ')}: {exc}") from None
    return t.timestamp()


def tag_text(tag: bytes) -> str:
    """A time tag as ``YYYY-MM-DD hh:mm:ss`` (as sent, local time), or its hex if no date."""
    if len(tag) == 6:
        s, mi, h, d, mo, y = tag
        return f"{2000 + y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}"
    return tag.hex(" ")


# -- frames -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame; ``data`` is the application data unit (empty for confirms and heartbeats)."""

    seq: int
    command: int
    source: int
    destination: int
    time: bytes  # the 6-byte time tag, as sent
    data: bytes = b""
    version: tuple[int, int] = PROTOCOL_VERSION

    def encode(self) -> bytes:
        """The frame's bytes, start to end."""
        if not 0 <= self.seq <= 0xFFFF:
            raise ValueError(f"sequence number {self.seq} outside 0..65535")
        for name, address in (("source", self.source), ("destination", self.destination)):
            if not 0 <= address <= ADDRESS_MAX:
                raise ValueError(f"{name} address {address} does not fit 6 bytes")
        if len(self.data) > MAX_DATA:
            raise ValueError(f"application data of {len(self.data)} bytes (at most {MAX_DATA})")
        if len(self.time) != 6:
            raise ValueError("a time tag is 6 bytes")
        body = (struct.pack("<HBB", self.seq, *self.version) + self.time
                + self.source.to_bytes(6, "little") + self.destination.to_bytes(6, "little")
                + struct.pack("<HB", len(self.data), self.command) + self.data)
        return START + body + bytes((sum(body) & 0xFF,)) + END

    def answer(self, command: int, *, time: bytes, data: bytes = b"") -> "Frame":
        """A confirm, deny or response to this frame: same sequence number, addresses swapped."""
        return Frame(self.seq, command, self.destination, self.source, time, data, self.version)


def decode_frame(raw: bytes) -> Frame:
    """One whole frame (start to end bytes); FrameError naming what is wrong."""
    if len(raw) < FRAME_OVERHEAD:
        raise FrameError("short", f"{len(raw)} bytes")
    if raw[:2] != START:
        raise FrameError("bad_start")
    length = int.from_bytes(raw[24:26], "little")
    if length > MAX_DATA:
        raise FrameError("too_long", f"data length {length}")
    if len(raw) != FRAME_OVERHEAD + length:
        raise FrameError("bad_length", f"{len(raw)} bytes for data length {length}")
    if raw[-2:] != END:
        raise FrameError("bad_end")
    body = raw[2:27 + length]
    if sum(body) & 0xFF != raw[27 + length]:
        raise FrameError("bad_checksum", f"{sum(body) & 0xFF:#04x} != {raw[27 + length]:#04x}")
    return Frame(seq=int.from_bytes(raw[2:4], "little"), command=raw[26],
                 source=int.from_bytes(raw[12:18], "little"),
                 destination=int.from_bytes(raw[18:24], "little"),
                 time=bytes(raw[6:12]), data=bytes(raw[27:27 + length]),
                 version=(raw[4], raw[5]))


class FrameReader:
    """Splits a TCP byte stream into frames; what is not a frame is counted and skipped.

    The peer's bytes are untrusted: a bad frame never raises out of ``feed``; the
    reader skips to the next ``@@`` and counts why (``errors[reason]``). Its buffer
    is bounded by one maximal frame.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.frames = 0
        self.skipped_bytes = 0
        self.errors: dict[str, int] = {}

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; return the whole frames they complete, in order."""
        self._buf += data
        out: list[Frame] = []
        buf = self._buf
        while True:
            start = buf.find(START)
            if start < 0:
                keep = 1 if buf.endswith(START[:1]) else 0  # a lone '@' may start a frame
                self.skipped_bytes += len(buf) - keep
                del buf[:len(buf) - keep]
                break
            if start:
                self.skipped_bytes += start
                del buf[:start]
            if len(buf) < 27:
                break
            length = int.from_bytes(buf[24:26], "little")
            if length > MAX_DATA:
                self._reject("too_long")
                continue
            size = FRAME_OVERHEAD + length
            if len(buf) < size:
                break
            try:
                frame = decode_frame(bytes(buf[:size]))
            except FrameError as exc:
                self._reject(exc.reason)
                continue
            del buf[:size]
            self.frames += 1
            out.append(frame)
        return out

    def _reject(self, reason: str) -> None:
        # Skip one byte only: a real frame may begin inside the bad one, or one byte on
        # ("@@@": the first '@' was noise).
        self.errors[reason] = self.errors.get(reason, 0) + 1
        self.skipped_bytes += 1
        del self._buf[:1]


# -- information objects ------------------------------------------------------------------


def encode_text(text: str, size: int = DESCRIPTION_SIZE) -> bytes:
    """``text`` in GB18030, zero-padded to ``size``; ValueError if it is longer."""
    raw = text.encode("gb18030")
    if len(raw) > size:
        raise ValueError(f"{text!r} is {len(raw)} bytes in GB18030 (at most {size})")
    return raw.ljust(size, b"\0")


def decode_text(raw: bytes) -> str:
    """A fixed-size GB18030 field: up to the first NUL, trailing spaces dropped."""
    return raw.split(b"\0", 1)[0].decode("gb18030", errors="replace").rstrip()


def state_names(word: int, bits: dict[str, int] = STATE_BITS) -> list[str]:
    """The names of the set bits (``normal`` for bit 0; ``test`` when bit 0 is clear)."""
    names = ["normal" if word & 1 else "test"]
    names += [name for name, bit in bits.items() if bit and word >> bit & 1]
    return names


@dataclass(frozen=True, slots=True)
class SystemState:
    """Type 1: a building fire-facility system's state word."""

    system_type: int
    system_address: int
    state: int
    time: bytes

    SIZE = 10

    def encode(self) -> bytes:
        return struct.pack("<BBH", self.system_type, self.system_address, self.state) + self.time

    @classmethod
    def decode(cls, raw: bytes) -> "SystemState":
        st, sa, state = struct.unpack_from("<BBH", raw)
        return cls(st, sa, state, bytes(raw[4:10]))


@dataclass(frozen=True, slots=True)
class ComponentState:
    """Type 2: one component's state word with its description (部件运行状态)."""

    system_type: int
    system_address: int
    component_type: int
    component_address: int
    state: int
    description: str
    time: bytes

    SIZE = 46

    def encode(self) -> bytes:
        return (struct.pack("<BBBIH", self.system_type, self.system_address, self.component_type,
                            self.component_address, self.state)
                + encode_text(self.description) + self.time)

    @classmethod
    def decode(cls, raw: bytes) -> "ComponentState":
        st, sa, ct, ca, state = struct.unpack_from("<BBBIH", raw)
        return cls(st, sa, ct, ca, state, decode_text(raw[9:40]), bytes(raw[40:46]))


@dataclass(frozen=True, slots=True)
class ComponentAnalog:
    """Type 3: one analog value of a component (signed counts of the type's resolution)."""

    system_type: int
    system_address: int
    component_type: int
    component_address: int
    analog_type: int
    value: int
    time: bytes

    SIZE = 16

    def encode(self) -> bytes:
        return struct.pack("<BBBIBh", self.system_type, self.system_address, self.component_type,
                           self.component_address, self.analog_type, self.value) + self.time

    @classmethod
    def decode(cls, raw: bytes) -> "ComponentAnalog":
        return cls(*struct.unpack_from("<BBBIBh", raw), bytes(raw[10:16]))


@dataclass(frozen=True, slots=True)
class Operation:
    """Type 4: an operation on a fire-facility system (reset, confirm, ...) by an operator."""

    system_type: int
    system_address: int
    flags: int
    operator: int
    time: bytes

    SIZE = 10

    def encode(self) -> bytes:
        return bytes((self.system_type, self.system_address, self.flags, self.operator)) + self.time

    @classmethod
    def decode(cls, raw: bytes) -> "Operation":
        return cls(raw[0], raw[1], raw[2], raw[3], bytes(raw[4:10]))


@dataclass(frozen=True, slots=True)
class DeviceState:
    """Type 21: the transmission device's own running state (1 byte)."""

    state: int
    time: bytes

    SIZE = 7

    def encode(self) -> bytes:
        return bytes((self.state,)) + self.time

    @classmethod
    def decode(cls, raw: bytes) -> "DeviceState":
        return cls(raw[0], bytes(raw[1:7]))


@dataclass(frozen=True, slots=True)
class DeviceOperation:
    """Type 24: an operation on the transmission device."""

    flags: int
    operator: int
    time: bytes

    SIZE = 8

    def encode(self) -> bytes:
        return bytes((self.flags, self.operator)) + self.time

    @classmethod
    def decode(cls, raw: bytes) -> "DeviceOperation":
        return cls(raw[0], raw[1], bytes(raw[2:8]))


@dataclass(frozen=True, slots=True)
class Version:
    """Type 25: the transmission device's software version."""

    major: int
    minor: int

    SIZE = 2

    def encode(self) -> bytes:
        return bytes((self.major, self.minor))

    @classmethod
    def decode(cls, raw: bytes) -> "Version":
        return cls(raw[0], raw[1])


@dataclass(frozen=True, slots=True)
class DeviceTime:
    """Type 28 (the device's clock), and the payload of the centre's type 90 (set it)."""

    time: bytes

    SIZE = 6

    def encode(self) -> bytes:
        return bytes(self.time)

    @classmethod
    def decode(cls, raw: bytes) -> "DeviceTime":
        return cls(bytes(raw[:6]))


@dataclass(frozen=True, slots=True)
class SystemRef:
    """Types 61 and 68: which system the centre asks about."""

    system_type: int
    system_address: int

    SIZE = 2

    def encode(self) -> bytes:
        return bytes((self.system_type, self.system_address))

    @classmethod
    def decode(cls, raw: bytes) -> "SystemRef":
        return cls(raw[0], raw[1])


@dataclass(frozen=True, slots=True)
class ComponentRef:
    """Types 62 and 63: which component the centre asks about."""

    system_type: int
    system_address: int
    component_address: int

    SIZE = 6

    def encode(self) -> bytes:
        return struct.pack("<BBI", self.system_type, self.system_address, self.component_address)

    @classmethod
    def decode(cls, raw: bytes) -> "ComponentRef":
        return cls(*struct.unpack_from("<BBI", raw))


@dataclass(frozen=True, slots=True)
class Reserved:
    """The one reserved byte of the centre's parameterless requests (81, 85, 88, 89, 91)."""

    value: int = 0

    SIZE = 1

    def encode(self) -> bytes:
        return bytes((self.value,))

    @classmethod
    def decode(cls, raw: bytes) -> "Reserved":
        return cls(raw[0])


OBJECT_TYPES: dict[int, type] = {
    TypeFlag.SYSTEM_STATE: SystemState, TypeFlag.COMPONENT_STATE: ComponentState,
    TypeFlag.COMPONENT_ANALOG: ComponentAnalog, TypeFlag.OPERATION: Operation,
    TypeFlag.DEVICE_STATE: DeviceState, TypeFlag.DEVICE_OPERATION: DeviceOperation,
    TypeFlag.DEVICE_VERSION: Version, TypeFlag.DEVICE_TIME: DeviceTime,
    TypeFlag.READ_SYSTEM_STATE: SystemRef, TypeFlag.READ_SYSTEM_TIME: SystemRef,
    TypeFlag.READ_COMPONENT_STATE: ComponentRef, TypeFlag.READ_COMPONENT_ANALOG: ComponentRef,
    TypeFlag.READ_DEVICE_STATE: Reserved, TypeFlag.READ_DEVICE_VERSION: Reserved,
    TypeFlag.READ_DEVICE_CONFIG: Reserved, TypeFlag.READ_DEVICE_TIME: Reserved,
    TypeFlag.INITIALISE_DEVICE: Reserved, TypeFlag.SET_DEVICE_TIME: DeviceTime,
    TypeFlag.INSPECTION: Reserved,
}
# 2 header bytes + n objects must fit 1024 bytes.
MAX_OBJECTS = {flag: (MAX_DATA - 2) // cls.SIZE for flag, cls in OBJECT_TYPES.items()}


def encode_unit(type_flag: int, objects: list) -> bytes:
    """An application data unit: type flag, object count, the objects."""
    if not 1 <= len(objects) <= min(255, MAX_OBJECTS.get(type_flag, 255)):
        raise ValueError(f"{len(objects)} objects of type {type_flag} do not fit one data unit")
    return bytes((type_flag, len(objects))) + b"".join(o.encode() for o in objects)


def decode_unit(data: bytes) -> tuple[int, list]:
    """``(type_flag, objects)`` of an application data unit; FrameError if it does not parse.

    Types this module does not know come back with no objects (their bytes are
    still the frame's ``data``).
    """
    if len(data) < 2:
        raise FrameError("short_unit", f"{len(data)} bytes")
    flag, count = data[0], data[1]
    cls = OBJECT_TYPES.get(flag)
    if cls is None:
        return flag, []
    need = 2 + count * cls.SIZE
    if count == 0 or len(data) != need:
        raise FrameError("bad_unit", f"type {flag}: {count} objects need {need} bytes, got {len(data)}")
    return flag, [cls.decode(data[2 + i * cls.SIZE:2 + (i + 1) * cls.SIZE]) for i in range(count)]
