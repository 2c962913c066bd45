"""The gateway's own MQTT connection: status, alarm state and events, operator acks.

Topics (the design's contract), under ``{prefix}/{site}``:
``status`` (retained online/offline, offline as last will), ``alarms/{id}``
(retained alarm JSON, empty once closed), ``alarm_events`` (every transition,
QoS 1) and ``alarms/{id}/ack`` (commands in; errors answered on ``.../ack/error``).
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

from gateway.alarms.manager import AlarmManager, Transition, UnknownAlarm
from gateway.backoff import Backoff
from gateway.config.models import MqttConfig

log = logging.getLogger(__name__)


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
        self._wake = asyncio.Event()
        self.connected = False
        self.published = 0
        self.commands_rejected = 0
        alarms.add_listener(self._on_transition)

    def _on_transition(self, t: Transition) -> None:
        alarm_id = str(t.alarm["id"])
        self._state[alarm_id] = b"" if t.event == "closed" else json.dumps(t.alarm).encode()
        self._events.append(json.dumps(t.to_json()).encode())
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
                        self._state.setdefault(alarm.id, json.dumps(alarm.to_json()).encode())
                    await client.subscribe(f"{self.base}/alarms/+/ack", qos=1)
                    try:
                        async with asyncio.TaskGroup() as tg:
                            tg.create_task(self._publish_loop(client), name="mqtt[publish]")
                            tg.create_task(self._command_loop(client), name="mqtt[commands]")
                    except asyncio.CancelledError:
                        # A clean stop says so at once; the will covers a crash.
                        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                            async with asyncio.timeout(1):
                                await client.publish(f"{self.base}/status", b"offline",
                                                     qos=1, retain=True)
                        raise
            except* aiomqtt.MqttError as group:
                self.connected = False
                if not was_down:
                    log.error("MQTT broker %s:%s unreachable: %s", self.config.host,
                              self.config.port, group.exceptions[0])
                was_down = True
            else:  # pragma: no cover - the loops above only end by error or cancellation
                continue
            await asyncio.sleep(backoff.next_delay())

    def _client(self) -> aiomqtt.Client:
        status = f"{self.base}/status"
        return aiomqtt.Client(
            self.config.host, self.config.port, identifier=self.client_id,
            username=self.config.username, password=self._password,
            keepalive=self.config.keepalive, clean_session=False,
            will=aiomqtt.Will(status, b"offline", qos=1, retain=True), timeout=10,
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
                await client.publish(f"{self.base}/alarm_events", self._events[0], qos=1)
                self._events.popleft()
                self.published += 1

    async def _command_loop(self, client: aiomqtt.Client) -> None:
        self._wake.set()  # flush whatever queued up while disconnected
        async for message in client.messages:
            parts = str(message.topic).split("/")
            if len(parts) < 3 or parts[-1] != "ack":
                continue
            alarm_id = parts[-2]
            try:
                body = json.loads(message.payload or b"{}")
                if not isinstance(body, dict) or not isinstance(body.get("by"), str) or not body["by"]:
                    raise ValueError('expected JSON {"by": "operator name", "note": "..."}')
                note = body.get("note")
                self._alarms.ack(alarm_id, by=body["by"], note=str(note) if note else None)
            except (ValueError, UnknownAlarm) as exc:
                self.commands_rejected += 1
                log.warning("ack of %s refused: %s", alarm_id, exc)
                error = json.dumps({"error": str(exc), "alarm": alarm_id}).encode()
                await client.publish(f"{self.base}/alarms/{alarm_id}/ack/error", error, qos=1)
