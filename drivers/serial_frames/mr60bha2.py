"""Seeed MR60BHA2 breathing and heart-rate radar (60 GHz): TinyFrame frames, like the
MR60FDA2, with its own frame types.

Frame types and data layouts, as Seeed's open Arduino library (``SEEED_MR60BHA2``,
``handleType``) and an independent Python port of it (AB-Engineering's
``mr60bha2.py``) both decode them; multi-byte data little-endian:

- ``0A13`` phases: three f32 (total, breath, heart) - the raw waveform, not kept;
- ``0A14`` breath rate: f32, breaths per minute;
- ``0A15`` heart rate: f32, beats per minute;
- ``0A16`` distance: u32 flag (0: no target) + f32 range in metres;
- ``0F09`` human detection: u8, 1 someone present, 0 nobody;
- ``0A04`` / ``0A08`` targets and point cloud: known, not turned into values.

The radar reports a breath rate of 0 when it sees a person but no breathing
movement. ``no_breathing`` (1/0) is derived here from that and the last presence
report, so a site's rule can hold "no breathing while someone is present" for a
number of seconds (a ``held`` rule) without combining two fields. Rates outside
what a human body can show (breathing above 60/min, a heart above 250/min, a
negative rate, NaN) are counted as implausible and dropped.
"""

from __future__ import annotations

import math
import struct

from .codec import Decoded
from .tinyframe import TinyFrameCodec, TinyFrameFrame

PHASES = 0x0A13
BREATH_RATE = 0x0A14
HEART_RATE = 0x0A15
DISTANCE = 0x0A16
PRESENCE = 0x0F09
TARGETS = 0x0A04
POINT_CLOUD = 0x0A08
KNOWN_TYPES = frozenset((PHASES, BREATH_RATE, HEART_RATE, DISTANCE, PRESENCE, TARGETS,
                         POINT_CLOUD))

#: Plausible ranges (inclusive): a reading outside is a bad frame, not a patient.
BREATH_RANGE = (0.0, 60.0)
HEART_RANGE = (0.0, 250.0)
DISTANCE_RANGE = (0.0, 10.0)

FIELDS = frozenset({"presence", "breath_rate", "heart_rate", "distance", "no_breathing"})

_F32 = struct.Struct("<f")
_DISTANCE = struct.Struct("<If")


class Mr60bha2Codec(TinyFrameCodec):
    """TinyFrame parsing plus the MR60BHA2's frame types; remembers the last presence."""

    __slots__ = ("_present",)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._present = False

    def decode(self, frame: TinyFrameFrame) -> Decoded:
        """Values: presence, breath_rate, heart_rate, distance, no_breathing."""
        type_, data = frame.type, frame.data
        if type_ not in KNOWN_TYPES:
            self.unknown += 1
            return Decoded()
        if type_ in (PHASES, TARGETS, POINT_CLOUD):
            return Decoded()
        values = self._values(type_, data)
        if values is None:
            self.implausible += 1
            return Decoded()
        return Decoded(values)

    def _values(self, type_: int, data: bytes) -> dict[str, float] | None:
        if type_ == PRESENCE:
            if len(data) != 1 or data[0] > 1:
                return None
            self._present = bool(data[0])
            values = {"presence": float(data[0])}
            if not self._present:
                values["no_breathing"] = 0.0  # nobody there: nothing to miss
            return values
        if type_ == DISTANCE:
            if len(data) != _DISTANCE.size:
                return None
            flag, metres = _DISTANCE.unpack(data)
            if not flag:
                return {}  # no target in range: nothing measured
            return {"distance": metres} if _within(metres, DISTANCE_RANGE) else None
        if len(data) != _F32.size:
            return None
        (rate,) = _F32.unpack(data)
        if type_ == HEART_RATE:
            return {"heart_rate": rate} if _within(rate, HEART_RANGE) else None
        if not _within(rate, BREATH_RANGE):
            return None
        return {"breath_rate": rate, "no_breathing": 1.0 if self._present and rate == 0 else 0.0}


def _within(value: float, bounds: tuple[float, float]) -> bool:
    return math.isfinite(value) and bounds[0] <= value <= bounds[1]


def rate_frame(type_: int, value: float, *, frame_id: int = 0) -> bytes:
    """A breath-rate or heart-rate report as the radar sends it (simulator, tests)."""
    return TinyFrameFrame(frame_id, type_, _F32.pack(value)).to_bytes()


def presence_frame(present: bool, *, frame_id: int = 0) -> bytes:
    """A human-detection report."""
    return TinyFrameFrame(frame_id, PRESENCE, bytes((int(present),))).to_bytes()


def distance_frame(metres: float | None, *, frame_id: int = 0) -> bytes:
    """A distance report (None: no target)."""
    return TinyFrameFrame(frame_id, DISTANCE,
                          _DISTANCE.pack(0 if metres is None else 1, metres or 0.0)).to_bytes()
