"""The gateway's own MQTT connection: status, alarm state and events, operator acks.

Topics (the design's contract), under ``{prefix}/{site}``:
``status`` (retained online/offline, offline as last will), ``alarms/{id}``
(retained alarm JSON, empty once closed), ``alarm_events`` (every transition,
QoS 1) and ``alarms/{id}/{ack|reset|shelve|unshelve}`` (operators' commands in,
signed, see gateway.alarms.signing and .commands; refusals answered on
``.../{command}/error``). Commands are opt-in (``mqtt.commands``): without them
the link does not subscribe to those topics at all.

Nothing is dropped while the broker is away: retained state is coalesced per
alarm (only the latest matters), events are queued in order, and both are
published when the connection is back, before anything else (status, the
republished open alarms, subscriptions). The link retries at most every
``RECONNECT_CAP`` seconds (jittered), so an alarm raised while the broker was
away goes out within about that long of its return. Every reconnect republishes
the open alarms so a console that connects later sees the truth.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import aiomqtt

from gateway import json_safe
from gateway.alarms.commands import COMMANDS, CommandError, apply_command
from gateway.alarms.manager import AlarmManager, Transition
from gateway.alarms.signing import CommandRefused, CommandVerifier
from gateway.backoff import Backoff
from gateway.cancellation import raise_if_stopping
from gateway.config.models import MqttConfig
from gateway.mqtt_client import StopSafeClient
from gateway.mqtt_tls import tls_context

log = logging.getLogger(__name__)

# Transition events kept while the broker is away (the newest; each alarm's current
# state is kept apart, coalesced, and never dropped). Bounds memory in a long outage.
MAX_QUEUED_EVENTS = 10_000
# Longest wait between reconnect attempts: security staff are promised alarms within
# a second, so once the broker is back the link must not sleep through it for long.
RECONNECT_CAP = 2.0
RECONNECT_INITIAL = 0.2
# A flood of refused commands is logged once per this many seconds, with a count.
REFUSAL_LOG_INTERVAL = 10.0


class MqttLink:
    """Publishes alarms and status; takes operators' signed commands when configured."""

    def __init__(self, *, config: MqttConfig, site_id: str, alarms: AlarmManager,
                 password: str | None = None, commands: CommandVerifier | None = None,
                 backoff: Backoff | None = None):
        """``commands``: the verifier for signed commands; None takes no commands."""
        self.config = config
        self.base = f"{config.prefix}/{site_id}"
        self.client_id = config.client_id or f"gateway-{site_id}"
        self._alarms = alarms
        self._password = password
        self._state: dict[str, bytes] = {}  # alarm id -> latest retained payload
        self._events: deque[bytes] = deque()
        self._retained: dict[str, bytes] = {}  # topic suffix -> latest payload (info, health)
        self.events_dropped = 0
        self._wake = asyncio.Event()
        self.connected = False
        self.published = 0
        self.commands = commands
        self.commands_applied = 0
        self.commands_rejected = 0
        self.backoff = backoff or Backoff(initial=RECONNECT_INITIAL, cap=RECONNECT_CAP)
        self._refusals_unlogged = 0
        self._refusal_logged_at: float | None = None
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

    def publish_retained(self, topic_suffix: str, payload: bytes) -> None:
        """Queue a retained ``{prefix}/{site}/{topic_suffix}`` (info, health) for the
        publish loop; only the latest payload per suffix is kept while the broker is away."""
        self._retained[topic_suffix] = payload
        self._wake.set()

    @property
    def pending(self) -> int:
        """Alarm messages waiting for the broker."""
        return len(self._state) + len(self._events)

    @property
    def command_filters(self) -> list[str]:
        """The topic filters operators' commands arrive on."""
        return [f"{self.base}/alarms/+/{command}" for command in COMMANDS]

    async def run(self) -> None:
        """Stay connected for as long as the gateway runs."""
        backoff = self.backoff
        was_down = False
        while True:
            try:
                async with self._client() as client:
                    self.connected = True
                    was_down = False
                    backoff.reset()
                    log.info("MQTT connected to %s:%s as %s", self.config.host, self.config.port,
                             self.client_id)
                    try:
                        # The message loop notices a lost connection at once; a publish
                        # waiting for its PUBACK would only time out (aiomqtt's timeout).
                        await _first_failure(
                            self._session(client), self._command_loop(client),
                            names=("mqtt[publish]", "mqtt[commands]"))
                    except asyncio.CancelledError:
                        # A clean stop says so at once; the will covers a crash.
                        try:
                            async with asyncio.timeout(1):
                                await client.publish(f"{self.base}/status", b"offline",
                                                     qos=1, retain=True)
                        except (aiomqtt.MqttError, TimeoutError) as exc:
                            # A clean disconnect sends no will: the retained status
                            # says online until the next start.
                            log.warning("MQTT: publishing the offline status at the stop "
                                        "failed: %s", exc or type(exc).__name__)
                        raise
            except Exception as exc:  # the alarm link reconnects, whatever broke it
                # aiomqtt's disconnect on the way out of a stop can fail too: the stop
                # wins, and the failure is said.
                if _stopping():
                    log.warning("MQTT: disconnecting from %s:%s at the stop failed: %s",
                                self.config.host, self.config.port, exc or type(exc).__name__)
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
        # StopSafeClient: a stop that comes with the CONNACK is not lost (gateway.mqtt_client)
        return StopSafeClient(
            self.config.host, self.config.port, identifier=self.client_id,
            username=self.config.username, password=self._password,
            keepalive=self.config.keepalive, clean_session=False,
            will=aiomqtt.Will(status, b"offline", qos=1, retain=True), timeout=10,
            tls_context=tls_context(self.config.tls),
        )

    async def _session(self, client: aiomqtt.Client) -> None:
        """One connection's publishing: what waited first, then status and subscriptions."""
        # What waited for the broker goes first: an alarm raised while it was away
        # must not queue behind the status and the subscriptions.
        sent = await self._flush(client)
        await client.publish(f"{self.base}/status", b"online", qos=1, retain=True)
        raise_if_stopping()
        for alarm in self._alarms.open_alarms():
            if alarm.id not in sent:
                self._state.setdefault(alarm.id, json_safe.dumps(
                    alarm.to_json(), compact=False, ensure_ascii=True).encode())
        if self.commands is not None:
            for topic in self.command_filters:
                await client.subscribe(topic, qos=1)
        else:
            # The session is persistent: drop subscriptions an earlier configuration
            # (or version) left at the broker.
            await client.unsubscribe(self.command_filters)
        raise_if_stopping()
        await self._publish_loop(client)

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        while True:
            await self._flush(client)
            # A stop that raced with the last PUBACK can be lost in aiomqtt's wait_for
            # (gateway.cancellation): without this the stop would wait here for ever.
            raise_if_stopping()
            await self._wake.wait()
            self._wake.clear()

    async def _flush(self, client: aiomqtt.Client) -> set[str]:
        """Publish every queued alarm state, then the queued events; the alarm ids sent."""
        sent = set()
        # Retained state first, so a console reacting to an event finds it.
        while self._state:
            alarm_id, payload = next(iter(self._state.items()))
            await client.publish(f"{self.base}/alarms/{alarm_id}", payload, qos=1, retain=True)
            raise_if_stopping()
            if self._state.get(alarm_id) is payload:
                del self._state[alarm_id]
            sent.add(alarm_id)
            self.published += 1
        while self._retained:
            suffix, retained = next(iter(self._retained.items()))
            await client.publish(f"{self.base}/{suffix}", retained, qos=1, retain=True)
            raise_if_stopping()
            if self._retained.get(suffix) is retained:
                del self._retained[suffix]  # not counted in `published` (alarm messages)
        while self._events:
            event = self._events[0]
            await client.publish(f"{self.base}/alarm_events", event, qos=1)
            raise_if_stopping()
            if self._events and self._events[0] is event:  # not dropped meanwhile
                self._events.popleft()
            self.published += 1
        return sent

    async def _command_loop(self, client: aiomqtt.Client) -> None:
        prefix = f"{self.base}/alarms/"
        async for message in client.messages:
            topic = str(message.topic)
            alarm_id, _, command = topic.removeprefix(prefix).partition("/")
            if not topic.startswith(prefix) or command not in COMMANDS:
                continue
            if self.commands is None:
                continue  # in flight from a stale subscription; commands are off
            try:
                signed = self.commands.verify(topic, alarm_id, bytes(message.payload or b""))
                apply_command(self._alarms, alarm_id, command, signed.body, via=signed.key)
                self.commands_applied += 1
                continue
            except CommandRefused as exc:
                error = {"error": exc.detail, "alarm": alarm_id, "command": command,
                         "status": exc.status}
            except CommandError as exc:
                error = exc.to_json()
            except Exception as exc:  # a bug must cost one command, not the connection
                log.exception("%s of %s failed", command, alarm_id)
                error = {"error": f"internal error: {exc!r}", "alarm": alarm_id,
                         "command": command, "status": 500}
            self.commands_rejected += 1
            self._log_refusal(command, alarm_id, str(error["error"]))
            await client.publish(f"{topic}/error", json_safe.dumps(
                error, compact=False, ensure_ascii=True).encode(), qos=1)
            raise_if_stopping()

    def _log_refusal(self, command: str, alarm_id: str, reason: str) -> None:
        # Anyone who can publish on the topic can send refusals: log a flood as a count.
        now = asyncio.get_running_loop().time()
        if self._refusal_logged_at is not None and \
                now - self._refusal_logged_at < REFUSAL_LOG_INTERVAL:
            self._refusals_unlogged += 1
            return
        more = (f" ({self._refusals_unlogged} more refused in the last "
                f"{now - self._refusal_logged_at:.0f} s)" if self._refusals_unlogged else "")
        log.warning("MQTT command %s of alarm %s refused: %s%s", command, alarm_id, reason, more)
        self._refusal_logged_at = now
        self._refusals_unlogged = 0


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


def _stopping() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
