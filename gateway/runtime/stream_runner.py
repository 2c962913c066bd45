"""Runs one streaming device (serial frames, MQTT topics): the device talks, we listen.

The driver's ``stream(emit)`` delivers readings and events until its connection
fails (it raises a DriverError); this runner reopens it with capped, jittered
backoff. The device is online while data flows: the first item after a
(re)connect brings it online, and ``silence_timeout`` seconds without any item
(or a failed connection) take it offline, each logged once with an alarm.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from gateway.backoff import Backoff
from gateway.cancellation import raise_if_stopping
from gateway.errors import DriverError
from gateway.device_health import DeviceHealth
from gateway.log_limit import LogLimit, held_note
from gateway.readings import DeviceEvent, Reading

log = logging.getLogger(__name__)

Item = Reading | DeviceEvent
Emit = Callable[[list[Item]], Awaitable[None]]


class StreamingDriver(Protocol):
    """What the runtime needs from a driver that pushes data."""

    async def stream(self, emit: Emit) -> None: ...

    async def close(self) -> None: ...


class StreamRunner:
    """Keeps one streaming driver connected for as long as the gateway runs."""

    def __init__(self, *, device_id: str, driver: StreamingDriver, silence_timeout: float | None,
                 emit: Emit, on_offline: Callable[[str, str], None],
                 on_online: Callable[[str], None], clock, backoff_cap: float = 30.0,
                 health: DeviceHealth | None = None):
        self.device_id = device_id
        self.driver = driver
        self.silence_timeout = silence_timeout
        self.health = health or DeviceHealth(device_id)  # carried over by a reload
        self._emit = emit
        self._on_offline = on_offline
        self._on_online = on_online
        self._clock = clock
        self._backoff_cap = backoff_cap
        self._last_item = 0.0
        self._bug_log = LogLimit()  # a driver bug's traceback: the first, then one a period

    async def run(self) -> None:
        """Stream until cancelled; never raises anything but CancelledError."""
        backoff = Backoff(initial=0.5, cap=self._backoff_cap)
        async with asyncio.TaskGroup() as tg:
            if self.silence_timeout:
                tg.create_task(self._watch_silence(), name=f"silence[{self.device_id}]")
            while True:
                try:
                    await self.driver.stream(self._deliver)
                    detail = "stream ended"
                except DriverError as exc:
                    detail = exc.detail  # the device id is said by whoever logs it
                except Exception as exc:  # a bug in a driver stays inside this device
                    held = self._bug_log.allow(type(exc))
                    if held is not None:
                        log.exception("%s: unexpected error in driver%s", self.device_id,
                                      held_note(held))
                    detail = f"internal error: {exc!r}"
                raise_if_stopping()  # a library turned our stop into its own error
                self.health.errors += 1
                self.health.consecutive_errors += 1
                self.health.last_error = detail
                self._go_offline(detail)
                if self.health.last_success is not None and self.health.consecutive_errors == 1:
                    backoff.reset()  # it worked before: retry soon
                await asyncio.sleep(backoff.next_delay())

    async def _deliver(self, items: list[Item]) -> None:
        h = self.health
        h.polls += 1
        h.consecutive_errors = 0
        h.last_success = self._clock.time()
        self._last_item = asyncio.get_running_loop().time()
        if h.online is not True:
            if h.online is False:
                log.info("%s: back online", self.device_id)
                self._on_online(self.device_id)
            h.online = True
        await self._emit(items)

    async def _watch_silence(self) -> None:
        loop = asyncio.get_running_loop()
        limit = float(self.silence_timeout or 0)
        self._last_item = loop.time()
        while True:
            quiet = loop.time() - self._last_item
            if quiet >= limit:
                self._go_offline(f"silent for {quiet:.0f}s")
                await asyncio.sleep(limit)
            else:
                await asyncio.sleep(limit - quiet)

    def _go_offline(self, detail: str) -> None:
        if self.health.online is not False:
            self.health.online = False
            log.error("%s: offline: %s", self.device_id, detail)
            self._on_offline(self.device_id, detail)
