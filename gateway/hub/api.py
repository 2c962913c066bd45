"""The hub's read-only HTTP API (aiohttp).

- ``GET /healthz``: 200 while the broker is connected and the live picture rebuilt,
  else 503 naming what is not.
- ``GET /api/sites``: the fleet by level, subdistrict -> communities -> compounds ->
  gateways, each with its counts (open alarms, unacknowledged urgent, gateways and
  devices offline).
- ``GET /api/alarms``: open alarms across the scope, unacknowledged urgent first;
  filters ``subdistrict``, ``community``, ``compound``, ``building``, ``site``,
  ``kind``, ``level`` (this severity or more urgent).
- ``GET /api/history``: transitions, newest first; the same filters plus ``since``,
  ``until`` (ISO 8601 or epoch seconds), ``event``, ``device``, ``limit``;
  ``format=csv`` for the monthly report (oldest first).

Reads only: commands and users with a scope are the console's (``/console/``, served by
the same server from the gateway's console package, see gateway.hub.console_views).
With a console, or on a listener that is not loopback, ``/api/*`` needs
``Authorization: Bearer <http.token>``: it has no user and so no scope.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

from aiohttp import web

from gateway.backoff import Backoff
from gateway.config.models import HttpConfig
from gateway.hub.history import HistoryError
from gateway.hub.view import HubAlarmsView

log = logging.getLogger(__name__)

VIEW = web.AppKey("view", HubAlarmsView)


def build_app(view: HubAlarmsView, *, health, reads_need_token: bool = False,
              token: str | None = None) -> web.Application:
    """The API app; ``health()`` -> (ok, body) for /healthz.

    ``reads_need_token``: ``/api/*`` answers only with ``Authorization: Bearer <token>``
    (set when the listener is not loopback, or when the console's users have scopes:
    an open read API would show every site to anyone who can reach it)."""
    middlewares = [_errors_as_json]
    if reads_need_token:
        middlewares.append(_token_for_api(token))
    app = web.Application(middlewares=middlewares)
    app[VIEW] = view

    async def healthz(request: web.Request) -> web.Response:
        ok, body = health()
        return web.json_response(body, status=200 if ok else 503)

    async def sites(request: web.Request) -> web.Response:
        return web.json_response(view.fleet())

    async def alarms(request: web.Request) -> web.Response:
        params = dict(request.query)
        if "level" in params or "severity" in params:
            _whole_number(params.get("level", params.get("severity")), "level")
        rows = view.open_alarms(params)
        return web.json_response({"count": len(rows), "alarms": rows})

    async def history(request: web.Request) -> web.Response:
        params = dict(request.query)
        wanted = params.pop("format", "json")
        if wanted == "csv":
            text = await view.history_csv(params)
            return web.Response(text=text, content_type="text/csv", charset="utf-8", headers={
                "Content-Disposition": 'attachment; filename="alarm-history.csv"'})
        if wanted != "json":
            raise web.HTTPBadRequest(text="format: json or csv")
        rows = await view.search_history(params)
        return web.json_response({"count": len(rows), "transitions": rows})

    app.add_routes([web.get("/healthz", healthz), web.get("/api/sites", sites),
                    web.get("/api/alarms", alarms), web.get("/api/history", history)])
    return app


def _whole_number(value: str | None, key: str) -> int:
    try:
        return int(value or "")
    except ValueError:
        raise HistoryError(f"{key}: expected a whole number, got {value!r}") from None


def _token_for_api(token: str | None):
    @web.middleware
    async def check(request: web.Request, handler):
        if request.path.startswith("/api/"):
            scheme, _, value = request.headers.get("Authorization", "").partition(" ")
            if not token:
                return web.json_response({"error": "reads through /api/ need http.token on this "
                                                   "hub (it has console users with scopes)"},
                                         status=403)
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                    value.strip().encode(), token.encode()):
                return web.json_response({"error": "a read here needs 'Authorization: Bearer "
                                                   "<token>'"}, status=401)
        return await handler(request)

    return check


@web.middleware
async def _errors_as_json(request: web.Request, handler):
    try:
        return await handler(request)
    except HistoryError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    except web.HTTPException as exc:
        if exc.status >= 400:
            return web.json_response({"error": exc.text or exc.reason}, status=exc.status)
        raise


class HubHttpServer:
    """Serves the API on ``http.listen``; a port that is taken is retried, never fatal."""

    def __init__(self, *, config: HttpConfig, app: web.Application):
        self.config = config
        self.app = app
        self.listening = False
        self.port: int | None = None

    async def run(self) -> None:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                               shutdown_timeout=1.0)
        await runner.setup()
        try:
            backoff = Backoff(initial=1.0, cap=30.0)
            failing = False
            while True:
                site = web.TCPSite(runner, self.config.host, self.config.port, reuse_address=True)
                try:
                    await site.start()
                    break
                except OSError as exc:
                    if not failing:
                        log.error("hub HTTP API cannot listen on %s: %s; retrying",
                                  self.config.listen, exc.strerror or exc)
                    failing = True
                await asyncio.sleep(backoff.next_delay())
            self.listening = True
            log.info("hub HTTP API on http://%s/ (healthz, api/sites, api/alarms, api/history)",
                     self.config.listen)
            await asyncio.Future()
        finally:
            self.listening = False
            await asyncio.shield(runner.cleanup())


def health_body(*, hub: str, connected: bool, synced: bool, history_pending: int,
                extra: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """``(ok, body)`` for /healthz."""
    down = []
    if not connected:
        down.append("mqtt: not connected")
    elif not synced:
        down.append("mqtt: rebuilding the live picture")
    return not down, {"status": "down" if down else "ok", "hub": hub, "down": down,
                      "history_pending": history_pending, **extra}
