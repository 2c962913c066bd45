"""``/console/events``: the live stream a console page listens to (server-sent events).

Events, each a JSON ``data`` line:

- ``hello``: ``{instance, version, server_time}``, first on every connection; a new
  ``instance`` means the gateway restarted, a new ``version`` new page files;
- ``snapshot``: ``{alarms, devices}``, the whole picture, after ``hello`` and again
  whenever the page fell behind;
- ``alarm``: one alarm transition, as published on MQTT ``alarm_events``;
- ``devices``: ``{devices}``, health and last readings, when they changed (at most
  once a second);
- ``auth``: the session ended (logged out, expired, user removed); the stream ends.

A comment line every ``PING_SECONDS`` keeps proxies and the page's watchdog content.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from gateway.console.live import json_text
from gateway.console.state import CONSOLE, COOKIE
from gateway.console.sessions import Session

TICK_SECONDS = 1.0
PING_SECONDS = 10.0
RETRY_MS = 1000


async def events(request: web.Request, session: Session) -> web.StreamResponse:
    """Stream alarm transitions and device health to one page until it goes or the server stops."""
    console = request.app[CONSOLE]
    feed = console.feed
    token = request.cookies.get(COOKIE)
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",  # a reverse proxy must not hold events back
    })
    await response.prepare(request)
    try:
        with feed.subscribe() as sub:
            await response.write(f"retry: {RETRY_MS}\n\n".encode())
            await _send(response, "hello", {"instance": feed.instance, "version": console.version,
                                            "server_time": console.clock.time()})
            device_list = feed.devices()
            devices = json_text({"devices": device_list})
            await _send_text(response, "snapshot",
                             json_text({"alarms": feed.alarms(), "devices": device_list}))
            next_devices = next_ping = time.monotonic()
            next_ping += PING_SECONDS
            next_devices += TICK_SECONDS
            while not feed.closing.is_set():
                try:
                    async with asyncio.timeout(TICK_SECONDS):
                        await sub.wake.wait()
                except TimeoutError:
                    pass
                sub.wake.clear()
                if feed.closing.is_set():
                    break
                if sub.lagged:
                    sub.lagged = False
                    sub.items.clear()
                    await _send_text(response, "snapshot",
                                     json_text({"alarms": feed.alarms(), "devices": feed.devices()}))
                while sub.items:
                    await _send(response, "alarm", sub.items.popleft())
                now = time.monotonic()
                if now >= next_devices:
                    next_devices = now + TICK_SECONDS
                    latest = feed.devices_text()
                    if latest != devices:
                        devices = latest
                        await _send_text(response, "devices", latest)
                if now >= next_ping:
                    next_ping = now + PING_SECONDS
                    if console.sessions.get(token) is None or console.users.get(session.user) is None:
                        await _send(response, "auth", {"reason": "session ended"})
                        break
                    if console.sessions.persist_soon():
                        await console.sessions.persist()
                    await response.write(b": ping\n\n")
    except ConnectionResetError:  # the page went away; aiohttp's reset errors derive from it
        return response
    return response


async def _send(response: web.StreamResponse, event: str, data: object) -> None:
    await _send_text(response, event, json_text(data))


async def _send_text(response: web.StreamResponse, event: str, text: str) -> None:
    # json_text never emits a raw newline, so one data line carries the whole event
    await response.write(f"event: {event}\ndata: {text}\n\n".encode())
