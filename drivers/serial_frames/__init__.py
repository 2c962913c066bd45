"""Frame codecs for the UART radars (fall detection; breathing and heart rate): parse, check, interpret, build.

Pure code, no I/O: a driver feeds the bytes it reads and writes the frames built here.
Command builders live in the protocol modules (``mr60fda1.query``,
``tinyframe.get_parameters``, ...).
"""

from __future__ import annotations

from . import mr60bha2, mr60fda1, tinyframe
from .codec import COUNTER_NAMES, Decoded, FrameCodec, RadarEvent
from .mr60bha2 import Mr60bha2Codec
from .mr60fda1 import Mr60fda1Codec, Mr60fda1Frame
from .tinyframe import TinyFrameCodec, TinyFrameFrame

#: Codec class by the protocol name a device config gives.
CODECS: dict[str, type[FrameCodec]] = {
    "mr60fda1": Mr60fda1Codec,
    "ld6002c": TinyFrameCodec,
    "mr60fda2": TinyFrameCodec,
    "mr60bha2": Mr60bha2Codec,  # breathing and heart-rate radar
}

__all__ = [
    "CODECS",
    "COUNTER_NAMES",
    "Decoded",
    "FrameCodec",
    "Mr60bha2Codec",
    "Mr60fda1Codec",
    "Mr60fda1Frame",
    "RadarEvent",
    "TinyFrameCodec",
    "TinyFrameFrame",
    "mr60bha2",
    "mr60fda1",
    "tinyframe",
]
