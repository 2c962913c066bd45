"""Runs one device: polls on its interval, tracks health, retries with backoff.

Written once here so drivers only speak their protocol. A device that fails
``offline_after`` polls in a row is declared offline (one ERROR line, an alarm)
and retried with capped, jittered backoff; the first good poll brings it back
(one INFO line, the alarm clears).
"""

from __future__ import annotations

import asyncio
import zlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from gateway.backoff import Backoff
from gateway.cancellation import raise_if_stopping
from gateway.errors import DriverError, DriverTimeout
from gateway.device_health import DeviceHealth
from gateway.log_limit import LogLimit, held_note
from gateway.readings import Reading

log = logging.getLogger(__name__)


class PollingDriver(Protocol):
    """What the runtime needs from a driver that is polled."""

    async def poll(self) -> list[Reading]: ...

    async def write(self, channel: int | None, field: str, value: float) -> None: ...

    async def close(self) -> None: ...


def first_gap_after_start(device_id: str, interval: float) -> float:
    """Seconds from a device's first poll to its second; every later gap is ``interval``.

    Each device keeps its own phase within the interval (a stable hash of its id), so
    a thousand devices configured alike do not all poll in the same instant and stall
    the loop for everyone. At a second or more the first gap is lengthened (by under a
    second). Below a second it is shortened instead (the second poll comes sooner, at
    a fraction of the interval): no gap is ever longer than the interval, so a
    momentary input, a door contact's, is not missed; 100 devices at 100 ms polled in
    one loop turn held the loop ~5 ms on an idle core, 10-15 on a loaded one (issue 16:
    loop lag p99 <= 20 ms).
    """
    share = (zlib.crc32(device_id.encode()) % 1000 + 1) / 1000
    return interval + share if interval >= 1.0 else share * interval


class DeviceRunner:
    """Polls one driver for as long as the gateway runs."""

    def __init__(self, *, device_id: str, driver: PollingDriver, interval: float,
                 offline_after: int, emit: Callable[[list[Reading]], Awaitable[None]],
                 on_offline: Callable[[str, str], None], on_online: Callable[[str], None],
                 clock, health: DeviceHealth | None = None):
        self.device_id = device_id
        self.driver = driver
        self.interval = interval
        self.offline_after = offline_after
        self.health = health or DeviceHealth(device_id)  # carried over by a reload
        self._emit = emit
        self._on_offline = on_offline
        self._on_online = on_online
        self._clock = clock
        # A poll that hangs (a driver bug, a wedged adapter) must not stall the device forever.
        self._poll_limit = max(10.0, 5 * interval)
        # A driver bug's traceback: the first, then one a period (not once ever: a second
        # incident must show; not every poll: a flapping device must not flood the journal).
        self._bug_log = LogLimit()

    async def run(self) -> None:
        """Poll until cancelled; never raises anything but CancelledError."""
        backoff = Backoff(initial=min(1.0, self.interval), cap=max(5.0, 10 * self.interval))
        loop = asyncio.get_running_loop()
        due = loop.time()
        # The first poll at once; then each device keeps its own phase (first_gap).
        first_gap: float | None = first_gap_after_start(self.device_id, self.interval)
        while True:
            started = loop.time()
            try:
                readings = await self._poll_once()
            except DriverError as exc:
                delay = self._failed(exc.detail, backoff)
                await asyncio.sleep(delay)
                due = loop.time()
                continue
            except Exception as exc:  # a bug in a driver stays inside this device
                held = self._bug_log.allow(type(exc))
                if held is not None:
                    log.exception("%s: unexpected error in driver%s", self.device_id, held_note(held))
                await asyncio.sleep(self._failed(f"internal error: {exc!r}", backoff))
                due = loop.time()
                continue
            self._succeeded(loop.time() - started)
            backoff.reset()
            await self._emit(readings)
            if first_gap is not None:
                due += first_gap
                first_gap = None
            else:
                due += self.interval
            now = loop.time()
            if due < now:  # fell behind (slow bus): skip to the next slot, do not burst
                skipped = (now - due) // self.interval + 1
                self.health.missed_slots += int(skipped)
                due += skipped * self.interval
            await asyncio.sleep(due - now)

    async def _poll_once(self) -> list[Reading]:
        try:
            async with asyncio.timeout(self._poll_limit):
                return await self.driver.poll()
        except TimeoutError as exc:
            raise DriverTimeout(self.device_id, f"poll took over {self._poll_limit:.0f}s") from exc
        finally:
            # Python 3.11's asyncio.wait_for (pymodbus waits for replies with it) can
            # swallow a cancellation that races with the reply; the runner would then
            # poll on and the gateway never stop. A stop must not be lost.
            raise_if_stopping()

    def _succeeded(self, elapsed: float) -> None:
        h = self.health
        h.polls += 1
        h.consecutive_errors = 0
        h.last_success = self._clock.time()
        h.response_time = elapsed
        if h.online is not True:
            if h.online is False:
                log.info("%s: back online", self.device_id)
                self._on_online(self.device_id)
            h.online = True

    def _failed(self, detail: str, backoff: Backoff) -> float:
        h = self.health
        h.polls += 1
        h.errors += 1
        h.consecutive_errors += 1
        h.last_error = detail
        if h.consecutive_errors >= self.offline_after:
            if h.online is not False:
                h.online = False
                log.error("%s: offline: %s", self.device_id, detail)
                self._on_offline(self.device_id, detail)
            return backoff.next_delay()
        return self.interval
