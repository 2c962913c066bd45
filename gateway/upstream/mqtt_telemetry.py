"""MQTT telemetry sink: readings as JSON on ``{prefix}/{site}/telemetry/{device_id}``, QoS 1.

One message per device and batch: a JSON array of the readings' (and events')
objects, oldest first (see gateway.upstream.telemetry_json for one object). The
sink runner sends what came since its last batch, so at a steady load that is one
message per device and poll; a backlog drains in larger arrays. Fewer, larger
messages cost the broker, the subscriber and the Pi far less than one per reading.

It has its own connection (client id ``<gateway client id>-telemetry``), apart
from the one that carries alarms: a backlog of telemetry draining after an outage
never queues in front of an alarm, and a slow telemetry consumer never holds the
alarm connection back. A batch counts as written once the broker has answered
every message with its PUBACK; if the connection fails first, the whole batch is
retried (QoS 1 is at least once: a subscriber may see a message twice).

Messages go straight to paho (under aiomqtt) with a bounded in-flight window,
counted by this sink's own PUBACK hook: aiomqtt's ``publish`` arms a timer per
message and its pending-call bookkeeping grows with the square of the messages in
flight, which stalled the event loop for 100+ ms at a few thousand readings a second.
Here one timeout covers the whole batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

from gateway.config.models import MqttConfig
from gateway.errors import SinkRetryable
from gateway.mqtt_client import StopSafeClient
from gateway.mqtt_tls import tls_context

log = logging.getLogger(__name__)

# Messages in flight (sent, PUBACK not yet in): enough to keep the link busy, and
# far below the 65,535 message ids MQTT has.
WINDOW = 1000
# Messages handed to paho between two yields to the event loop: a batch of 100
# devices' messages in one go held the loop ~8 ms on a loaded core (issue 16: loop
# lag p99 <= 20 ms with polls, the pipeline and the other sink due at the same time).
SLICE = 20
GROUP_SLICE = 2000  # rows grouped by device between two yields


class MqttTelemetrySink:
    """Publishes ``(device, json)`` items; connects on first use and after a failure."""

    payload = "doc"  # what it takes from the outbox: (device, telemetry JSON) per row

    def __init__(self, *, config: MqttConfig, site_id: str, password: str | None = None,
                 name: str = "mqtt-telemetry", timeout: float = 10.0):
        self.name = name
        self.config = config
        self.base = f"{config.prefix}/{site_id}/telemetry/"
        self.client_id = f"{config.client_id or f'gateway-{site_id}'}-telemetry"
        self._password = password
        self._timeout = timeout
        self._client: aiomqtt.Client | None = None
        self._inflight: set[int] = set()  # message ids waiting for their PUBACK
        self._acked = asyncio.Event()  # set when a PUBACK (or a disconnect) came
        self._lost: str | None = None  # why the connection went, once it did
        self.published = 0  # readings and events confirmed
        self.messages = 0  # MQTT messages confirmed

    async def write(self, items: list[tuple[str, str]]) -> None:
        """Publish one batch (a message per device) and wait for every PUBACK; all or nothing."""
        by_device: dict[str, list[str]] = {}
        for n, (device, doc) in enumerate(items, 1):
            docs = by_device.get(device)
            if docs is None:
                by_device[device] = [doc]
            else:
                docs.append(doc)
            if n % GROUP_SLICE == 0:
                await asyncio.sleep(0)  # a backlog's batch (20,000 rows) in several loop turns
        base = self.base
        messages = [(base + device, f"[{','.join(docs)}]") for device, docs in by_device.items()]
        try:
            client = await self._connected()
            async with asyncio.timeout(self._timeout):
                await self._publish(client, messages)
        except (aiomqtt.MqttError, OSError, TimeoutError, ConnectionError) as exc:
            await self._disconnect()
            reason = "no PUBACK in time" if isinstance(exc, TimeoutError) else str(exc) or repr(exc)
            raise SinkRetryable(self.name, f"broker {self.config.host}:{self.config.port}: "
                                           f"{reason}") from exc
        self.published += len(items)
        self.messages += len(messages)

    async def _publish(self, client: aiomqtt.Client, messages: list[tuple[str, str]]) -> None:
        inflight = self._inflight
        publish = client._client.publish  # noqa: SLF001 - see the module's docstring
        for n, (topic, payload) in enumerate(messages, 1):
            while len(inflight) >= WINDOW:
                await self._next_ack()
            if n % SLICE == 0:
                await asyncio.sleep(0)  # let polls, timers and the pipeline run
                if self._lost is not None:
                    raise ConnectionError(self._lost)
            info = publish(topic, payload, qos=1)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                raise ConnectionError(f"publish failed: {paho.error_string(info.rc)}")
            if not info.is_published():
                inflight.add(info.mid)
        while inflight:
            await self._next_ack()

    async def _next_ack(self) -> None:
        self._acked.clear()
        if self._lost is None:
            await self._acked.wait()
        if self._lost is not None:
            raise ConnectionError(self._lost)

    def _on_publish(self, original, *args: Any) -> None:
        original(*args)  # aiomqtt's own bookkeeping (nothing pending there: cheap)
        self._inflight.discard(args[2])  # (client, userdata, mid, reason, properties)
        self._acked.set()

    def _on_disconnect(self, original, *args: Any) -> None:
        original(*args)
        self._lost = "the broker connection was lost"
        self._acked.set()

    async def _connected(self) -> aiomqtt.Client:
        if self._client is None:
            client = StopSafeClient(  # a stop that comes with the CONNACK is not lost
                self.config.host, self.config.port, identifier=self.client_id,
                username=self.config.username, password=self._password,
                keepalive=self.config.keepalive, tls_context=tls_context(self.config.tls),
                max_inflight_messages=WINDOW, timeout=self._timeout)
            await client.__aenter__()  # the connection outlives this call: closed in close()
            raw = client._client  # noqa: SLF001
            on_publish, on_disconnect = raw.on_publish, raw.on_disconnect
            raw.on_publish = lambda *args: self._on_publish(on_publish, *args)
            raw.on_disconnect = lambda *args: self._on_disconnect(on_disconnect, *args)
            self._inflight.clear()
            self._lost = None
            self._client = client
            log.info("%s: connected to %s:%s as %s", self.name, self.config.host,
                     self.config.port, self.client_id)
        return self._client

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        self._inflight.clear()
        if client is not None:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    async def close(self) -> None:
        """Disconnect from the broker."""
        await self._disconnect()
