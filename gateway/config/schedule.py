"""Arming schedules: ``always``, ``never`` or daily windows in the gateway's local time."""

from __future__ import annotations

import time

_LOOKAHEAD_MIN = 8 * 24 * 60  # a weekly schedule changes within this many minutes


class Schedule:
    """``always``, ``never`` or daily windows ``["22:00-06:00", "12:00-13:30"]`` (local time)."""

    def __init__(self, spec: str | list[str]):
        self.text = spec if isinstance(spec, str) else ", ".join(spec)
        self.always = spec == "always"
        self.never = spec == "never" or spec == []
        self._windows: list[tuple[int, int]] = []
        if not (self.always or self.never):
            for window in ([spec] if isinstance(spec, str) else spec):
                self._windows.append(_parse_window(window))

    def armed_at(self, ts: float) -> bool:
        """Whether the schedule arms at wall-clock time ``ts``."""
        if self.always or self.never:
            return self.always
        t = time.localtime(ts)
        minute = t.tm_hour * 60 + t.tm_min
        return any((a <= minute < b) if a < b else (minute >= a or minute < b)
                   for a, b in self._windows)

    def next_change(self, ts: float) -> float | None:
        """When the schedule next flips after ``ts`` (None: never)."""
        if self.always or self.never:
            return None
        now = self.armed_at(ts)
        start = ts - ts % 60 + 60
        for i in range(_LOOKAHEAD_MIN):
            at = start + i * 60
            if self.armed_at(at) != now:
                return at
        return None


def _parse_window(text: str) -> tuple[int, int]:
    try:
        a, b = text.split("-")
        return _minute(a), _minute(b)
    except ValueError:
        raise ValueError(f"a window is 'HH:MM-HH:MM' (e.g. 22:00-06:00), not {text!r}") from None


def _minute(text: str) -> int:
    hours, minutes = text.strip().split(":")
    h, m = int(hours), int(minutes)
    if not (0 <= h <= 24 and 0 <= m < 60 and h * 60 + m <= 1440):
        raise ValueError(text)
    return h * 60 + m
