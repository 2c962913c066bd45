"""MQTT telemetry sink: readings as JSON on ``{prefix}/{site}/telemetry/{device_id}``, QoS 1.

It has its own connection (client id ``<gateway client id>-telemetry``), apart
from the one that carries alarms: a backlog of telemetry draining after an outage
never queues in front of an alarm, and a slow telemetry consumer never holds the
alarm connection back. A batch counts as written once the broker has answered
every message with its PUBACK; if the connection fails first, the whole batch is
retried (QoS 1 is at least once: a subscriber may see a message twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiomqtt

from gateway.config.models import MqttConfig
from gateway.errors import SinkRetryable
from gateway.mqtt_tls import tls_context

log = logging.getLogger(__name__)

# Messages the client keeps in flight before it waits for PUBACKs: a batch goes
# out as a stream instead of one round trip per message.
MAX_INFLIGHT = 100
MAX_BATCH = 100_000  # the largest telemetry batch_size the config allows
# Messages awaited together: MQTT message ids are 16 bits, so a batch of more than
# 65535 in flight at once would reuse the id of a message still waiting for its PUBACK.
MAX_IN_ONE_GO = 10_000


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
        self.published = 0

    async def write(self, items: list[tuple[str, str]]) -> None:
        """Publish one batch and wait for every PUBACK; all or nothing."""
        for start in range(0, len(items), MAX_IN_ONE_GO):
            await self._publish(items[start:start + MAX_IN_ONE_GO])
        self.published += len(items)

    async def _publish(self, items: list[tuple[str, str]]) -> None:
        try:
            client = await self._connected()
            base = self.base
            results = await asyncio.gather(
                *(client.publish(base + device, doc, qos=1) for device, doc in items),
                return_exceptions=True)
        except (aiomqtt.MqttError, OSError) as exc:
            await self._disconnect()
            raise SinkRetryable(self.name, f"broker {self.config.host}:{self.config.port}: "
                                           f"{exc}") from exc
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            await self._disconnect()
            if not isinstance(failed, (aiomqtt.MqttError, OSError)):
                raise failed
            raise SinkRetryable(self.name, f"broker {self.config.host}:{self.config.port}: "
                                           f"{failed}") from failed

    async def _connected(self) -> aiomqtt.Client:
        if self._client is None:
            client = aiomqtt.Client(
                self.config.host, self.config.port, identifier=self.client_id,
                username=self.config.username, password=self._password,
                keepalive=self.config.keepalive, tls_context=tls_context(self.config.tls),
                max_inflight_messages=MAX_INFLIGHT, timeout=self._timeout)
            # A whole batch is in flight at once, by design: no warning per message for that.
            client.pending_calls_threshold = MAX_BATCH
            await client.__aenter__()  # the connection outlives this call: closed in close()
            self._client = client
            log.info("%s: connected to %s:%s as %s", self.name, self.config.host,
                     self.config.port, self.client_id)
        return self._client

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    async def close(self) -> None:
        """Disconnect from the broker."""
        await self._disconnect()
