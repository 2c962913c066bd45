"""The hub's MQTT connection: subscribes to every site's retained state and events.

Subscriptions, under ``{prefix}``: ``+/info``, ``+/status``, ``+/health``,
``+/alarms/+`` (retained, QoS 0: all of it comes again at every connect) and
``+/alarm_events`` (QoS 1). The session is persistent
(``clean_session: false``), so events published while the hub was away are
delivered when it is back (and may come twice: the history deduplicates).

At every connect the live picture is rebuilt from retained state: the hub marks
it, subscribes, then publishes a marker to its own topic
``{prefix}/_hub/{client id}/sync``. The broker delivers a client's messages in
order, so when the marker comes back every retained message has arrived and
alarms that were not confirmed (closed while the hub was away) are swept.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable

import aiomqtt

from gateway.backoff import Backoff
from gateway.cancellation import raise_if_stopping
from gateway.hub.config import HubBroker
from gateway.hub.mqtt_client import FastIngestClient
from gateway.mqtt_tls import tls_context

log = logging.getLogger(__name__)

# Retained state at QoS 0: the whole of it comes again at every connect (the rebuild), so
# nothing is lost that a QoS 1 session would have kept; and the hub answers no PUBACK for
# each alarm state (half its messages). Events, which nothing resends, at QoS 1.
SUBSCRIPTIONS = (("info", 0), ("status", 0), ("health", 0), ("alarms/+", 0), ("alarm_events", 1))
# Gateways' refusals of operators' commands (gateway.hub.commands), when the hub sends them.
ERRORS = ("alarms/+/+/error", 1)
SYNC_TIMEOUT = 10.0  # past this without the marker back, sweep anyway (and say so)
# How long any one answer of the broker (CONNACK, SUBACK, PUBACK) is awaited before the
# connection is taken as broken and made again: a broker that accepts and then says
# nothing must not hold the link.
ANSWER_TIMEOUT = 10.0
# At a stop, after the farewell: how long the DISCONNECT may take to leave (a frozen
# broker whose socket buffer is full). The stop must not wait a whole ANSWER_TIMEOUT.
STOP_DISCONNECT_TIMEOUT = 2.0


class HubLink:
    """Stays connected; hands every message to ``on_message(topic, payload)``."""

    def __init__(self, *, config: HubBroker, client_id: str, password: str | None,
                 on_message: Callable[[str, bytes], None], begin_sync: Callable[[], None],
                 end_sync: Callable[[], int], commands: bool = False,
                 will: aiomqtt.Will | None = None,
                 on_connect: Callable[[aiomqtt.Client], Awaitable[None]] | None = None):
        self.config = config
        self.client_id = client_id
        self.prefix = config.prefix
        self._password = password
        self._on_message = on_message
        self._begin_sync = begin_sync
        self._end_sync = end_sync
        self.sync_topic = f"{config.prefix}/_hub/{client_id}/sync"
        self.subscriptions = SUBSCRIPTIONS + ((ERRORS,) if commands else ())
        # The replicas' presence (gateway.hub.replicas): a last will, published at a clean
        # stop too, and subscriptions made before the sync marker.
        self.will = will
        self._on_connect = on_connect
        self._client_now: aiomqtt.Client | None = None
        self.connected = False
        self.synced = asyncio.Event()  # set once the picture is rebuilt after a connect
        self.connects = 0
        self.received = 0
        self.handler_errors = 0
        self._marker: bytes | None = None  # the sync marker while it is awaited

    async def run(self) -> None:
        """Stay connected until cancelled."""
        backoff = Backoff(initial=0.2, cap=15.0)
        was_down = False
        while True:
            try:
                async with self._client() as client:
                    self.connected = True
                    self.connects += 1
                    was_down = False
                    backoff.reset()
                    log.info("hub: MQTT connected to %s:%s as %s", self.config.host,
                             self.config.port, self.client_id)
                    self._client_now = client
                    try:
                        await self._serve(client)
                    except asyncio.CancelledError:
                        await self._farewell(client)
                        client.timeout = STOP_DISCONNECT_TIMEOUT  # aiomqtt's __aexit__ wait
                        raise
            except Exception as exc:  # reconnects, whatever broke it
                if _stopping():  # aiomqtt's disconnect at the stop failed: the stop wins
                    log.warning("hub: disconnecting from %s:%s at the stop failed: %s",
                                self.config.host, self.config.port, exc or type(exc).__name__)
                raise_if_stopping()
                self.connected = False
                self.synced.clear()
                if not was_down:
                    if isinstance(exc, aiomqtt.MqttError):
                        log.error("hub: MQTT broker %s:%s unreachable: %s", self.config.host,
                                  self.config.port, exc)
                    else:
                        log.exception("hub: MQTT link to %s:%s failed", self.config.host,
                                      self.config.port)
                was_down = True
            finally:
                self.connected = False
                self._client_now = None
            await asyncio.sleep(backoff.next_delay())

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 on the current connection; ConnectionError when there is none
        (an operator's command is then not delivered, never queued for later).
        ``retain``: the replicas' shared alarm states (gateway.hub.alarm_sync)."""
        client = self._client_now
        if client is None or not self.connected:
            raise ConnectionError(f"broker {self.config.host}:{self.config.port} not connected")
        try:
            await client.publish(topic, payload, qos=1, retain=retain)
        except aiomqtt.MqttError as exc:
            raise ConnectionError(str(exc)) from None

    async def _farewell(self, client: aiomqtt.Client) -> None:
        """A clean disconnect sends no will: at a stop, publish it ourselves."""
        if self.will is None:
            return
        try:
            async with asyncio.timeout(1):
                await client.publish(self.will.topic, self.will.payload, qos=self.will.qos,
                                     retain=self.will.retain)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            log.warning("hub: publishing %s at the stop failed: %s", self.will.topic,
                        exc or type(exc).__name__)

    def _client(self) -> FastIngestClient:
        # Messages go straight to _take from the socket's read loop (gateway.hub.mqtt_client:
        # aiomqtt's per-message queue and task cost more than the hub's own work).
        return FastIngestClient(
            self.config.host, self.config.port, identifier=self.client_id,
            username=self.config.username, password=self._password,
            keepalive=self.config.keepalive, clean_session=False, timeout=ANSWER_TIMEOUT,
            tls_context=tls_context(self.config.tls), on_message=self._take, will=self.will)

    async def _serve(self, client: aiomqtt.Client) -> None:
        self._begin_sync()
        self.synced.clear()
        self._marker = secrets.token_hex(8).encode()
        # Nothing is queued for the iterator (FastIngestClient delivers to _take); waiting on
        # it is waiting for the connection to drop, which raises MqttError.
        dropped = asyncio.ensure_future(anext(aiter(client.messages)))
        try:
            await client.subscribe(self.sync_topic, qos=1)
            for suffix, qos in self.subscriptions:
                await client.subscribe(f"{self.prefix}/+/{suffix}", qos=qos)
            if self._on_connect is not None:
                await self._on_connect(client)
            await client.publish(self.sync_topic, self._marker, qos=1)
            marker_back = asyncio.ensure_future(self.synced.wait())
            try:
                done, _ = await asyncio.wait((dropped, marker_back), timeout=SYNC_TIMEOUT,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                marker_back.cancel()
            if not done:
                log.warning("hub: the sync marker did not come back within %g s; the live "
                            "picture is rebuilt from what arrived", SYNC_TIMEOUT)
                self._marker = None
                self._synced()
            await dropped
        finally:
            dropped.cancel()
            if dropped.done() and not dropped.cancelled():
                dropped.exception()  # retrieved: the error that matters is the one raised here

    def _take(self, topic: str, payload: bytes) -> None:
        """One message, from the client's read loop (so it never raises)."""
        if topic == self.sync_topic:
            if self._marker is not None and payload == self._marker:
                self._marker = None
                self._synced()
            return
        self.received += 1
        try:
            self._on_message(topic, payload)
        except Exception:  # a bug must cost one message, not the connection
            self.handler_errors += 1
            log.exception("hub: message on %s could not be handled", topic)

    def _synced(self) -> None:
        dropped = self._end_sync()
        if dropped:
            log.info("hub: %d alarms closed while away were dropped from the live picture",
                     dropped)
        self.synced.set()


def _stopping() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
