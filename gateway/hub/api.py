"""The hub's read-only HTTP API (gateway.operations.http_app, microdot underneath).

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
The server's limits are the gateway's (``http.max_connections``, ``http.max_streams``,
``http.idle_timeout``; gateway.operations.connection_limit).
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from gateway.config.models import HttpConfig
from gateway.hub.history import HistoryError
from gateway.hub.view import HubAlarmsView
from gateway.operations.connection_limit import serve_app
from gateway.operations.http_app import (App, HttpError, Request, Response, get, json_response,
                                         text_response)

log = logging.getLogger(__name__)

VIEW = "view"  # the app's HubAlarmsView (app[VIEW])


def build_app(view: HubAlarmsView, *, health, reads_need_token: bool = False,
              token: str | None = None) -> App:
    """The API app; ``health()`` -> (ok, body) for /healthz.

    ``reads_need_token``: ``/api/*`` answers only with ``Authorization: Bearer <token>``
    (set when the listener is not loopback, or when the console's users have scopes:
    an open read API would show every site to anyone who can reach it)."""
    middlewares = [_history_errors_as_json]
    if reads_need_token:
        middlewares.append(_token_for_api(token))
    app = App(middlewares=middlewares)
    app[VIEW] = view

    async def healthz(request: Request) -> Response:
        ok, body = health()
        return json_response(body, status=200 if ok else 503)

    async def sites(request: Request) -> Response:
        return json_response(view.fleet())

    async def alarms(request: Request) -> Response:
        params = dict(request.query)
        if "level" in params or "severity" in params:
            _whole_number(params.get("level", params.get("severity")), "level")
        rows = view.open_alarms(params)
        return json_response({"count": len(rows), "alarms": rows})

    async def history(request: Request) -> Response:
        params = dict(request.query)
        wanted = params.pop("format", "json")
        if wanted == "csv":
            text = await view.history_csv(params)
            return text_response(text, content_type="text/csv", headers={
                "Content-Disposition": 'attachment; filename="alarm-history.csv"'})
        if wanted != "json":
            raise HttpError(400, "format: json or csv")
        rows = await view.search_history(params)
        return json_response({"count": len(rows), "transitions": rows})

    app.add_routes([get("/healthz", healthz), get("/api/sites", sites),
                    get("/api/alarms", alarms), get("/api/history", history)])
    return app


def _whole_number(value: str | None, key: str) -> int:
    try:
        return int(value or "")
    except ValueError:
        raise HistoryError(f"{key}: expected a whole number, got {value!r}") from None


def _token_for_api(token: str | None):
    async def check(request: Request, handler) -> Response:
        if request.path.startswith("/api/"):
            scheme, _, value = request.headers.get("Authorization", "").partition(" ")
            if not token:
                return json_response({"error": "reads through /api/ need http.token on this "
                                               "hub (it has console users with scopes)"},
                                     status=403)
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                    value.strip().encode(), token.encode()):
                return json_response({"error": "a read here needs 'Authorization: Bearer "
                                               "<token>'"}, status=401)
        return await handler(request)

    return check


async def _history_errors_as_json(request: Request, handler) -> Response:
    try:
        return await handler(request)
    except HistoryError as exc:
        return json_response({"error": str(exc)}, status=400)


class HubHttpServer:
    """Serves the API on ``http.listen``; a port that is taken is retried, never fatal."""

    def __init__(self, *, config: HttpConfig, app: App):
        self.config = config
        self.app = app
        self.listening = False
        self.site = None  # the LimitedServer, once serving

    @property
    def port(self) -> int | None:
        return self.site.port if self.site is not None else None

    async def run(self) -> None:
        await serve_app(self, self.app, self.config, sock=None, what="hub HTTP API",
                    routes="healthz, api/sites, api/alarms, api/history")


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
