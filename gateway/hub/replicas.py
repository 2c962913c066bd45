"""Replicas of one hub on one broker: which one sends the hub's webhooks.

Every replica (same ``hub.id``, its own ``broker.client_id``) builds the same live
picture and raises the same hub alarms, so each would notify the receiver once: one
must send, the others stand by. Each replica keeps a retained presence message,
``{prefix}/_hub/{hub id}/replicas/{client id}``: ``online`` while connected, and
``offline`` as its last will (a crash, a cut link) or at a clean stop. The sender is
the replica with the lowest client id among those online; a replica is never the
sender while it is itself cut off or rebuilding its picture. When the sender goes
offline, the broker publishes its will and the next replica takes over within a tick.
A will can be lost (an EMQX node that dies takes its clients' wills with it), so each
replica also repeats its presence every ``keepalive`` seconds, and a peer not heard
for ``STALE_AFTER`` of those is taken as offline.

The others queue the same transitions but hold them (``WebhookSender.hold``). The
sender announces each delivery on ``{prefix}/_hub/{hub id}/delivered`` (QoS 1, not
retained) and they drop it from their queues. On a takeover the new sender sends
what it still holds: what the old one had not confirmed. Every POST carries an
``Idempotency-Key`` computed the same way on every replica (``delivery_key``), so
the receiver discards the few that the old sender had in fact delivered.

An operator's ack, reset or shelve of a hub alarm reaches one replica (its console);
the others apply it from the broker (gateway.hub.alarm_sync) without sending it. The
replica that received it sends its webhooks whether or not it is the sender. The
``closed`` that follows a gateway's return is shared: every replica closes the acked alarm.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import aiomqtt

from gateway.alarms.alarm import iso
from gateway.alarms.manager import Transition
from gateway.alarms.webhook import WebhookSender

log = logging.getLogger(__name__)

# Transitions every replica derives alike from the broker (gateways' state, timers, and
# operators' actions shared through gateway.hub.alarm_sync).
SHARED_EVENTS = frozenset({"raised", "repeated", "cleared", "condition_cleared", "escalated",
                           "closed"})
MAX_ANNOUNCEMENTS = 10_000  # deliveries waiting for the broker, at most (then counted, dropped)
STALE_AFTER = 3  # heartbeats missed before a peer is taken as gone (its will lost)
REMEMBERED = 10_000  # keys another replica delivered, kept for a transition this one makes later


def delivery_key(hub_id: str, t: Transition) -> tuple[str, bool]:
    """The transition's Idempotency-Key, and whether every replica produces it.

    Alarm ids and transition times are each replica's own; the key is made of what all
    replicas agree on: the hub, the alarm's rule, device and channel, the gateway's last
    sign of life before the alarm (``details.last_seen``, its own timestamp from the
    retained health or info), the event and the occurrence (count, escalations). Without
    ``last_seen`` (a gateway that sends neither) the alarm's first time stands in: two
    replicas may then both be heard once around a takeover, but one occurrence never
    silences another. An operator's transition (``by``) is keyed by its own time.
    """
    alarm = t.alarm
    details = alarm.get("details") if isinstance(alarm.get("details"), dict) else {}
    shared = t.event in SHARED_EVENTS and t.by is None
    episode = details.get("last_seen") or alarm.get("first_ts")  # type: ignore[union-attr]
    parts = [hub_id, alarm.get("rule"), alarm.get("device"), alarm.get("channel"), episode,
             t.event, alarm.get("count"), alarm.get("escalated")]
    if not shared:
        parts += [alarm.get("id"), iso(t.ts), t.by]
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]
    return f"{hub_id}-{digest}", shared


class Replicas:
    """This replica's view of its peers, and the hold on its webhooks."""

    def __init__(self, *, prefix: str, hub_id: str, client_id: str, heartbeat: float = 30.0):
        self.hub_id = hub_id
        self.client_id = client_id
        base = f"{prefix}/_hub/{hub_id}"
        self.presence_prefix = f"{base}/replicas/"
        self.presence_topic = self.presence_prefix + client_id
        self.delivered_topic = f"{base}/delivered"
        self.senders: dict[str, WebhookSender] = {}  # by endpoint key
        self.peers: set[str] = set()  # the other replicas online, by client id
        self.heartbeat = heartbeat
        self._heard: dict[str, float] = {}  # peer -> when it was last heard (monotonic)
        self.is_sender = False
        self.takeovers = 0
        self.announce_dropped = 0
        self._ready = False  # connected and the picture rebuilt
        self._announce: asyncio.Queue[bytes] = asyncio.Queue()
        # (endpoint, key) the sender announced: it may come before this replica makes the
        # same transition (its tick comes later), which is then dropped as it is queued.
        self._announced: OrderedDict[tuple[str, str], None] = OrderedDict()

    def attach(self, webhook: WebhookSender) -> None:
        """A webhook of this hub: held until this replica is the sender."""
        self.senders[webhook.key] = webhook
        webhook.hold(not self.is_sender)

    # -- the MQTT side (gateway.hub.link calls these) --------------------------------------

    def will(self) -> aiomqtt.Will:
        return aiomqtt.Will(self.presence_topic, self._presence("offline"), qos=1, retain=True)

    async def on_connect(self, client: aiomqtt.Client) -> None:
        """Subscribe to the peers' presence and deliveries, then say this one is online.
        Called before the link's sync marker: the peers' retained presence is in by then."""
        self.peers.clear()
        self._heard.clear()
        await client.subscribe(self.presence_prefix + "+", qos=1)
        await client.subscribe(self.delivered_topic, qos=1)
        await client.publish(self.presence_topic, self._presence("online"), qos=1, retain=True)

    def handles(self, topic: str) -> bool:
        return topic == self.delivered_topic or topic.startswith(self.presence_prefix)

    def on_message(self, topic: str, payload: bytes) -> None:
        if topic == self.delivered_topic:
            self._delivered(payload)
            return
        client_id = topic[len(self.presence_prefix):]
        if not client_id or "/" in client_id or client_id == self.client_id:
            return
        try:
            state = json.loads(payload).get("state") if payload else "offline"
        except (ValueError, AttributeError):
            state = None
        if state == "online":
            self.peers.add(client_id)
            self._heard[client_id] = time.monotonic()
        else:  # offline, emptied, or unreadable: not a sender to wait for
            self.peers.discard(client_id)
            self._heard.pop(client_id, None)
        self.update(self._ready)

    # -- the decision ----------------------------------------------------------------------

    def update(self, ready: bool) -> bool:
        """Decide again (``ready``: connected and rebuilt); hold or release the webhooks."""
        self._ready = ready
        stale = time.monotonic() - STALE_AFTER * self.heartbeat
        for peer in [p for p in self.peers if self._heard.get(p, 0.0) < stale]:
            log.warning("hub %s: replica %s not heard for %g s; taken as offline", self.hub_id,
                        peer, STALE_AFTER * self.heartbeat)
            self.peers.discard(peer)
            self._heard.pop(peer, None)
        sender = ready and all(self.client_id < peer for peer in self.peers)
        if sender != self.is_sender:
            self.is_sender = sender
            if sender:
                self.takeovers += 1
                held = sum(s.pending for s in self.senders.values())
                log.info("hub %s: replica %s sends the webhooks now (%d transitions queued)",
                         self.hub_id, self.client_id, held)
            else:
                log.info("hub %s: replica %s stands by (%s)", self.hub_id, self.client_id,
                         f"{min(self.peers)} sends" if ready else "not connected")
        for webhook in self.senders.values():
            webhook.hold(not sender)
        return sender

    # -- deliveries ------------------------------------------------------------------------

    def done(self, endpoint: str) -> Callable[[str], None]:
        """``WebhookSender.on_done`` for one endpoint: tell the other replicas."""
        def announce(key: str) -> None:
            if self._announce.qsize() >= MAX_ANNOUNCEMENTS:
                self.announce_dropped += 1  # the others resend it, and the key dedups it
                return
            self._announce.put_nowait(json.dumps({"endpoint": endpoint, "key": key}).encode())
        return announce

    async def run(self, publish: Callable[[str, bytes], Awaitable[None]]) -> None:
        """Publish the deliveries and the heartbeat."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._announcements(publish), name="hub-replicas-delivered")
            tg.create_task(self._heartbeats(publish), name="hub-replicas-heartbeat")

    async def _heartbeats(self, publish: Callable[[str, bytes], Awaitable[None]]) -> None:
        """This replica's presence again every ``heartbeat`` s (not retained: the retained
        one comes at each connect, the will replaces it)."""
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                await publish(self.presence_topic, self._presence("online"))
            except ConnectionError:
                pass  # not connected: the peers see the will, or stop hearing this one

    async def _announcements(self, publish: Callable[[str, bytes], Awaitable[None]]) -> None:
        """Publish the deliveries; one that cannot go now (no broker) is dropped and
        counted: a replica that takes over resends it, and the receiver dedups it."""
        while True:
            payload = await self._announce.get()
            try:
                await publish(self.delivered_topic, payload)
            except ConnectionError:
                self.announce_dropped += 1

    def on_transition(self, t: Transition) -> None:
        """Alarm listener, after the webhooks': drop what the sender already delivered."""
        if not self._announced:
            return
        key, _ = delivery_key(self.hub_id, t)
        for endpoint, sender in self.senders.items():
            if (endpoint, key) in self._announced:
                del self._announced[(endpoint, key)]
                sender.forget(key)

    def _delivered(self, payload: bytes) -> None:
        try:
            body = json.loads(payload)
            endpoint, key = body["endpoint"], body["key"]
            sender = self.senders.get(endpoint)
        except (ValueError, KeyError, TypeError):
            return
        if sender is None or not isinstance(key, str) or self.is_sender:
            return  # the sender hears its own announcements
        if not sender.forget(key):
            self._announced[(endpoint, key)] = None
            while len(self._announced) > REMEMBERED:
                self._announced.popitem(last=False)

    def _presence(self, state: str) -> bytes:
        return json.dumps({"hub": self.hub_id, "client_id": self.client_id,
                           "state": state}).encode()
