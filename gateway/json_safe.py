"""JSON that every strict client can read: the one way the gateway writes JSON.

JSON has no NaN or infinity. Python's ``json`` writes them as bare ``NaN`` /
``Infinity`` unless told not to, and a strict parser on the other side (a browser's
``JSON.parse`` is lenient, Go's and Rust's are not) then rejects the whole message:
an alarm that nobody can read. Here they become ``null``.
"""

from __future__ import annotations

import json
import math


def dumps(obj: object, *, compact: bool = True, ensure_ascii: bool = False) -> str:
    """``obj`` as JSON text; non-finite floats anywhere in it become ``null``."""
    separators = (",", ":") if compact else None
    try:
        return json.dumps(obj, ensure_ascii=ensure_ascii, allow_nan=False, separators=separators)
    except ValueError:  # a NaN or infinity somewhere: rebuild without them (rare path)
        return json.dumps(finite_only(obj), ensure_ascii=ensure_ascii, allow_nan=False,
                          separators=separators)


def dumps_bytes(obj: object) -> bytes:
    """Compact UTF-8 JSON for MQTT payloads and HTTP bodies."""
    return dumps(obj).encode()


def finite_only(obj: object) -> object:
    """A copy of ``obj`` with NaN and infinities replaced by ``None``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_only(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_only(v) for v in obj]
    return obj
