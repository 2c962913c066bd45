"""A generated source: random walks, for benchmarks and trials without hardware."""

from __future__ import annotations

import random

from gateway.readings import Reading


class SyntheticDevice:
    """Produces one reading per channel per poll, each field a bounded random walk."""

    def __init__(self, *, device_id: str, fields: list[str], channels: int | None, clock,
                 seed: int | None = None):
        self.device_id = device_id
        self._fields = list(fields)
        self._channels: list[int | None] = list(range(1, channels + 1)) if channels else [None]
        self._clock = clock
        self._rng = random.Random(seed)
        self._values = {(ch, f): self._rng.uniform(10, 90) for ch in self._channels
                        for f in self._fields}

    async def poll(self) -> list[Reading]:
        """The next step of every walk."""
        ts = self._clock.time()
        rnd = self._rng.random
        out = []
        for ch in self._channels:
            values = {}
            for f in self._fields:
                v = self._values[(ch, f)] + (rnd() - 0.5)
                v = 0.0 if v < 0 else 100.0 if v > 100 else v
                self._values[(ch, f)] = values[f] = v
            out.append(Reading(self.device_id, ch, values, ts))
        return out

    async def write(self, channel: int | None, field: str, value: float) -> None:
        """Set a walk's current value (actions in trials)."""
        self._values[(channel, field)] = float(value)

    async def close(self) -> None:
        """Nothing to release."""
