"""What a ceiling fall-detection radar sees in a room, scenario by scenario.

``RadarModel`` is pure: it maps the time since it started to a ``RoomState``
(presence, motion, body movement, fall, stationary dwell, target height). The
frames that carry that state are ``simulators.radar``'s business.

After a fall the person lies on the floor: still there (presence 1), not moving
(motion 1 "still", body movement 0), low (target height about 0.3 m), and after
``dwell_after`` more seconds the radar reports stationary dwell. That "no motion
after a fall" is what confirms a fall before the highest alarm level.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gateway.clock import SystemClock

SCENARIOS = {
    "normal": "a normal day, repeating: nobody, someone comes in and moves about, sits "
              "still, moves again, leaves",
    "fall": "someone comes in moving, falls after FALL_AFTER s, then lies still (no body "
            "movement; stationary dwell after DWELL_AFTER s more)",
    "empty": "nobody in the room",
}

# A normal day as fractions of its length: (until, presence, motion)
_DAY = ((0.10, 0, 0), (0.45, 1, 2), (0.75, 1, 1), (0.90, 1, 2), (1.00, 0, 0))


@dataclass(frozen=True, slots=True)
class RoomState:
    """What the radar reports at one instant."""

    presence: int  # 0 nobody, 1 somebody
    motion: int  # 0 none, 1 still, 2 moving
    body_movement: int  # 0..100
    fall: int  # 0/1
    stationary_dwell: int  # 0/1: someone motionless for long
    target_height: float | None  # metres above the floor; None when nobody is there


EMPTY = RoomState(0, 0, 0, 0, 0, None)


class RadarModel:
    """A room under a radar, following one scenario from the moment it is created."""

    def __init__(self, *, scenario: str = "normal", fall_after: float = 10.0,
                 dwell_after: float = 10.0, day_length: float = 60.0, seed: int | None = None,
                 clock=None):
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; known: {sorted(SCENARIOS)}")
        if fall_after < 0 or dwell_after < 0 or day_length <= 0:
            raise ValueError("fall_after and dwell_after must be >= 0, day_length > 0")
        self.scenario = scenario
        self.fall_after = fall_after
        self.dwell_after = dwell_after
        self.day_length = day_length
        self._clock = clock or SystemClock()
        self._rng = random.Random(seed)
        self._start = self._clock.monotonic()

    @property
    def elapsed(self) -> float:
        """Seconds since the scenario started."""
        return self._clock.monotonic() - self._start

    def trigger_fall(self) -> None:
        """Make the person fall now (switches to the ``fall`` scenario, past its start)."""
        self.scenario = "fall"
        self._start = self._clock.monotonic() - self.fall_after

    def state(self) -> RoomState:
        """The room now."""
        t = self.elapsed
        if self.scenario == "empty":
            return EMPTY
        if self.scenario == "fall":
            if t < self.fall_after:
                return self._person(2)
            dwell = int(t >= self.fall_after + self.dwell_after)
            return RoomState(1, 1, 0, 1, dwell, round(self._rng.uniform(0.2, 0.4), 2))
        phase = (t % self.day_length) / self.day_length
        for until, presence, motion in _DAY:
            if phase < until:
                return self._person(motion) if presence else EMPTY
        return EMPTY

    def _person(self, motion: int) -> RoomState:
        rnd = self._rng.uniform
        if motion == 2:
            return RoomState(1, 2, int(rnd(30, 70)), 0, 0, round(rnd(1.0, 1.4), 2))
        return RoomState(1, 1, int(rnd(1, 10)), 0, 0, round(rnd(0.7, 0.9), 2))
