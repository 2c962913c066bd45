"""A breathing and heart-rate radar (MR60BHA2) over an elder's bed, on a serial line.

Every ``interval`` seconds it writes what it "sees" as real TinyFrame frames:
presence, and while someone is there the distance, breath rate and heart rate.
Scenarios (``incident_after`` seconds in):

- ``normal``: a resident resting, about 14 breaths and 68 beats a minute;
- ``no-breathing``: the resident is there but the breath rate drops to 0 (apnoea,
  or worse): the level-1 case;
- ``fast-breathing``: the breath rate climbs to about 32 a minute (out of band);
- ``away``: nobody home from the start.

Faults: ``silence`` (no output at all), ``garbage`` (random bytes between frames),
``bad_checksum`` (one frame in three with a broken data checksum).

By hand: ``community-gateway simulate health-radar --scenario no-breathing --serial pty``.
"""

from __future__ import annotations

import asyncio
import logging
import random

import serial_asyncio_fast

from drivers.serial_frames import mr60bha2
from simulators.background import cancel_and_wait
from simulators.ptypair import PtyPair

log = logging.getLogger(__name__)

SCENARIOS: dict[str, str] = {
    "normal": "a resident resting: about 14 breaths and 68 beats a minute",
    "no-breathing": "present, then the breath rate drops to 0 at the incident time",
    "fast-breathing": "present, then about 32 breaths a minute at the incident time",
    "away": "nobody home",
}
FAULTS = ("silence", "garbage", "bad_checksum")


class HealthRadarSimulator:
    """``async with HealthRadarSimulator(serial=pair.b, scenario="no-breathing") as sim``."""

    def __init__(self, *, serial: str, scenario: str = "normal", incident_after: float = 10.0,
                 interval: float = 1.0, baudrate: int = 115200, faults: list[str] | None = None,
                 seed: int | None = None):
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; scenarios: {sorted(SCENARIOS)}")
        for fault in faults or ():
            if fault not in FAULTS:
                raise ValueError(f"unknown fault {fault!r}; faults: {list(FAULTS)}")
        self.serial = serial
        self.scenario = scenario
        self.incident_after = incident_after
        self.interval = interval
        self.baudrate = baudrate
        self.faults = set(faults or ())
        self.present = scenario != "away"
        self.breath_rate = 14.0
        self.heart_rate = 68.0
        self.frames_sent = 0
        self._rng = random.Random(seed)
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task | None = None
        self._started = 0.0

    async def __aenter__(self) -> "HealthRadarSimulator":
        _, self._writer = await serial_asyncio_fast.open_serial_connection(
            url=self.serial, baudrate=self.baudrate)
        self._started = asyncio.get_running_loop().time()
        self._task = asyncio.create_task(self._run(), name="sim-health-radar")
        return self

    async def __aexit__(self, *exc) -> None:
        await cancel_and_wait([self._task])
        if self._writer is not None:
            self._writer.close()

    def _frames(self, elapsed: float) -> list[bytes]:
        incident = elapsed >= self.incident_after
        if incident and self.scenario == "no-breathing":
            self.breath_rate = 0.0
        elif incident and self.scenario == "fast-breathing":
            self.breath_rate = 32.0 + self._rng.uniform(-1, 1)
        elif self.present:
            self.breath_rate = 14.0 + self._rng.uniform(-1, 1)
        frames = [mr60bha2.presence_frame(self.present)]
        if self.present:
            self.heart_rate = 68.0 + self._rng.uniform(-3, 3)
            frames += [mr60bha2.distance_frame(0.8),
                       mr60bha2.rate_frame(mr60bha2.BREATH_RATE, self.breath_rate),
                       mr60bha2.rate_frame(mr60bha2.HEART_RATE, self.heart_rate)]
        else:
            frames.append(mr60bha2.distance_frame(None))
        return frames

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if "silence" not in self.faults:
                out = bytearray()
                for i, frame in enumerate(self._frames(loop.time() - self._started)):
                    if "bad_checksum" in self.faults and self._rng.randrange(3) == 0:
                        frame = frame[:-1] + bytes(((frame[-1] + 1) & 0xFF,))
                    if "garbage" in self.faults:
                        out += bytes(self._rng.randrange(256) for _ in range(5))
                    out += frame
                    self.frames_sent += 1
                assert self._writer is not None
                self._writer.write(bytes(out))
                await self._writer.drain()
            await asyncio.sleep(self.interval)


async def run_health_radar(*, scenario: str, serial: str, baudrate: int, incident_after: float,
                           interval: float, faults: list[str]) -> None:
    """``simulate health-radar``: run until cancelled (``serial="pty"`` makes a pty pair)."""
    if serial == "pty":
        async with PtyPair() as pair:
            print(f"health radar on a pty: point the gateway's serial port at {pair.link_a}",
                  flush=True)
            async with HealthRadarSimulator(serial=pair.b, scenario=scenario,
                                            incident_after=incident_after, interval=interval,
                                            baudrate=baudrate, faults=faults):
                await asyncio.Event().wait()
    async with HealthRadarSimulator(serial=serial, scenario=scenario, incident_after=incident_after,
                                    interval=interval, baudrate=baudrate, faults=faults):
        print(f"health radar writing on {serial} ({scenario})", flush=True)
        await asyncio.Event().wait()
