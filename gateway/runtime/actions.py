"""Device writes ordered by rules (cut a charging port, release a lock).

A write is retried a few times, then verified by reading the point back; a
write that does not take raises an urgent alarm, because a port that should
be dead and is not is exactly the fire this gateway is here to prevent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.errors import DriverError

log = logging.getLogger(__name__)

ACTUATION_FAILED = "actuation_failed"


class ActionRunner:
    """Runs device writes as named tasks, so the pipeline never waits on a bus."""

    def __init__(self, *, drivers: dict[str, object], attempts: int = 3,
                 on_failure: Callable[[str, int | None, str, str], None]):
        self._drivers = drivers
        self._attempts = attempts
        self._on_failure = on_failure
        self._tasks: set[asyncio.Task] = set()
        # Timed outputs (a siren for 60 s): the pending switch-back per point; a new
        # trigger restarts the time.
        self._reverts: dict[tuple[str, int | None, str], asyncio.Task] = {}
        self.done = 0
        self.failed = 0

    def submit(self, device: str, channel: int | None, field: str, value: float, *,
               revert_after: float | None = None, revert_value: float = 0.0) -> None:
        """Start a write in the background; with ``revert_after``, write ``revert_value``
        that many seconds later (counted again from the latest such write)."""
        key = (device, channel, field)
        pending = self._reverts.pop(key, None)
        if pending is not None:
            pending.cancel()
        name = f"action[{device}:{channel}:{field}]"
        if revert_after is None:
            coro = self._write(device, channel, field, value)
        else:
            coro = self._write_for(key, value, revert_after, revert_value)
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if revert_after is not None:
            self._reverts[key] = task

    async def _write_for(self, key: tuple[str, int | None, str], value: float, seconds: float,
                         revert_value: float) -> None:
        device, channel, field = key
        await self._write(device, channel, field, value)
        await asyncio.sleep(seconds)
        self._reverts.pop(key, None)
        await self._write(device, channel, field, revert_value)

    async def _write(self, device: str, channel: int | None, field: str, value: float) -> None:
        driver = self._drivers.get(device)
        error = "device has no driver that can write"
        for attempt in range(self._attempts):
            if driver is None:
                break
            try:
                await driver.write(channel, field, value)  # type: ignore[attr-defined]
                read_back = getattr(driver, "read_back", None)
                if read_back is not None:
                    seen = await read_back(channel, field)
                    if abs(seen - value) > 1e-6:
                        raise DriverError(device, f"{field} reads {seen} after writing {value}")
                self.done += 1
                log.info("%s: wrote %s=%s on channel %s", device, field, value, channel)
                return
            except DriverError as exc:
                error = str(exc)
            except Exception as exc:  # a driver bug must raise the alarm, not die in the task
                log.exception("%s: unexpected error writing %s", device, field)
                error = f"internal error: {exc!r}"
            if attempt + 1 < self._attempts:  # the alarm does not wait after the last one
                await asyncio.sleep(0.2 * (attempt + 1))
        self.failed += 1
        log.error("%s: write %s=%s on channel %s failed: %s", device, field, value, channel, error)
        self._on_failure(device, channel, field, error)

    async def wait_idle(self, *, timed: bool = True) -> None:
        """Wait for writes under way (used at shutdown and by tests); with ``timed=False``
        not for the switch-back of a timed output (a siren's minute must not hold up a
        stop: ``cancel()`` then ends it, and the output stays as it is)."""
        while True:
            waiting = self._tasks if timed else self._tasks - set(self._reverts.values())
            if not waiting:
                return
            await asyncio.gather(*list(waiting), return_exceptions=True)

    async def cancel(self) -> None:
        """Stop the writes still under way (at shutdown, once their time is up)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
