"""An MQTT device: subscribes to its topics, maps each JSON message, hands items to the runtime.

One configured device is one physical device (an access terminal, a camera) with
its own broker session, so its health, silence timeout and offline alarm are its
own, as for a Modbus device. The session is persistent (``clean_session=False``,
fixed client id ``gateway-{site}-{device}``, QoS 1 subscription): the broker
keeps what the device publishes while the gateway restarts and hands it over on
reconnect.

A message is acknowledged (PUBACK) only after its items are in the gateway's
ingest queue, so a gateway that stops between receiving and queueing gets the
message again at its next session instead of losing it. Delivery is at least
once: a redelivered message may be seen twice (profiles with an event id use
``once_per`` to drop repeats).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable

import aiomqtt

from drivers.mqtt.mapping import MessageMapping
from drivers.mqtt.problems import ProblemLog
from drivers.mqtt.pseudonym import RawValueLog
from gateway.cancellation import raise_if_stopping
from gateway.clock import SystemClock
from gateway.errors import DriverConnectError, DriverProtocolError
from gateway.mqtt_client import StopSafeClient
from gateway.readings import DeviceEvent, Reading

log = logging.getLogger(__name__)

Emit = Callable[[list[Reading | DeviceEvent]], Awaitable[None]]


class MqttDeviceSource:
    """The streaming driver of one ``type: mqtt`` device (``async stream(emit)``)."""

    def __init__(self, *, device_id: str, mapping: MessageMapping, host: str, port: int,
                 client_id: str, username: str | None = None, password: str | None = None,
                 keepalive: int = 30, raw_log: RawValueLog | None = None,
                 tls_context: Callable[[], ssl.SSLContext | None] | None = None, clock=None):
        self.device_id = device_id
        self.mapping = mapping
        self.host = host
        self.port = port
        self.client_id = client_id
        self._username = username
        self._password = password
        self._keepalive = keepalive
        self.raw_log = raw_log
        self._tls_context = tls_context
        self._clock = clock or SystemClock()
        # messages, readings, events, and one counter per problem / skip kind
        self.stats: dict[str, int] = {"messages": 0, "readings": 0, "events": 0}
        self.problems = ProblemLog(device_id, counts=self.stats)
        self.connected = False

    def counters(self) -> dict[str, int]:
        """Message counters (messages, readings, events) and one per problem or skip kind
        (malformed JSON, missing fields, other_device, duplicates, ...), as counted so far."""
        return dict(self.stats)

    @property
    def topic_filter(self) -> str:
        """What this device subscribes to."""
        return self.mapping.topic_filter

    async def stream(self, emit: Emit) -> None:
        """Receive until the connection fails (raises DriverConnectError) or cancellation."""
        try:
            async with self._client() as client:
                # PUBACK only once the items are queued (see the module doc). aiomqtt
                # does not expose paho's manual ack; its paho client does.
                paho = client._client  # noqa: SLF001
                paho.manual_ack_set(True)
                await client.subscribe(self.mapping.topic_filter, qos=1)
                self.connected = True
                log.debug("%s: subscribed to %s on %s:%s as %s", self.device_id,
                          self.mapping.topic_filter, self.host, self.port, self.client_id)
                async for message in client.messages:
                    items = self._handle_safely(message)
                    if items:
                        await emit(items)
                    if self.raw_log is not None and self.raw_log.pending:
                        await self._flush_raw()
                    if message.qos > 0:
                        paho.ack(message.mid, message.qos)
        except aiomqtt.MqttError as exc:
            # The disconnect on the way out may fail while we are being stopped:
            # that error must not replace the cancellation.
            raise_if_stopping()
            raise DriverConnectError(self.device_id,
                                     f"MQTT broker {self.host}:{self.port}: {exc}") from exc
        finally:
            self.connected = False

    def handle(self, topic: str, payload: bytes | bytearray | str | object, *,
               retained: bool = False) -> list[Reading | DeviceEvent]:
        """Map one message and count what happened; the items to emit (maybe none).

        A message flagged retained is the broker replaying the topic's last message
        because we (re)subscribed, not something that just happened: its readings
        are kept (the time series takes them once), its events are dropped and
        counted (``retained_events``), or every restart would raise a stale alarm.
        """
        stats = self.stats
        stats["messages"] += 1
        if not isinstance(payload, (bytes, bytearray, str)):
            payload = b""  # aiomqtt types payloads loosely; MQTT only carries bytes
        decoded = self.mapping.decode(topic, payload, self._clock.time())  # type: ignore[arg-type]
        if decoded.skip is not None:
            stats[decoded.skip] = stats.get(decoded.skip, 0) + 1
        now = self._clock.monotonic()
        if decoded.problems:
            for kind, detail in decoded.problems:
                self.problems.bad(kind, detail, now)
        elif decoded.skip is None:
            self.problems.good(now)
        items = decoded.items
        if retained and items:
            kept = [i for i in items if type(i) is Reading]
            if len(kept) < len(items):
                stats["retained_events"] = stats.get("retained_events", 0) + len(items) - len(kept)
                items = kept
        for item in items:
            if type(item) is Reading:
                stats["readings"] += 1
            else:
                stats["events"] += 1
        return items

    def _handle_safely(self, message: aiomqtt.Message) -> list[Reading | DeviceEvent]:
        # A message that trips a bug here must not come back for ever: it would
        # never be acknowledged and the broker would redeliver it at each reconnect.
        try:
            return self.handle(str(message.topic), message.payload, retained=bool(message.retain))
        except Exception:
            self.stats["internal_errors"] = self.stats.get("internal_errors", 0) + 1
            if self.stats["internal_errors"] == 1:
                log.exception("%s: a message could not be mapped (skipped, counted)", self.device_id)
            return []

    async def _flush_raw(self) -> None:
        assert self.raw_log is not None
        try:
            await self.raw_log.flush()
        except OSError as exc:
            # Local bookkeeping only: the pseudonymised event already went through.
            self.stats["raw_log_errors"] = self.stats.get("raw_log_errors", 0) + 1
            if self.stats["raw_log_errors"] == 1:
                log.error("%s: cannot write raw-value file %s: %s", self.device_id,
                          self.raw_log.path, exc.strerror)

    def _client(self) -> aiomqtt.Client:
        # a stop that comes with a CONNACK or SUBACK is not lost (gateway.mqtt_client)
        return StopSafeClient(
            self.host, self.port, identifier=self.client_id, username=self._username,
            password=self._password, keepalive=self._keepalive, clean_session=False,
            # built at each connect: a renewed certificate is used without a restart
            tls_context=self._tls_context() if self._tls_context is not None else None,
            timeout=10,
        )

    async def write(self, channel: int | None, field: str, value: float) -> None:
        """MQTT devices here only report; nothing can be written."""
        raise DriverProtocolError(self.device_id, f"{field} cannot be written: the device only reports")

    async def close(self) -> None:
        """The connection closes with ``stream``."""
