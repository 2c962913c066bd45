"""SIA DC-09 frames: parse what a panel sends, build what a receiver answers.

A frame on the wire is ``LF crc(4 hex) length(4 hex) body CR``. The body is
``"ID"`` (``ADM-CID``, ``SIA-DCS``, ``NULL``; a leading ``*`` inside the quotes marks
an AES-encrypted body) + sequence (4 digits) + ``R``receiver (optional, hex) +
``L``line prefix (hex) + ``#``account + ``[``data``]`` + extended data ``[...]``
(optional) + ``_HH:MM:SS,MM-DD-YYYY`` (optional, UTC).

Checked against two independent open implementations and real panels' frames:
- eavanvalkenburg/pysiaalarm (``event.py``: CRC-16 with the reflected polynomial
  0xA001 and initial value 0, i.e. CRC-16/ARC, over the body only, 4 upper-case hex
  digits; the length is the body's length in 4 hex digits; ``regexes.py`` for the
  field order, receiver optional, line required);
- frames logged from PROSEC and OPAX panels and from a receiver in Node.js, e.g.
  ``F68B003B"ADM-CID"0028L0#9757[#9757|1602 00 000]_20:59:45,02-20-2024`` and
  ``F92F0043"ADM-CID"0020R7896L7896#3456[#3456|1407 00 001]_17:01:14,07-26-2024``,
  whose CRC and length this module reproduces (tests/test_sia_dc09.py).

The answer to every frame is one of ``ACK`` (accepted), ``NAK`` (bad CRC or length,
or a time stamp out of the window: it carries our time so the panel can correct
its clock) and ``DUH`` (a good frame we cannot process: encrypted, unknown message
type, unreadable data), as DC-09 section 5.5 prescribes. Nothing here raises
anything but ``FrameError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

#: A frame longer than this is not DC-09 (the standard's bodies are well under 1 KiB).
MAX_FRAME = 1024

_BODY = re.compile(
    r'"(?P<encrypted>\*)?(?P<id>[A-Z0-9-]{1,16})"'
    r"(?P<seq>\d{4})"
    r"(?:R(?P<receiver>[0-9A-Fa-f]{1,6}))?"
    r"L(?P<line>[0-9A-Fa-f]{1,6})"
    r"(?:A[0-9A-Fa-f]{1,6})?"  # an area prefix (seen in NAKs)
    r"(?:#(?P<account>[0-9A-Fa-f]{3,16}))?"
    r"\[(?P<data>[^\[\]]*)\]"
    r"(?P<extended>(?:\[[^\[\]]*\])*)"
    r"(?:_(?P<time>\d{2}:\d{2}:\d{2},\d{2}-\d{2}-\d{4}))?$"
)


class FrameError(ValueError):
    """Bytes that are not an acceptable DC-09 frame; ``answer`` says how to reply
    (``"NAK"`` for a transmission error, ``"DUH"`` for a good frame we cannot use)."""

    def __init__(self, reason: str, answer: str, frame: "Dc09Frame | None" = None):
        self.reason = reason
        self.answer = answer
        self.frame = frame
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Dc09Frame:
    """One received frame's header fields and its data, as strings from the wire."""

    message_id: str
    sequence: str
    receiver: str | None
    line: str
    account: str
    data: str
    extended: str
    timestamp: datetime | None
    encrypted: bool = False

    @property
    def is_heartbeat(self) -> bool:
        """A ``NULL`` frame: supervision only, nothing happened."""
        return self.message_id == "NULL"


def crc16(data: bytes) -> int:
    """CRC-16/ARC (polynomial 0x8005 reflected, initial 0), as DC-09 uses."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def parse_frame(raw: bytes) -> Dc09Frame:
    """One frame (with or without its LF and CR) -> its fields; ``FrameError`` if bad."""
    frame = raw.strip(b"\r\n\x00 ")
    if len(frame) > MAX_FRAME:
        raise FrameError(f"frame of {len(frame)} bytes (max {MAX_FRAME})", "NAK")
    if len(frame) < 9:
        raise FrameError("frame too short", "NAK")
    head, body = frame[:8], frame[8:]
    try:
        crc_text, length_text = head[:4].decode("ascii"), head[4:].decode("ascii")
        crc, length = int(crc_text, 16), int(length_text, 16)
    except (UnicodeDecodeError, ValueError):
        raise FrameError("header is not CRC and length in hex", "NAK") from None
    if crc16(body) != crc:
        raise FrameError(f"CRC {crc_text} does not match the body ({crc16(body):04X})", "NAK")
    if length != len(body):
        raise FrameError(f"length {length_text} does not match the body ({len(body)})", "NAK")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("body is not ASCII", "DUH") from None
    match = _BODY.match(text)
    if match is None:
        raise FrameError("body is not a DC-09 message", "DUH")
    timestamp = None
    if match["time"]:
        try:
            timestamp = datetime.strptime(match["time"], "%H:%M:%S,%m-%d-%Y").replace(
                tzinfo=timezone.utc)
        except ValueError:
            raise FrameError(f"time stamp {match['time']!r} is not a date", "DUH") from None
    parsed = Dc09Frame(message_id=match["id"], sequence=match["seq"], receiver=match["receiver"],
                       line=match["line"], account=(match["account"] or "").upper(), data=match["data"],
                       extended=match["extended"], timestamp=timestamp,
                       encrypted=bool(match["encrypted"]))
    if parsed.encrypted:
        raise FrameError("encrypted messages are not supported (no AES key)", "DUH", parsed)
    return parsed


def encode_frame(body: str) -> bytes:
    """A body wrapped as a frame: LF, CRC, length, body, CR."""
    raw = body.encode("ascii")
    return b"\n" + f"{crc16(raw):04X}{len(raw):04X}".encode("ascii") + raw + b"\r"


def message_body(message_id: str, sequence: int | str, *, line: str, account: str,
                 data: str, receiver: str | None = None, when: datetime | None = None) -> str:
    """A panel's message body (what the simulator and the tests send)."""
    stamp = "_" + when.strftime("%H:%M:%S,%m-%d-%Y") if when is not None else ""
    rcv = f"R{receiver}" if receiver else ""
    return f'"{message_id}"{int(sequence):04d}{rcv}L{line}#{account}[{data}]{stamp}'


def answer(kind: str, frame: Dc09Frame | None, now: datetime) -> bytes:
    """The receiver's reply to ``frame`` (``ACK``, ``NAK`` or ``DUH``).

    ``ACK`` and ``DUH`` echo the frame's sequence, receiver, line and account, so
    the panel can match them. ``NAK`` carries the receiver's time (DC-09: the panel
    may correct its clock from it) and zeros where the frame could not be trusted.
    """
    stamp = now.astimezone(timezone.utc).strftime("_%H:%M:%S,%m-%d-%Y")
    if kind == "NAK" or frame is None:
        return encode_frame(f'"{kind}"0000R0L0A0[]{stamp}')
    rcv = f"R{frame.receiver}" if frame.receiver else ""
    return encode_frame(f'"{kind}"{frame.sequence}{rcv}L{frame.line}#{frame.account}[]')
