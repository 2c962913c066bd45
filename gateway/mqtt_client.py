"""aiomqtt's client, with waits that a stop always ends.

aiomqtt waits for every CONNACK, SUBACK, PUBACK and for its disconnect with
``asyncio.wait_for``. On Python 3.11 ``wait_for`` returns the answer and drops the
task's cancellation when both arrive in the same loop iterations, so a task stopped
just as the broker answered carries on as if nothing had happened. The hub's link
then waited for its connection to drop, for ever (seen once in CI, reproduced by
tests/test_hub_link_stop.py). ``StopSafeClient`` waits under ``asyncio.timeout``
instead, where a cancellation always wins: same deadline, same ``MqttError``.

The override is of aiomqtt's private ``_wait_for`` (aiomqtt 2.x); the tests above
fail if an upgrade stops calling it. (``gateway.cancellation.raise_if_stopping``
covers the stock client where it is still used.)
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from typing import TypeVar

import aiomqtt

T = TypeVar("T")


class StopSafeClient(aiomqtt.Client):
    """``aiomqtt.Client`` whose waits for the broker never swallow a cancellation."""

    async def _wait_for(self, fut: Awaitable[T], timeout: float | None) -> T:
        if timeout is None:
            timeout = self.timeout
        try:
            async with asyncio.timeout(None if timeout == math.inf else timeout):
                return await fut
        except TimeoutError:
            raise aiomqtt.MqttError("Operation timed out") from None
