"""The gateway's own MQTT connection: status, alarm state and events, operator acks.

Topics (the design's contract), under ``{prefix}/{site}``:
``status`` (retained online/offline, offline as last will), ``alarms/{id}``
(retained alarm JSON, empty once closed), ``alarm_events`` (every transition,
QoS 1) and ``alarms/{id}/{ack|reset|shelve|unshelve}`` (operators' commands in,
see gateway.alarms.commands; errors answered on ``.../{command}/error``).
Nothing is dropped while the broker is away: retained state is coalesced per
alarm (only the latest matters), events are queued in order, and both are
published when the connection is back. Every reconnect republishes the open
alarms so a console that connects later sees the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque

import aiomqtt

from gateway import json_safe
from gateway.alarms.commands import COMMANDS, CommandError, apply_command
from gateway.alarms.manager import AlarmManager, Transition
from gateway.backoff import Backoff
from gateway.cancellation import raise_if_stopping
from gateway.config.models import MqttConfig
from gateway.mqtt_tls import tls_context

log = logging.getLogger(__name__)

# Transition events kept while the broker is away (the newest; each alarm's current
# state is kept apart, coalesced, and never dropped). Bounds memory in a long outage.
MAX_QUEUED_EVENTS = 10_000


class MqttLink:
    """Publishes alarms and status; takes acknowledgements."""

    def __init__(self, *, config: MqttConfig, site_id: str, alarms: AlarmManager,
                 password: str | None = None):
        self.config = config
        self.base = f"{config.prefix}/{site_id}"
        self.client_id = config.client_id or f"gateway-{site_id}"
        self._alarms = alarms
        self._password = password
        self._state: dict[str, bytes] = {}  # alarm id -> latest retained payload
        self._events: deque[bytes] = deque()
        self.events_dropped = 0
        self._wake = asyncio.Event()
        self.connected = False
        self.published = 0
        self.commands_rejected = 0
        alarms.add_listener(self._on_transition)

    def _on_transition(self, t: Transition) -> None:
        alarm_id = str(t.alarm["id"])
        self._state[alarm_id] = b"" if t.event == "closed" else json_safe.dumps(
            t.alarm, compact=False, ensure_ascii=True).encode()
        if len(self._events) >= MAX_QUEUED_EVENTS:
            self._events.popleft()
            if not self.events_dropped:
                log.error("MQTT: %d alarm events queued for the broker; dropping the oldest "
                          "events (alarm states are kept)", MAX_QUEUED_EVENTS)
            self.events_dropped += 1
        self._events.append(json_safe.dumps(t.to_json(), compact=False,
                                            ensure_ascii=True).encode())
        self._wake.set()

    def forget(self, alarm_ids: list[str]) -> None:
        """Publish an empty retained state for alarms closed without it reaching the
        broker (closed while it was away, just before a stop)."""
        for alarm_id in alarm_ids:
            self._state.setdefault(alarm_id, b"")
        self._wake.set()

    @property
    def pending(self) -> int:
        """Alarm messages waiting for the broker."""
        return len(self._state) + len(self._events)

    async def run(self) -> None:
        """Stay connected for as long as the gateway runs."""
        backoff = Backoff(initial=0.2, cap=15.0)
        was_down = False
        while True:
            try:
                async with self._client() as client:
                    self.connected = True
                    was_down = False
                    backoff.reset()
                    log.info("MQTT connected to %s:%s as %s", self.config.host, self.config.port,
                             self.client_id)
                    await client.publish(f"{self.base}/status", b"online", qos=1, retain=True)
                    for alarm in self._alarms.open_alarms():
                        self._state.setdefault(alarm.id, json_safe.dumps(
                            alarm.to_json(), compact=False, ensure_ascii=True).encode())
                    for command in COMMANDS:
                        await client.subscribe(f"{self.base}/alarms/+/{command}", qos=1)
                    try:
                        await _first_failure(
                            self._publish_loop(client), self._command_loop(client),
                            names=("mqtt[publish]", "mqtt[commands]"))
                    except asyncio.CancelledError:
                        # A clean stop says so at once; the will covers a crash.
                        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                            async with asyncio.timeout(1):
                                await client.publish(f"{self.base}/status", b"offline",
                                                     qos=1, retain=True)
                        raise
            except Exception as exc:  # the alarm link reconnects, whatever broke it
                # aiomqtt's disconnect on the way out of a stop can fail too: the stop wins.
                raise_if_stopping()
                self.connected = False
                if not was_down:
                    if isinstance(exc, aiomqtt.MqttError):
                        log.error("MQTT broker %s:%s unreachable: %s", self.config.host,
                                  self.config.port, exc)
                    else:
                        log.exception("MQTT link to %s:%s failed", self.config.host,
                                      self.config.port)
                was_down = True
            await asyncio.sleep(backoff.next_delay())

    def _client(self) -> aiomqtt.Client:
        status = f"{self.base}/status"
        return aiomqtt.Client(
            self.config.host, self.config.port, identifier=self.client_id,
            username=self.config.username, password=self._password,
            keepalive=self.config.keepalive, clean_session=False,
            will=aiomqtt.Will(status, b"offline", qos=1, retain=True), timeout=10,
            tls_context=tls_context(self.config.tls),
        )

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Retained state first, so a console reacting to an event finds it.
            while self._state:
                alarm_id, payload = next(iter(self._state.items()))
                await client.publish(f"{self.base}/alarms/{alarm_id}", payload, qos=1, retain=True)
                if self._state.get(alarm_id) is payload:
                    del self._state[alarm_id]
                self.published += 1
            while self._events:
                event = self._events[0]
                await client.publish(f"{self.base}/alarm_events", event, qos=1)
                if self._events and self._events[0] is event:  # not dropped meanwhile
                    self._events.popleft()
                self.published += 1

    async def _command_loop(self, client: aiomqtt.Client) -> None:
        self._wake.set()  # flush whatever queued up while disconnected
        prefix = f"{self.base}/alarms/"
        async for message in client.messages:
            topic = str(message.topic)
            alarm_id, _, command = topic.removeprefix(prefix).partition("/")
            if not topic.startswith(prefix) or command not in COMMANDS:
                continue
            try:
                apply_command(self._alarms, alarm_id, command, bytes(message.payload or b""))
                continue
            except CommandError as exc:
                error = exc.to_json()
            except Exception as exc:  # a bug must cost one command, not the connection
                log.exception("%s of %s failed", command, alarm_id)
                error = {"error": f"internal error: {exc!r}", "alarm": alarm_id,
                         "command": command, "status": 500}
            self.commands_rejected += 1
            log.warning("%s of %s refused: %s", command, alarm_id, error["error"])
            await client.publish(f"{topic}/error", json_safe.dumps(
                error, compact=False, ensure_ascii=True).encode(), qos=1)


async def _first_failure(*loops, names: tuple[str, ...]) -> None:
    """Run loops that only end by error; raise the first error, after stopping the rest.

    Deliberately not a TaskGroup: on Python 3.11 a TaskGroup whose child fails
    leaves its parent task marked as being cancelled, and this task must be able
    to tell a real stop (``raise_if_stopping``) from a broker that went away.
    """
    tasks = [asyncio.create_task(loop, name=name) for loop, name in zip(loops, names)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
