"""Keeping a stop a stop.

Python 3.11's ``asyncio.wait_for`` (which pymodbus uses), aiomqtt's disconnect
and TaskGroup error handling can turn a cancellation that races with I/O into
an ordinary error. A retry loop that catches that error would then retry
forever and the gateway would never stop. Loops call this where they catch
errors: if the current task is being cancelled, the cancellation wins.

Caveat: on Python 3.11 a TaskGroup whose child fails leaves its parent task
marked as cancelling for good, so a task that calls this must not host such a
TaskGroup (gateway.runtime.mqtt_link runs its loops with asyncio.wait for that reason).
"""

from __future__ import annotations

import asyncio


def raise_if_stopping() -> None:
    """Raise CancelledError if the current task has a cancellation pending."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
