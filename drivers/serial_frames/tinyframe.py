"""TinyFrame frames of the Seeed MR60FDA2 and Hi-Link LD6002C fall-detection radars.

Wire format: ``01 | ID (u16) | LEN (u16) | TYPE (u16) | HEAD_CK | DATA[LEN] | DATA_CK``.
Header fields are big-endian, multi-byte data fields little-endian. A checksum is the
bitwise NOT of the XOR of the bytes it covers; there is no DATA_CK when LEN is 0.
The top bit of ID marks the sender; a command is first acknowledged by a frame with
the same TYPE and no data, then (for a get or set) answered with data.

Assumptions where the device reference is silent:
- a reply carries the ID of the command it answers; matching ignores the sender bit,
  and commands built here use ID 0 like the reference example;
- DATA is capped at ``MAX_DATA`` bytes (TinyFrame's default receive limit), enough for
  point clouds; a longer LEN is counted as ``oversize``;
- the u8 reply to a set (0E04/0E08/0E0A/0E0C) is passed on as a ``reply`` event with
  its raw ``status``; what values mean success is not documented;
- a live target height outside ``TARGET_HEIGHT_RANGE`` metres, or a non-finite float
  in the parameters, is implausible (a ceiling radar covers a room);
- targets and point clouds (0A04, 0A08) are known but not turned into values.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from .codec import Decoded, FrameCodec, ParseResult, RadarEvent

SOF = 0x01
SYNC = bytes((SOF,))
HEADER_SIZE = 8
#: Largest DATA the parser accepts.
MAX_DATA = 1024
#: The top bit of ID: which peer sent the frame.
PEER_BIT = 0x8000
#: Plausible live target height, metres (ceiling mounting is 2.4 to 3.0 m).
TARGET_HEIGHT_RANGE = (-1.0, 6.0)

FALL = 0x0E02
PRESENCE = 0x0F09
SET_MOUNT_HEIGHT = 0x0E04
PARAMETERS = 0x0E06
SET_FALL_THRESHOLD = 0x0E08
SET_SENSITIVITY = 0x0E0A
SET_ALARM_ZONE = 0x0E0C
TARGET_HEIGHT = 0x0E0E
TARGETS = 0x0A04
POINT_CLOUD = 0x0A08

_PARAMETERS = struct.Struct("<ffIffff")
_PARAMETER_NAMES = (
    "mount_height", "fall_threshold", "sensitivity", "zone_xl", "zone_xr", "zone_zf", "zone_zb",
)
_ZONE = struct.Struct("<ffff")
_F32 = struct.Struct("<f")
_U32 = struct.Struct("<I")
_SET_TYPES = (SET_MOUNT_HEIGHT, SET_FALL_THRESHOLD, SET_SENSITIVITY, SET_ALARM_ZONE)
KNOWN_TYPES = frozenset((
    FALL, PRESENCE, SET_MOUNT_HEIGHT, PARAMETERS, SET_FALL_THRESHOLD, SET_SENSITIVITY,
    SET_ALARM_ZONE, TARGET_HEIGHT, TARGETS, POINT_CLOUD,
))


@dataclass(slots=True, frozen=True)
class TinyFrameFrame:
    """One TinyFrame frame: its ID, TYPE and data."""

    frame_id: int
    type: int
    data: bytes = b""

    def to_bytes(self) -> bytes:
        """The frame on the wire."""
        return encode_frame(self.frame_id, self.type, self.data)


def checksum(data: bytes | bytearray) -> int:
    """HEAD_CK / DATA_CK: the bitwise NOT of the XOR of ``data``."""
    x = 0
    for b in data:
        x ^= b
    return ~x & 0xFF


def encode_frame(frame_id: int, type_: int, data: bytes = b"") -> bytes:
    """Build a complete frame."""
    if not (0 <= frame_id <= 0xFFFF and 0 <= type_ <= 0xFFFF):
        raise ValueError(f"frame_id and type must be u16, got {frame_id!r}, {type_!r}")
    if len(data) > 0xFFFF:
        raise ValueError(f"data too long for a u16 LEN: {len(data)} bytes")
    head = struct.pack(">BHHH", SOF, frame_id, len(data), type_)
    frame = head + bytes((checksum(head),))
    if data:
        frame += bytes(data) + bytes((checksum(data),))
    return frame


# -- commands to the radar -------------------------------------------------------------

def _f32(name: str, value: float) -> bytes:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    try:
        return _F32.pack(value)
    except OverflowError:
        raise ValueError(f"{name} does not fit a f32: {value!r}") from None


def set_mount_height(metres: float, *, frame_id: int = 0) -> TinyFrameFrame:
    """Set the mounting height in metres (0E04, f32)."""
    return TinyFrameFrame(frame_id, SET_MOUNT_HEIGHT, _f32("mount height", metres))


def set_fall_threshold(value: float, *, frame_id: int = 0) -> TinyFrameFrame:
    """Set the fall threshold (0E08, f32)."""
    return TinyFrameFrame(frame_id, SET_FALL_THRESHOLD, _f32("fall threshold", value))


def set_alarm_zone(xl: float, xr: float, zf: float, zb: float, *,
                   frame_id: int = 0) -> TinyFrameFrame:
    """Set the alarm zone in metres (0E0C, four f32: XL XR ZF ZB)."""
    data = b"".join(_f32(name, v) for name, v in zip(("xl", "xr", "zf", "zb"), (xl, xr, zf, zb)))
    return TinyFrameFrame(frame_id, SET_ALARM_ZONE, data)


def set_sensitivity(level: int, *, frame_id: int = 0) -> TinyFrameFrame:
    """Set the fall sensitivity (0E0A, u32)."""
    if not 0 <= level <= 0xFFFFFFFF:
        raise ValueError(f"sensitivity must fit a u32, got {level!r}")
    return TinyFrameFrame(frame_id, SET_SENSITIVITY, _U32.pack(level))


def get_parameters(*, frame_id: int = 0) -> TinyFrameFrame:
    """Ask for the parameters (0E06, no data); answered by an ack, then 28 bytes."""
    return TinyFrameFrame(frame_id, PARAMETERS)


def is_ack(frame: TinyFrameFrame) -> bool:
    """Whether ``frame`` is an acknowledgement (no data)."""
    return not frame.data


def is_reply_to(frame: TinyFrameFrame, command: TinyFrameFrame) -> bool:
    """Whether ``frame`` (the ack or the answer) replies to ``command``: same TYPE and ID.

    The sender bit of ID is ignored.
    """
    return (frame.type == command.type
            and (frame.frame_id & ~PEER_BIT) == (command.frame_id & ~PEER_BIT))


# -- interpretation ----------------------------------------------------------------------

class TinyFrameCodec(FrameCodec[TinyFrameFrame]):
    """Stream parser and interpreter for TinyFrame radar frames (LD6002C, MR60FDA2)."""

    sync = SYNC
    is_reply_to = staticmethod(is_reply_to)

    __slots__ = ("max_data",)

    def __init__(self, *, max_data: int = MAX_DATA):
        if not 0 <= max_data <= 0xFFFF:
            raise ValueError(f"max_data must be 0..65535, got {max_data!r}")
        super().__init__(max_frame_size=HEADER_SIZE + max_data + 1)
        self.max_data = max_data

    def _parse_at(self, buf: bytearray, pos: int) -> ParseResult:
        available = len(buf) - pos
        if available < HEADER_SIZE:
            return None
        # 01 is a common byte, so most candidates die here and the hunt moves on by one.
        if checksum(buf[pos:pos + HEADER_SIZE - 1]) != buf[pos + HEADER_SIZE - 1]:
            return "bad_checksum"
        length = (buf[pos + 3] << 8) | buf[pos + 4]
        if length > self.max_data:
            return "oversize"
        size = HEADER_SIZE + length + 1 if length else HEADER_SIZE
        if available < size:
            return None
        data = b""
        if length:
            data = bytes(buf[pos + HEADER_SIZE:pos + HEADER_SIZE + length])
            if checksum(data) != buf[pos + size - 1]:
                return "bad_checksum"
        frame_id = (buf[pos + 1] << 8) | buf[pos + 2]
        type_ = (buf[pos + 5] << 8) | buf[pos + 6]
        return TinyFrameFrame(frame_id, type_, data), size

    def decode(self, frame: TinyFrameFrame) -> Decoded:
        """Values: fall, presence, target_height, and the parameters (mount_height,
        fall_threshold, sensitivity, zone_xl, zone_xr, zone_zf, zone_zb). Events:
        ``fall`` (fall = 1), ``ack`` (attrs ``type``), ``reply`` (attrs ``type``, ``status``).

        Set commands as the host sends them decode to the value they set.
        """
        type_, data = frame.type, frame.data
        if type_ not in KNOWN_TYPES:
            self.unknown += 1
            return Decoded()
        if not data:
            return Decoded(events=[RadarEvent("ack", {"type": type_})])
        decoded = self._decode_data(type_, data)
        if decoded is None:
            self.implausible += 1
            return Decoded()
        return decoded

    @staticmethod
    def _decode_data(type_: int, data: bytes) -> Decoded | None:
        size = len(data)
        if type_ in (FALL, PRESENCE):
            if size != 1 or data[0] > 1:
                return None
            name = "fall" if type_ == FALL else "presence"
            decoded = Decoded({name: float(data[0])})
            if name == "fall" and data[0] == 1:
                decoded.events.append(RadarEvent("fall", {}))
            return decoded
        if type_ == TARGET_HEIGHT:
            if size != 4:
                return None
            (height,) = _F32.unpack(data)
            low, high = TARGET_HEIGHT_RANGE
            if not low <= height <= high:  # NaN fails too
                return None
            return Decoded({"target_height": height})
        if type_ == PARAMETERS:
            if size != _PARAMETERS.size:
                return None
            fields = _PARAMETERS.unpack(data)
            if not all(math.isfinite(v) for v in fields):
                return None
            return Decoded(dict(zip(_PARAMETER_NAMES, map(float, fields))))
        if type_ in _SET_TYPES:
            if size == 1:
                return Decoded(events=[RadarEvent("reply", {"type": type_, "status": data[0]})])
            return _decode_setting(type_, data)
        return Decoded()  # targets, point cloud: known, not turned into values


def _decode_setting(type_: int, data: bytes) -> Decoded | None:
    """A set command's data, as the host sends it."""
    if type_ == SET_SENSITIVITY:
        return Decoded({"sensitivity": float(_U32.unpack(data)[0])}) if len(data) == 4 else None
    if type_ == SET_ALARM_ZONE:
        if len(data) != _ZONE.size:
            return None
        zone = _ZONE.unpack(data)
        if not all(math.isfinite(v) for v in zone):
            return None
        return Decoded(dict(zip(_PARAMETER_NAMES[3:], zone)))
    if len(data) != 4:
        return None
    (value,) = _F32.unpack(data)
    if not math.isfinite(value):
        return None
    return Decoded({"mount_height" if type_ == SET_MOUNT_HEIGHT else "fall_threshold": value})
