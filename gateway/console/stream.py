"""``/console/events``: the live stream a console page listens to (server-sent events).

Events, each a JSON ``data`` line:

- ``hello``: ``{instance, version, server_time}``, first on every connection; a new
  ``instance`` means the gateway restarted, a new ``version`` new page files;
- ``snapshot``: ``{alarms, devices}``, the whole picture, after ``hello`` and again
  whenever the page fell behind;
- ``alarm``: one alarm transition, as published on MQTT ``alarm_events``;
- ``devices``: ``{devices}``, health and last readings, when they changed (at most
  once a second);
- ``auth``: the session ended (logged out, expired, user removed, password or role
  changed); the stream ends.

A comment line every ``PING_SECONDS`` keeps proxies and the page's watchdog content.
The loop itself is the HTTP server's one (``gateway.operations.live_events``).
"""

from __future__ import annotations

from gateway.console.sessions import Session
from gateway.console.state import CONSOLE, COOKIE, Console
from gateway.operations.http_app import Request, Response
from gateway.operations.live_events import event, event_text, live_parts, serve_events

TICK_SECONDS = 1.0
PING_SECONDS = 10.0


async def events(request: Request, session: Session) -> Response:
    """Stream alarm transitions and device health to one page until it goes or the server stops."""
    console = request.app[CONSOLE]
    fanout, slots = live_parts(request.app, console.views)
    stream = ConsoleStream(console, request.cookies.get(COOKIE), covers=console.covers(session),
                           scope=console.scope_key(session))
    return await serve_events(request, stream,
                              fanout=fanout, slots=slots, tick=TICK_SECONDS, keepalive=PING_SECONDS)


class ConsoleStream:
    """What a console page is sent (an ``EventSource`` for ``serve_events``)."""

    def __init__(self, console: Console, token: str | None, covers=None,
                 scope: str | None = None):
        self.console = console
        self.token = token
        self.devices = ""
        # A hub user's scope: only the alarms and gateways it covers are ever sent. Pages of
        # the same scope (key) share the devices' JSON (gateway.console.live.LiveFeed).
        self.covers = covers
        self.scope = scope

    def _snapshot(self) -> bytes:
        feed = self.console.feed
        device_list = feed.device_rows()
        alarms = feed.alarms()
        if self.covers is not None:
            device_list = [d for d in device_list if self.covers(d)]
            alarms = [a for a in alarms if self.covers(a)]
        self.devices = feed.devices_text(covers=self.covers, scope=self.scope)
        return event("snapshot", {"alarms": alarms, "devices": device_list})

    async def opening(self) -> list[bytes]:
        feed = self.console.feed
        hello = event("hello", {"instance": feed.instance, "version": self.console.version,
                                "server_time": self.console.clock.time()})
        return [hello, self._snapshot()]

    def alarm(self, item: dict[str, object]) -> bytes | None:
        if self.covers is not None and not self.covers(item.get("alarm") or {}):
            return None
        return event("alarm", item)

    async def lagged(self) -> tuple[list[bytes], bool]:
        return [self._snapshot()], False

    def tick(self) -> list[bytes]:
        latest = self.console.feed.devices_text(covers=self.covers, scope=self.scope)
        if latest == self.devices:
            return []
        self.devices = latest
        return [event_text("devices", latest)]

    async def still_allowed(self) -> list[bytes] | None:
        # Checked every tick: a password or role change ends the page's stream at once.
        if await self.console.session_for(self.token) is None:
            return [event("auth", {"reason": "session ended"})]
        if self.console.sessions.persist_soon():
            await self.console.sessions.persist()
        return None
