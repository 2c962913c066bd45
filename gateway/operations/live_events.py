"""Live events over HTTP: one fan-out of alarm transitions, one server-sent-events loop.

``/api/stream`` and the console's ``/console/events`` both run ``serve_events``
with an ``EventSource`` of their own (what to send first, which alarms, what
else on each tick, what to do when the client fell behind). They share:

- ``TransitionFanout``: every alarm transition to every open stream, each with a
  bounded queue; a stream that falls behind is flagged ``lagged`` (its queue
  emptied) instead of holding memory or slowing the alarm manager;
- ``StreamSlots``: at most ``http.max_streams`` streams at once; more are
  answered 503 and their connection closed, so idle watchers cannot use up the
  process's file handles;
- a write timeout: a client that stops reading is cut off, not waited for
  (``gateway.operations.connection_limit``, which also ends a stream whose client
  closed its side).

Every event's data is one line of JSON from ``gateway.json_safe``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from gateway import json_safe
from gateway.alarms.manager import Transition
from gateway.operations.http_app import App, Request, Response, stream_response, text_response

log = logging.getLogger(__name__)

CLIENT_QUEUE = 500
TICK_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0
RETRY_MS = 1000


class Subscriber:
    """One stream's queue of alarm transitions (as published JSON)."""

    __slots__ = ("items", "lagged", "wake")

    def __init__(self) -> None:
        self.items: deque[dict[str, object]] = deque()
        self.lagged = False
        self.wake = asyncio.Event()

    def offer(self, item: dict[str, object]) -> None:
        if len(self.items) >= CLIENT_QUEUE:
            self.items.clear()  # the stream resynchronises instead (see EventSource.lagged)
            self.lagged = True
        else:
            self.items.append(item)
        self.wake.set()


class TransitionFanout:
    """Fans the alarm manager's transitions out to every open stream."""

    def __init__(self, alarms) -> None:
        self.closing = asyncio.Event()
        self._subscribers: set[Subscriber] = set()
        self.lagged_streams = 0  # streams that fell behind, since start
        alarms.add_listener(self._on_transition)

    @property
    def streams(self) -> int:
        """Streams subscribed right now."""
        return len(self._subscribers)

    def _on_transition(self, t: Transition) -> None:
        if not self._subscribers:
            return
        item = t.to_json()
        for sub in self._subscribers:
            was_lagged = sub.lagged
            sub.offer(item)
            if sub.lagged and not was_lagged:
                self.lagged_streams += 1

    @contextmanager
    def subscribe(self) -> Iterator[Subscriber]:
        """A queue of transitions for one stream, for as long as the ``with`` lasts."""
        sub = Subscriber()
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    def close(self) -> None:
        """Tell every open stream to end (the server is stopping)."""
        self.closing.set()
        for sub in self._subscribers:
            sub.wake.set()


class StreamSlots:
    """How many live streams may be open at once."""

    def __init__(self, limit: int):
        self.limit = limit
        self.open = 0
        self.refused = 0

    def take(self) -> bool:
        """One slot, or False when all are taken."""
        if self.open >= self.limit:
            self.refused += 1
            return False
        self.open += 1
        return True

    def give_back(self) -> None:
        self.open -= 1


class EventSource(Protocol):
    """What one kind of stream sends; ``serve_events`` does the rest."""

    async def opening(self) -> list[bytes]:
        """Events sent first (a hello, a snapshot)."""

    def alarm(self, item: dict[str, object]) -> bytes | None:
        """One alarm transition as an event, or None if this stream does not want it."""

    async def lagged(self) -> tuple[list[bytes], bool]:
        """The stream fell behind: events to send, and whether to end it there."""

    def tick(self) -> list[bytes]:
        """Events due now (new readings, changed devices); called about once a ``tick``."""

    async def still_allowed(self) -> list[bytes] | None:
        """None while the client may go on; else the last events before the stream ends."""


def event(name: str, data: object) -> bytes:
    """One server-sent event; ``json_safe`` never emits a raw newline, so one data line."""
    return event_text(name, json_safe.dumps(data))


def event_text(name: str, text: str) -> bytes:
    """One server-sent event from JSON text already made."""
    return f"event: {name}\ndata: {text}\n\n".encode()


def busy_response(slots: StreamSlots) -> Response:
    """503 for a stream over the limit (the connection is closed after it, as any)."""
    return text_response(
        json_safe.dumps({"error": f"too many live streams open ({slots.limit}); try again later"}),
        content_type="application/json", status=503, headers={"Retry-After": "5"})


async def serve_events(request: Request, source: EventSource, *, fanout: TransitionFanout,
                       slots: StreamSlots, headers: dict[str, str] | None = None,
                       tick: float = TICK_SECONDS,
                       keepalive: float = KEEPALIVE_SECONDS) -> Response:
    """A streamed answer: events to one client until it goes, it is cut off, or the
    server stops. Its stream slot is taken now and given back once, when the
    connection ends (the body started or not)."""
    if not slots.take():
        return busy_response(slots)
    given_back = False

    def give_back() -> None:
        nonlocal given_back
        if not given_back:
            given_back = True
            slots.give_back()

    async def body():
        try:
            with fanout.subscribe() as sub:
                yield b"".join([f"retry: {RETRY_MS}\n\n".encode(), *await source.opening()])
                last_write = next_tick = time.monotonic()
                while not fanout.closing.is_set():
                    try:
                        async with asyncio.timeout(max(next_tick - time.monotonic(), 0.0)):
                            await sub.wake.wait()
                    except TimeoutError:
                        pass
                    sub.wake.clear()
                    if fanout.closing.is_set():
                        break
                    chunks: list[bytes] = []
                    end = False
                    if sub.lagged:
                        sub.lagged = False
                        sub.items.clear()
                        more, end = await source.lagged()
                        chunks.extend(more)
                    while sub.items:
                        one = source.alarm(sub.items.popleft())
                        if one is not None:
                            chunks.append(one)
                    now = time.monotonic()
                    if not end and now >= next_tick:
                        next_tick = now + tick
                        last = await source.still_allowed()
                        if last is not None:
                            chunks.extend(last)
                            end = True
                        else:
                            chunks.extend(source.tick())
                    if not chunks and now - last_write >= keepalive:
                        chunks.append(b": keepalive\n\n")
                    if chunks:
                        yield b"".join(chunks)
                        last_write = now
                    if end:
                        break
        finally:
            give_back()

    return stream_response(body(), on_close=give_back, headers={
        "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",  # a reverse proxy must not hold events back
        **(headers or {})})


FANOUT = "live_fanout"
SLOTS = "live_stream_slots"
DEFAULT_MAX_STREAMS = 32


def live_parts(app: App, views) -> tuple[TransitionFanout, StreamSlots]:
    """The app's one fan-out and one set of stream slots, made on first use
    (``views``: gateway.views.Views, whose alarms feed the fan-out)."""
    if FANOUT not in app:
        app[FANOUT] = TransitionFanout(views.alarms)

        async def close(app: App) -> None:
            app[FANOUT].close()  # live streams end at once, so the server can stop

        app.on_shutdown.append(close)
    if SLOTS not in app:
        http = views.http
        app[SLOTS] = StreamSlots(http.max_streams if http is not None else DEFAULT_MAX_STREAMS)
    return app[FANOUT], app[SLOTS]
