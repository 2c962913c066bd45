"""An asyncio event loop in virtual time, for tests of schedules and delays."""

from __future__ import annotations

import asyncio


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to its next timer instead of waiting for it.

    The runner schedules with ``loop.time()`` and ``asyncio.sleep``; on this loop a test
    reads the exact instant of every poll without sleeping or timing anything.
    """

    def __init__(self) -> None:
        super().__init__()
        # Not 0: a loop's clock is time since boot, and a schedule that sets an instant
        # where it should add to one (due = gap, not due += gap) is only wrong away from 0.
        self._now = 1000.0
        real, loop = self._selector, self

        class JumpingSelector:
            def select(self, timeout=None):
                ready = real.select(None if timeout is None else 0)
                if not ready and timeout:
                    loop._now += timeout
                return ready

            def __getattr__(self, name):
                return getattr(real, name)

        self._selector = JumpingSelector()

    def time(self) -> float:
        return self._now
