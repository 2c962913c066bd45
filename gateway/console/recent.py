"""The last hour of each device's readings, for the console's device charts.

Sampled from the pipeline's latest reading per (device, channel) every
``interval`` seconds (a new reading only: an offline device leaves a gap), so the
chart costs nothing per reading and its memory is bounded: ``window / interval``
samples per channel. The time series database keeps everything; this is only
what a guard looks at on the gateway itself, with no outside service.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from gateway.readings import Reading

SAMPLE_SECONDS = 10.0
WINDOW_SECONDS = 3600.0


class RecentReadings:
    """``recent.series(device, field)`` -> ``{channel: [(ts, value), ...]}``, oldest first."""

    def __init__(self, *, latest: Callable[[], Mapping[tuple[str, int | None], Reading]],
                 interval: float = SAMPLE_SECONDS, window: float = WINDOW_SECONDS):
        self._latest = latest
        self.interval = interval
        self.window = window
        self._samples: dict[tuple[str, int | None], deque[tuple[float, dict[str, float]]]] = {}

    def sample(self) -> None:
        """Take each channel's latest reading, if it is newer than the last one taken."""
        size = max(2, int(self.window / self.interval) + 1)
        for key, reading in list(self._latest().items()):
            samples = self._samples.get(key)
            if samples is None:
                samples = self._samples[key] = deque(maxlen=size)
            if not samples or samples[-1][0] < reading.ts:
                samples.append((reading.ts, dict(reading.values)))

    def series(self, device: str, field: str, *, now: float) -> dict[int | None, list[tuple[float, float]]]:
        """The field's finite values per channel within the window before ``now``."""
        out: dict[int | None, list[tuple[float, float]]] = {}
        since = now - self.window
        for (dev, channel), samples in self._samples.items():
            if dev != device:
                continue
            points = [(ts, v[field]) for ts, v in samples
                      if ts >= since and field in v and math.isfinite(v[field])]
            if points:
                out[channel] = points
        return out

    def fields(self, device: str) -> list[str]:
        """Every field kept for a device, in the order first seen."""
        seen: dict[str, None] = {}
        for (dev, _), samples in self._samples.items():
            if dev == device and samples:
                seen.update(dict.fromkeys(samples[-1][1]))
        return list(seen)

    async def run(self) -> None:
        """Sample until cancelled."""
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    async def context(self, _app: Any) -> AsyncIterator[None]:
        """The HTTP app's cleanup context (gateway.operations.http_app): sample while
        the HTTP server runs."""
        task = asyncio.create_task(self.run(), name="console-recent-readings")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
