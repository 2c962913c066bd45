"""Alarm transitions to an HTTP endpoint (the security room's messaging bot).

Each transition that passes the filter (``events``, ``min_severity``; the
repeats and clears of a shelved alarm are held back) is POSTed as the JSON of
``alarm_events`` (``{"event", "ts", "alarm": {...}, "by", "note"}``), in order.
A failure (no connection, timeout, 5xx, 408, 429) is retried with capped,
jittered backoff until the receiver answers; nothing is dropped for being late.
A 4xx other than 408/429 means the receiver will never take that body: it is
logged and counted (``rejected``) and the next one goes.

The queue is bounded by the alarms, not by time: while the receiver is down,
a transition that repeats the one queued last for the same alarm (``repeated``
after ``repeated``, ``escalated`` after ``escalated``) replaces it, since the
alarm JSON it carries has the newer count and severity. What stays queued is
then a few lifecycle steps per open alarm plus the operators' actions.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from gateway import json_safe
from gateway.alarms.manager import Transition
from gateway.backoff import Backoff
from gateway.config.models import WebhookConfig

log = logging.getLogger(__name__)

_HELD_WHILE_SHELVED = frozenset({"repeated", "cleared", "condition_cleared"})
_COALESCED = frozenset({"repeated", "escalated"})


@dataclass(slots=True)
class _Entry:
    alarm_id: str
    event: str
    body: bytes


class WebhookSender:
    """One webhook endpoint: its filter, its queue and its delivery task."""

    def __init__(self, *, config: WebhookConfig, token: str | None = None):
        self.config = config
        self.url = config.url
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
        self.sent = 0
        self.failures = 0
        self.rejected = 0
        self.coalesced = 0

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
        last = self._last.get(alarm_id)
        if (last is not None and last is not self._sending and last.event == t.event
                and t.event in _COALESCED):
            last.body = body
            self.coalesced += 1
            return
        entry = _Entry(alarm_id, t.event, body)
        self._queue.append(entry)
        self._last[alarm_id] = entry
        self._wake.set()

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
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            entry = self._sending = self._queue[0]
            problem = await self._post(session, entry)
            self._sending = None
            if problem is None or problem.startswith("rejected"):
                self._queue.popleft()
                if self._last.get(entry.alarm_id) is entry:
                    del self._last[entry.alarm_id]
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

    async def _post(self, session: aiohttp.ClientSession, entry: _Entry) -> str | None:
        """None when delivered; else what went wrong ("rejected ..." for good)."""
        try:
            async with session.post(self.url, data=entry.body) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}".replace(self.url, self.shown_url)
        if 200 <= status < 300:
            return None
        if 400 <= status < 500 and status not in (408, 429):
            return f"rejected (HTTP {status})"
        return f"HTTP {status}"


def shown_url(url: str) -> str:
    """``url`` safe to log: scheme, host, port and path; a query or user info becomes ``...``."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    hidden = "?..." if parts.query else ""
    return f"{parts.scheme}://{'...@' if '@' in parts.netloc else ''}{host}{parts.path}{hidden}"
