"""Seeed MR60FDA1 (60 GHz fall-detection radar) frames.

Wire format: ``53 59 | CTRL | CMD | LEN (u16 BE) | DATA[LEN] | SUM | 54 43`` where SUM
is the low byte of the sum of every byte before it. A query repeats CTRL with
``CMD | 0x80`` and the single data byte ``0F``.

Assumptions where the device reference is silent:
- a reply echoes the CTRL and CMD of what it answers, the query bit included
  (``80 81`` is answered by ``80 81 <value>``); the reply to a query therefore
  decodes like the report it asks for;
- DATA is capped at ``MAX_DATA`` bytes: the longest payloads are short ASCII info
  strings, and a small cap lets the parser give up quickly on a corrupted LEN.
"""

from __future__ import annotations

from dataclasses import dataclass

from .codec import Decoded, FrameCodec, ParseResult, RadarEvent

SYNC = b"\x53\x59"
TRAILER = b"\x54\x43"
#: 53 59 CTRL CMD LEN LEN, and SUM 54 43 after the data.
HEADER_SIZE = 6
OVERHEAD = HEADER_SIZE + 3
#: Largest DATA the parser accepts; a longer LEN is counted as ``oversize``.
MAX_DATA = 128
QUERY_BIT = 0x80
QUERY_DATA = b"\x0f"


@dataclass(slots=True, frozen=True)
class Mr60fda1Frame:
    """One MR60FDA1 frame: its control word, command word and data."""

    ctrl: int
    cmd: int
    data: bytes = b""

    def to_bytes(self) -> bytes:
        """The frame on the wire."""
        return encode_frame(self.ctrl, self.cmd, self.data)


def checksum(head: bytes | bytearray) -> int:
    """SUM: the low byte of the sum of ``head`` (every frame byte before SUM)."""
    return sum(head) & 0xFF


def encode_frame(ctrl: int, cmd: int, data: bytes = b"") -> bytes:
    """Build a complete frame."""
    if not (0 <= ctrl <= 0xFF and 0 <= cmd <= 0xFF):
        raise ValueError(f"ctrl and cmd must be bytes, got {ctrl!r}, {cmd!r}")
    if len(data) > 0xFFFF:
        raise ValueError(f"data too long for a u16 LEN: {len(data)} bytes")
    head = SYNC + bytes((ctrl, cmd)) + len(data).to_bytes(2, "big") + bytes(data)
    return head + bytes((checksum(head),)) + TRAILER


# -- commands to the radar -------------------------------------------------------------

def query(ctrl: int, cmd: int) -> Mr60fda1Frame:
    """Ask for the current value of a report (``cmd`` with or without the query bit)."""
    return Mr60fda1Frame(ctrl, cmd | QUERY_BIT, QUERY_DATA)


def set_fall_detection(on: bool) -> Mr60fda1Frame:
    """Switch fall detection on or off (83 00)."""
    return Mr60fda1Frame(0x83, 0x00, b"\x01" if on else b"\x00")


def set_fall_sensitivity(level: int) -> Mr60fda1Frame:
    """Set the fall sensitivity (83 0D, one byte)."""
    if not 0 <= level <= 0xFF:
        raise ValueError(f"fall sensitivity must fit a byte, got {level!r}")
    return Mr60fda1Frame(0x83, 0x0D, bytes((level,)))


def reset() -> Mr60fda1Frame:
    """Restart the radar (01 02 0F)."""
    return Mr60fda1Frame(0x01, 0x02, QUERY_DATA)


def is_query(frame: Mr60fda1Frame) -> bool:
    """Whether ``frame`` is a query from the host (query bit set, data ``0F``).

    A reply can carry the same bytes (a body-movement value of 15), so this only
    means something for frames travelling towards the radar, e.g. in a simulator.
    """
    return bool(frame.cmd & QUERY_BIT) and frame.data == QUERY_DATA


def is_reply_to(frame: Mr60fda1Frame, command: Mr60fda1Frame) -> bool:
    """Whether ``frame`` answers ``command``: the same CTRL and CMD (query bit included)."""
    return frame.ctrl == command.ctrl and frame.cmd == command.cmd


# -- interpretation ----------------------------------------------------------------------

# (ctrl, cmd) -> (value name, largest valid value) for one-byte reports.
_U8_REPORTS: dict[tuple[int, int], tuple[str, int]] = {
    (0x80, 0x01): ("presence", 1),
    (0x80, 0x02): ("motion", 2),
    (0x80, 0x03): ("body_movement", 100),
    (0x83, 0x00): ("fall_detection", 1),
    (0x83, 0x01): ("fall", 1),
    (0x83, 0x05): ("stationary_dwell", 1),
    (0x83, 0x0D): ("fall_sensitivity", 0xFF),
}
_INFO_FIELDS = {
    0xA1: "product_model",
    0xA2: "product_id",
    0xA3: "hardware_model",
    0xA4: "firmware_version",
}


class Mr60fda1Codec(FrameCodec[Mr60fda1Frame]):
    """Stream parser and interpreter for MR60FDA1 frames."""

    sync = SYNC
    is_reply_to = staticmethod(is_reply_to)

    __slots__ = ("max_data",)

    def __init__(self, *, max_data: int = MAX_DATA):
        if not 0 <= max_data <= 0xFFFF:
            raise ValueError(f"max_data must be 0..65535, got {max_data!r}")
        super().__init__(max_frame_size=OVERHEAD + max_data)
        self.max_data = max_data

    def _parse_at(self, buf: bytearray, pos: int) -> ParseResult:
        available = len(buf) - pos
        if available < HEADER_SIZE:
            return None
        length = (buf[pos + 4] << 8) | buf[pos + 5]
        if length > self.max_data:
            return "oversize"
        size = OVERHEAD + length
        if available < size:
            return None
        end = pos + size
        # A frame cut short shows first as a missing trailer: the next frame's bytes sit there.
        if buf[end - 2] != TRAILER[0] or buf[end - 1] != TRAILER[1]:
            return "truncated"
        if checksum(buf[pos:end - 3]) != buf[end - 3]:
            return "bad_checksum"
        frame = Mr60fda1Frame(buf[pos + 2], buf[pos + 3], bytes(buf[pos + HEADER_SIZE:end - 3]))
        return frame, size

    def decode(self, frame: Mr60fda1Frame) -> Decoded:
        """Values: presence, motion, body_movement, fall, stationary_dwell, fall_detection,
        fall_sensitivity. Events: ``fall`` (fall = 1), ``heartbeat``, ``reset``,
        ``device_info`` (attrs ``field``, ``text``)."""
        ctrl, cmd, data = frame.ctrl, frame.cmd, frame.data
        report = _U8_REPORTS.get((ctrl, cmd)) or _U8_REPORTS.get((ctrl, cmd & ~QUERY_BIT))
        if report is not None:
            name, largest = report
            if len(data) != 1 or data[0] > largest:
                self.implausible += 1
                return Decoded()
            decoded = Decoded({name: float(data[0])})
            if name == "fall" and data[0] == 1:
                decoded.events.append(RadarEvent("fall", {}))
            return decoded
        if ctrl == 0x01 and cmd & ~QUERY_BIT == 0x01:
            return Decoded(events=[RadarEvent("heartbeat", {})])
        if ctrl == 0x01 and cmd == 0x02:
            return Decoded(events=[RadarEvent("reset", {})])
        if ctrl == 0x02 and cmd in _INFO_FIELDS:
            info = {"field": _INFO_FIELDS[cmd], "text": data.decode("ascii", "replace")}
            return Decoded(events=[RadarEvent("device_info", info)])
        self.unknown += 1
        return Decoded()
