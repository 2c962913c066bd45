"""Alarm transitions to an HTTP endpoint (the security room's messaging bot).

Each transition that passes the filter (``events``, ``min_severity``; the
repeats and clears of a shelved alarm are held back) is POSTed as the JSON of
``alarm_events`` (``{"event", "ts", "alarm": {...}, "by", "note"}``), in order.
A failure (no connection, timeout, 5xx, 408, 429) is retried with capped,
jittered backoff until the receiver answers; nothing is dropped for being late.
A 4xx other than 408/429 means the receiver will never take that body: it is
logged and counted (``rejected``) and the next one goes.

While the receiver is down, a transition that repeats the one queued last for
the same alarm (``repeated`` after ``repeated``, ``escalated`` after
``escalated``) replaces it, since the alarm JSON it carries has the newer count
and severity. The queue also has an explicit bound, ``max_pending`` (a flood of
operator commands, shelve/unshelve over and over, is not coalesced): past it one
entry is dropped and counted (``dropped``): the oldest one whose alarm has a
newer entry queued (that newer one carries the alarm's current state), else the
oldest. The webhook is a side channel: the alarms themselves are never dropped
(the manager, the state file, MQTT and the console have them all).

With a ``journal`` (the alarm state file), every queued entry is saved there and
deleted once delivered, refused or dropped, so a restart resends what the
receiver had not taken (``restore``), in order.

The hub (several replicas of one hub, one of which sends) passes ``delivery_key``:
each POST then carries an ``Idempotency-Key`` header that is the same on every
replica, and ``shared`` says which transitions every replica produces. While
``hold(True)`` (a replica that is not the sender) those are kept queued, not sent,
until ``forget(key)`` (the sender delivered it) or ``hold(False)`` (this replica
took over: what the sender had not confirmed goes, the receiver deduplicating by
key). ``on_done(key)`` is called for each entry delivered or refused. The
gateway passes none of these: its POSTs are as they always were.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import deque
from dataclasses import dataclass
from typing import Callable, Protocol
from urllib.parse import urlsplit

import aiohttp

from gateway import json_safe
from gateway.alarms.manager import Transition
from gateway.backoff import Backoff
from gateway.config.models import WebhookConfig

log = logging.getLogger(__name__)

_HELD_WHILE_SHELVED = frozenset({"repeated", "cleared", "condition_cleared"})
_COALESCED = frozenset({"repeated", "escalated"})
MAX_PENDING = 1000  # entries queued per endpoint at most


class Journal(Protocol):
    """Where queued entries are kept across a restart (the alarm state file)."""

    def webhook_saved(self, endpoint: str, seq: int, alarm_id: str, event: str, body: bytes,
                      *, new: bool) -> None: ...

    def webhook_done(self, endpoint: str, seq: int) -> None: ...


@dataclass(slots=True)
class _Entry:
    alarm_id: str
    event: str
    body: bytes
    seq: int
    key: str | None = None  # the Idempotency-Key, when the sender was given delivery_key
    shared: bool = False  # held back while hold(True): another replica sends it


class WebhookSender:
    """One webhook endpoint: its filter, its queue and its delivery task."""

    def __init__(self, *, config: WebhookConfig, token: str | None = None,
                 journal: Journal | None = None, key: str | None = None,
                 max_pending: int = MAX_PENDING,
                 delivery_key: Callable[[Transition], tuple[str, bool]] | None = None,
                 on_done: Callable[[str], None] | None = None):
        self.config = config
        self.url = config.url
        # The endpoint's name in the journal: a hash, since the URL may hold a secret.
        self.key = key or endpoint_key(config.url)
        self.journal = journal
        self.max_pending = max(1, max_pending)
        # Messaging bots (WeCom ?key=, DingTalk ?access_token=) carry their secret in the
        # URL: logs name the endpoint without its query or user info.
        self.shown_url = shown_url(config.url)
        self._events = frozenset(config.events) if config.events is not None else None
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._queue: deque[_Entry] = deque()
        self._last: dict[str, _Entry] = {}  # alarm id -> its latest queued entry
        self._sending: _Entry | None = None
        self._wake = asyncio.Event()
        self._seq = 0
        self._overflowing = False
        # The hub's replicas: (Idempotency-Key, shared by every replica) of a transition.
        self._delivery_key = delivery_key
        self._on_done = on_done
        self._holding = False
        self.sent = 0
        self.failures = 0
        self.rejected = 0
        self.coalesced = 0
        self.dropped = 0  # entries dropped for max_pending
        self.restored = 0  # entries taken back from the journal at the start
        self.forgotten = 0  # held entries another replica delivered

    @property
    def pending(self) -> int:
        """Transitions waiting for the receiver."""
        return len(self._queue)

    def on_transition(self, t: Transition) -> None:
        """Alarm manager listener: queue the transition if the filter lets it through."""
        alarm = t.alarm
        if self._events is not None and t.event not in self._events:
            return
        if int(alarm["severity"]) > self.config.min_severity:  # type: ignore[call-overload]
            return
        if alarm.get("shelved_until") and t.event in _HELD_WHILE_SHELVED:
            return
        alarm_id = str(alarm["id"])
        body = json_safe.dumps(t.to_json(), compact=False, ensure_ascii=True).encode()
        key, shared = self._delivery_key(t) if self._delivery_key is not None else (None, False)
        last = self._last.get(alarm_id)
        if (last is not None and last is not self._sending and last.event == t.event
                and t.event in _COALESCED and key is None):
            last.body = body
            self.coalesced += 1
            if self.journal is not None:
                self.journal.webhook_saved(self.key, last.seq, alarm_id, last.event, body, new=False)
            return
        self._seq += 1
        entry = _Entry(alarm_id, t.event, body, self._seq, key, shared)
        self._queue.append(entry)
        self._last[alarm_id] = entry
        if self.journal is not None:
            self.journal.webhook_saved(self.key, entry.seq, alarm_id, t.event, body, new=True)
        if len(self._queue) > self.max_pending:
            self._drop_one()
        self._wake.set()

    def on_document(self, event: str, doc: dict) -> None:
        """Queue a document that is not an alarm transition (the daily device digest),
        delivered in order with the transitions, unless the filter leaves ``event`` out."""
        if self._events is not None and event not in self._events:
            return
        body = json_safe.dumps_bytes(doc)
        self._seq += 1
        entry = _Entry(event, event, body, self._seq)
        self._queue.append(entry)
        if self.journal is not None:
            self.journal.webhook_saved(self.key, entry.seq, event, event, body, new=True)
        if len(self._queue) > self.max_pending:
            self._drop_one()
        self._wake.set()

    def restore(self, entries: list[tuple[int, str, str, bytes]]) -> None:
        """Take back the entries the journal held at the start, ``(seq, alarm_id, event,
        body)`` in order, ahead of anything new."""
        for seq, alarm_id, event, body in entries:
            entry = _Entry(alarm_id, event, body, seq)
            self._queue.append(entry)
            self._last[alarm_id] = entry
            self._seq = max(self._seq, seq)
        self.restored += len(entries)
        while len(self._queue) > self.max_pending:
            self._drop_one()
        if entries:
            log.info("webhook %s: %d transitions from before the restart still to deliver",
                     self.shown_url, len(entries))
            self._wake.set()

    def _drop_one(self) -> None:
        """Past ``max_pending``: drop the oldest entry whose alarm has a newer one queued
        (that one carries the alarm's state), else the oldest; never the one being sent."""
        victim = None
        for entry in self._queue:
            if entry is self._sending:
                continue
            if victim is None:
                victim = entry  # the oldest, if no superseded one comes
            if self._last.get(entry.alarm_id) is not entry:
                victim = entry
                break
        if victim is None:
            return
        self._queue.remove(victim)
        if self._last.get(victim.alarm_id) is victim:
            del self._last[victim.alarm_id]
        self._forget(victim)
        self.dropped += 1
        if not self._overflowing:
            log.error("webhook %s: more than %d transitions queued; dropping the oldest "
                      "(counted; the alarms themselves are kept)", self.shown_url,
                      self.max_pending)
            self._overflowing = True

    def _forget(self, entry: _Entry) -> None:
        if self.journal is not None:
            self.journal.webhook_done(self.key, entry.seq)

    async def run(self) -> None:
        """Deliver in order until cancelled."""
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        backoff = Backoff(initial=0.5, cap=self.config.max_retry_interval)
        try:
            async with aiohttp.ClientSession(timeout=timeout, headers=self._headers) as session:
                await self._deliver(session, backoff)
        finally:
            if self._queue:  # the state file and MQTT still hold them; say what the bot missed
                log.warning("webhook %s: stopping with %d transitions not delivered", self.shown_url,
                            len(self._queue))

    async def _deliver(self, session: aiohttp.ClientSession, backoff: Backoff) -> None:
        failing = False
        while True:
            entry = self._next()
            if entry is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._sending = entry
            problem = await self._post(session, entry)
            self._sending = None
            if problem is None or problem.startswith("rejected"):
                if self._queue and self._queue[0] is entry:
                    self._queue.popleft()
                else:  # while holding, this replica's own entries go past the held ones
                    self._queue.remove(entry)
                if self._last.get(entry.alarm_id) is entry:
                    del self._last[entry.alarm_id]
                self._forget(entry)
                if len(self._queue) < self.max_pending // 2:
                    self._overflowing = False
                if entry.key is not None and self._on_done is not None:
                    self._on_done(entry.key)
                if problem is None:
                    self.sent += 1
                else:
                    self.rejected += 1
                    log.error("webhook %s %s the %s of alarm %s; skipped", self.shown_url, problem,
                              entry.event, entry.alarm_id)
                if failing:
                    log.info("webhook %s answers again; %d transitions queued", self.shown_url,
                             len(self._queue))
                    failing = False
                backoff.reset()
                continue
            self.failures += 1
            if not failing:
                log.error("webhook %s unreachable (%s); %d transitions queued, retrying",
                          self.shown_url, problem, len(self._queue))
                failing = True
            await asyncio.sleep(backoff.next_delay())

    def _next(self) -> _Entry | None:
        """The entry to send now: the oldest, or while holding the oldest not shared."""
        if not self._holding:
            return self._queue[0] if self._queue else None
        return next((e for e in self._queue if not e.shared), None)

    def hold(self, holding: bool) -> None:
        """Keep the shared entries queued, unsent (another replica is the sender), or not."""
        if holding != self._holding:
            self._holding = holding
            self._wake.set()

    @property
    def holding(self) -> bool:
        return self._holding

    def forget(self, key: str) -> bool:
        """The sender delivered the entry with this key: drop it here (if queued, not being
        sent). True when one was dropped."""
        for entry in self._queue:
            if entry.key == key and entry is not self._sending:
                self._queue.remove(entry)
                if self._last.get(entry.alarm_id) is entry:
                    del self._last[entry.alarm_id]
                self._forget(entry)
                self.forgotten += 1
                return True
        return False

    async def _post(self, session: aiohttp.ClientSession, entry: _Entry) -> str | None:
        """None when delivered; else what went wrong ("rejected ..." for good)."""
        headers = {"Idempotency-Key": entry.key} if entry.key is not None else None
        try:
            async with session.post(self.url, data=entry.body, headers=headers) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}".replace(self.url, self.shown_url)
        if 200 <= status < 300:
            return None
        if 400 <= status < 500 and status not in (408, 429):
            return f"rejected (HTTP {status})"
        return f"HTTP {status}"


def endpoint_key(url: str) -> str:
    """A webhook's name in the state file: stable for one URL, and not the URL itself."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def shown_url(url: str) -> str:
    """``url`` safe to log: scheme, host, port and path; a query or user info becomes ``...``."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    hidden = "?..." if parts.query else ""
    return f"{parts.scheme}://{'...@' if '@' in parts.netloc else ''}{host}{parts.path}{hidden}"
