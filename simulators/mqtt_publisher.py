"""What simulated MQTT devices publish through: QoS 1, in order, riding out broker restarts.

Messages are queued and published by one task that reconnects (every 0.5 s)
while the broker is away, as a device's firmware would, so a simulator keeps
running through a broker restart and loses nothing it has queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque

import aiomqtt

from gateway.cancellation import raise_if_stopping

RECONNECT_S = 0.5
#: Faults an MQTT device simulator can play: publish nothing, or garble its messages.
FAULTS = ("silence", "malformed")


def iso_ms(ts: float) -> str:
    """A device's timestamp: ISO 8601 UTC with milliseconds (``2024-05-01T08:15:30.120Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def check_fault(fault: str | None) -> str | None:
    """``fault`` if it is one of ``FAULTS`` (or None); ValueError otherwise."""
    if fault is not None and fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; faults: {', '.join(FAULTS)}")
    return fault


class MqttPublisher:
    """``async with MqttPublisher(host=..., port=..., client_id=...) as pub: pub.publish(t, p)``."""

    def __init__(self, *, host: str, port: int, client_id: str):
        self.host = host
        self.port = port
        self.client_id = client_id
        self.sent = 0
        self.connected = asyncio.Event()
        self._pending: deque[tuple[str, bytes]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> "MqttPublisher":
        self._task = asyncio.create_task(self._run(), name=f"sim-mqtt[{self.client_id}]")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def publish(self, topic: str, payload: bytes) -> None:
        """Queue one message (QoS 1, not retained)."""
        self._pending.append((topic, payload))
        self._idle.clear()
        self._wake.set()

    def publish_doc(self, topic: str, doc: dict, *, fault: str | None, bare: dict) -> bool:
        """Queue ``doc`` as JSON the way a device with ``fault`` sends it; whether it went out.

        ``silence`` sends nothing; ``malformed`` follows the real message with a
        truncated copy and ``bare`` (the device's id and nothing else).
        """
        if fault == "silence":
            return False
        payload = json.dumps(doc).encode()
        self.publish(topic, payload)
        if fault == "malformed":
            self.publish(topic, payload[: len(payload) // 2])
            self.publish(topic, json.dumps(bare).encode())
        return True

    @property
    def pending(self) -> int:
        """Messages not yet acknowledged by the broker."""
        return len(self._pending)

    async def flush(self) -> None:
        """Wait until the broker has acknowledged everything queued so far."""
        await self._idle.wait()

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(self.host, self.port, identifier=self.client_id,
                                          timeout=5) as client:
                    self.connected.set()
                    while True:
                        # A cancel that arrived while connecting can be lost inside the
                        # client's connect timeout (Python 3.11's asyncio.timeout); the
                        # task still counts it, so honour it here rather than wait forever.
                        raise_if_stopping()
                        while self._pending:
                            topic, payload = self._pending[0]
                            await client.publish(topic, payload, qos=1)
                            self._pending.popleft()
                            self.sent += 1
                        self._idle.set()
                        self._wake.clear()
                        await self._wake.wait()
            except aiomqtt.MqttError:
                self.connected.clear()
                # Cancelled, and the disconnect on the way out failed too (the broker
                # stopping at the same moment): its error must not swallow the cancel.
                raise_if_stopping()
                await asyncio.sleep(RECONNECT_S)
