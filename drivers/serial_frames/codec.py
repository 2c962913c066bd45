"""What the radar frame codecs share: the resynchronising stream parser and its counters.

A subclass says what its start bytes are and how to judge one candidate frame; this
base hunts for start bytes, buffers partial frames across ``feed`` calls and keeps
the counters. Neither protocol escapes its bytes, so after any rejected candidate
the hunt restarts one byte after that candidate's start: a real frame that a broken
one swallowed is found again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Generic, NamedTuple, TypeVar

#: Every counter a codec keeps, always present in ``counters()``.
COUNTER_NAMES = (
    "frames_ok",  # complete frames with good checksums returned by feed()/flush()
    "garbage_bytes",  # bytes dropped: skipped while hunting, or a rejected start byte
    "bad_checksum",  # candidates rejected by a checksum
    "truncated",  # candidates cut short (bad MR60FDA1 trailer, or abandoned by flush/clear)
    "oversize",  # candidates whose LEN is above the codec's cap
    "unknown",  # decode(): a frame of a kind this codec does not know
    "implausible",  # decode(): a known kind with a wrong length or an impossible value
)


class RadarEvent(NamedTuple):
    """Something a frame reports happening (``fall``, ``heartbeat``, ``ack``), with details."""

    name: str
    attrs: dict[str, object]


@dataclass(slots=True)
class Decoded:
    """What one frame means: reading values (bools as 0/1) and events."""

    values: dict[str, float] = field(default_factory=dict)
    events: list[RadarEvent] = field(default_factory=list)


FrameT = TypeVar("FrameT")

# What _parse_at() returns: a frame and its size on the wire, None when more bytes
# are needed to judge, or the name of the counter that rejects the candidate.
ParseResult = tuple[FrameT, int] | str | None


class FrameCodec(ABC, Generic[FrameT]):
    """Incremental parser and interpreter of one radar protocol's frames.

    ``feed`` never raises on any bytes: what is not a good frame is counted and
    skipped. Between calls the buffer holds at most one unfinished frame, so its
    size stays below ``max_frame_size``.
    """

    #: Bytes that open every frame.
    sync: ClassVar[bytes]

    __slots__ = ("_buf", "max_frame_size", *COUNTER_NAMES)

    def __init__(self, max_frame_size: int):
        self._buf = bytearray()
        self.max_frame_size = max_frame_size
        for name in COUNTER_NAMES:
            setattr(self, name, 0)

    def feed(self, data: bytes) -> list[FrameT]:
        """Add bytes from the line; return the frames they complete, in order."""
        if not data:
            return []
        self._buf += data
        return self._scan(final=False)

    def flush(self) -> list[FrameT]:
        """Give up on the unfinished frame (the line went idle) and rescan what follows it.

        A radar writes a frame in one go, so a candidate still unfinished when the
        line is quiet is a broken one; a good frame behind its start is returned
        instead of waiting for bytes that will not come. The buffer is left empty.
        """
        return self._scan(final=True)

    def clear(self) -> None:
        """Drop buffered bytes unread (e.g. after a reconnect); they count as garbage."""
        if self._buf.startswith(self.sync):
            self.truncated += 1
        self.garbage_bytes += len(self._buf)
        self._buf.clear()

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished frame."""
        return len(self._buf)

    def counters(self) -> dict[str, int]:
        """The counters by name (see ``COUNTER_NAMES``)."""
        return {name: getattr(self, name) for name in COUNTER_NAMES}

    @abstractmethod
    def decode(self, frame: FrameT) -> Decoded:
        """Map a frame to values and events; unknown or implausible frames give nothing."""

    @abstractmethod
    def _parse_at(self, buf: bytearray, pos: int) -> ParseResult:
        """Judge the candidate frame starting at ``buf[pos]`` (which begins with ``sync``)."""

    def _scan(self, final: bool) -> list[FrameT]:
        buf = self._buf
        sync = self.sync
        frames: list[FrameT] = []
        pos = 0
        while True:
            start = buf.find(sync, pos)
            if start < 0:
                end = len(buf) - (0 if final else _partial_sync_len(buf, sync, pos))
                self.garbage_bytes += end - pos
                pos = end
                break
            self.garbage_bytes += start - pos
            pos = start
            result = self._parse_at(buf, pos)
            if result is None:
                if not final:
                    break
                result = "truncated"
            if isinstance(result, str):
                setattr(self, result, getattr(self, result) + 1)
                self.garbage_bytes += 1
                pos += 1
                continue
            frame, size = result
            frames.append(frame)
            self.frames_ok += 1
            pos += size
        del buf[:pos]
        return frames


def _partial_sync_len(buf: bytearray, sync: bytes, pos: int) -> int:
    """How many bytes at the end of ``buf`` could be the beginning of ``sync``."""
    for k in range(min(len(sync) - 1, len(buf) - pos), 0, -1):
        if buf.endswith(sync[:k]):
            return k
    return 0
