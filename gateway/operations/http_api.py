"""The local HTTP API: health, metrics, devices, alarms, and a live stream.

One ``gateway.operations.http_app.App`` (microdot underneath) per gateway, built
by ``build_app`` from one
routes function per area (``health_routes``, ``device_routes``, ...); a new area
(the web console) adds its own. It listens on loopback unless the config says
otherwise (``http.listen``).

Every write under ``/api/`` (any method but GET/HEAD/OPTIONS) must pass one of
the app's write authorizers; the built-in one wants ``Authorization: Bearer
<http.token>``. Without a configured token, API writes are refused. Reads under
``/api/`` (the stream included) are open on a loopback listener and need the same
authorization on any other (``gateway.config.advice.is_loopback``). ``/healthz`` and ``/metrics``
stay open. Other areas (the console with its sessions) guard their own routes.

Limits: at most ``http.max_connections`` connections (more are closed as they
arrive), ``http.max_streams`` live streams, and a connection with no request for
``http.idle_timeout`` seconds is closed (gateway.operations.connection_limit);
request bodies of at most 64 KiB (``MAX_BODY``, else 413).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from gateway.alarms.commands import COMMANDS, CommandError
from gateway.config.advice import is_loopback
from gateway.config.models import HttpConfig
from gateway.operations.connection_limit import LimitedServer, serve_app
from gateway.operations.http_app import (MAX_BODY, App, Request, Response, Route, get,
                                         json_response, post, response)
from gateway.operations.device_view import devices_view, reading_view
from gateway.operations.live_events import event, live_parts, serve_events
from gateway.operations.metrics import CONTENT_TYPE, render

if TYPE_CHECKING:
    from gateway.operations.metrics import CollectorRegistry

    from gateway.views import Views

log = logging.getLogger(__name__)

# Who may write: returns a name for the log and the alarm history, or None.
WriteAuthorizer = Callable[[Request], Awaitable[str | None]]

# app-wide state (app[KEY]) and per-request state (request[ACTOR])
VIEWS = "views"
TOKEN = "token"
WRITE_AUTHORIZERS = "write_authorizers"
READS_NEED_AUTH = "reads_need_auth"
REFUSALS = "refusals"
ACTOR = "actor"

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The live stream looks at the latest readings this often (a person is watching).
STREAM_PERIOD = 0.25
STREAM_KEEPALIVE = 15.0


def build_app(views: Views, *, token: str | None, health: HealthCheck,
              metrics: CollectorRegistry, extend: Extension | None = None) -> App:
    """The application with every area's routes; no socket is opened here.

    ``extend(app, actor_of)`` adds the rest a process serves (the console, a site's
    zone arming and device digest), given how to name the credential a write came
    with; the API itself knows nothing of them."""
    app = App(middlewares=[_guard_api])  # a handler's exception: 500 JSON (http_app)
    app[VIEWS] = views
    app[TOKEN] = token
    app[WRITE_AUTHORIZERS] = [bearer_token]
    http = views.http or HttpConfig()
    app[READS_NEED_AUTH] = not is_loopback(http.host)  # reachable from elsewhere
    app[REFUSALS] = _RefusalLog()
    live_parts(app, views)  # the alarm fan-out and stream slots, shared with the console
    app.add_routes(health_routes(health, metrics))
    for routes in (device_routes, alarm_routes, stream_routes):
        app.add_routes(routes(views))
    if extend is not None:
        extend(app, lambda request: request.get(ACTOR))
    return app


# -- guards ------------------------------------------------------------------------


async def bearer_token(request: Request) -> str | None:
    """The built-in write authorizer: ``Authorization: Bearer <http.token>``."""
    token = request.app[TOKEN]
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if not token or scheme.lower() != "bearer":
        return None
    if hmac.compare_digest(value.strip().encode(), str(token).encode()):
        return "api-token"
    return None


async def _guard_api(request: Request, handler) -> Response:
    if not request.path.startswith("/api/"):
        return await handler(request)
    write = request.method not in SAFE_METHODS
    if not write and not request.app[READS_NEED_AUTH]:
        return await handler(request)
    for authorize in request.app[WRITE_AUTHORIZERS]:
        who = await authorize(request)
        if who is not None:
            request[ACTOR] = who
            return await handler(request)
    what = "writes" if write else "reads on a listener that is not loopback"
    if not request.app[TOKEN] and len(request.app[WRITE_AUTHORIZERS]) == 1:
        return _error(403, f"{what} through the API are disabled: no http.token is configured")
    request.app[REFUSALS].note(request)
    return _error(401, f"{'a write' if write else 'a read here'} needs 'Authorization: Bearer <token>'",
                  headers={"WWW-Authenticate": 'Bearer realm="community-gateway"'})


class _RefusalLog:
    """Requests refused for a missing or wrong token: the first logged at once, then at
    most one line a minute with the count, so a scanner cannot flood the journal."""

    EVERY = 60.0

    def __init__(self) -> None:
        self._last = -self.EVERY
        self._count = 0

    def note(self, request: Request) -> None:
        self._count += 1
        now = asyncio.get_running_loop().time()
        if now - self._last >= self.EVERY:
            log.warning("HTTP %s %s from %s refused: missing or wrong token (%d refused since "
                        "the last such line)", request.method, request.path, request.remote,
                        self._count)
            self._last, self._count = now, 0


def _error(status: int, message: str, **extra: Any) -> Response:
    return _json({"error": message}, status=status, **extra)


def _json(body: object, **kwargs: Any) -> Response:
    """A JSON answer; NaN and infinity become null (see gateway.json_safe)."""
    return json_response(body, **kwargs)


# -- health and metrics --------------------------------------------------------------


# ``/healthz``: (healthy, body naming what is down); see gateway.operations.liveness.
HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]
# The name of the credential a request came with (the API token, a session), or None.
ActorOf = Callable[[Request], "str | None"]
Extension = Callable[[App, ActorOf], None]


def health_routes(health: HealthCheck, registry: CollectorRegistry) -> list[Route]:
    """``/healthz`` (200 or 503 naming what is down) and ``/metrics`` (Prometheus text)."""

    async def healthz(request: Request) -> Response:
        ok, body = health()
        return _json(body, status=200 if ok else 503)

    async def metrics(request: Request) -> Response:
        return response(render(registry), content_type=CONTENT_TYPE)

    return [get("/healthz", healthz), get("/metrics", metrics)]


# -- devices ---------------------------------------------------------------------------


def device_routes(views: Views) -> list[Route]:
    """``/api/devices``: every device with its health and latest readings."""

    async def devices(request: Request) -> Response:
        return _json({"devices": devices_view(views.devices)})

    return [get("/api/devices", devices)]


# -- alarms ---------------------------------------------------------------------------


def alarm_routes(views: Views) -> list[Route]:
    """``GET /api/alarms`` (open alarms, recently closed ones, recent transitions;
    ``?history=N``), ``GET /api/alarms/{id}/history`` and
    ``POST /api/alarms/{id}/{ack|reset|shelve|unshelve}`` with
    ``{"by", "note", "minutes"}`` (token required; see gateway.alarms.commands)."""

    alarms = views.alarms

    async def list_alarms(request: Request) -> Response:
        try:
            limit = max(0, min(int(request.query.get("history", "100")), 10_000))
        except ValueError:
            return _error(400, "'history' must be a whole number")
        return _json({
            "alarms": [a.to_json() for a in alarms.open_alarms()],
            "closed": alarms.recently_closed(),
            "history": await alarms.history(limit=limit) if limit else [],
        })

    async def alarm_history(request: Request) -> Response:
        alarm_id = request.match_info["alarm_id"]
        return _json({"alarm": alarm_id,
                       "history": await alarms.history(alarm_id=alarm_id)})

    async def command(request: Request) -> Response:
        alarm_id, name = request.match_info["alarm_id"], request.match_info["command"]
        body = await request.read()
        try:
            alarm = alarms.apply_command(alarm_id, name, body)
        except CommandError as exc:
            return _json(exc.to_json(), status=exc.status)
        log.info("alarm %s: %s through the API (%s)", alarm_id, name, request.get(ACTOR))
        return _json(alarm.to_json())

    return [get("/api/alarms", list_alarms),
            get("/api/alarms/{alarm_id}/history", alarm_history),
            post("/api/alarms/{alarm_id}/{command:%s}" % "|".join(COMMANDS), command)]


# -- live stream ------------------------------------------------------------------------


def stream_routes(views: Views) -> list[Route]:
    """``/api/stream``: server-sent events, ``reading`` and ``alarm``, as they happen.

    Query: ``device=ID`` and ``kind=KIND`` filter (repeatable), ``alarms=0`` or
    ``readings=0`` leave one out. Readings are the latest per device and channel,
    looked at four times a second (a faster device shows its most recent value).
    A client that falls too far behind gets ``overflow`` and the stream ends (it
    reconnects and starts afresh).
    """

    async def stream(request: Request) -> Response:
        fanout, slots = live_parts(request.app, views)
        return await serve_events(request, ApiStream(views, request.query), fanout=fanout,
                                  slots=slots, tick=STREAM_PERIOD, keepalive=STREAM_KEEPALIVE)

    return [get("/api/stream", stream)]


class ApiStream:
    """What ``/api/stream`` sends (an ``EventSource`` for ``serve_events``)."""

    def __init__(self, views: Views, query: Any):
        self.view = views.devices
        self.devices = set(query.getall("device", []))
        self.kinds = set(query.getall("kind", []))
        self.want_alarms = query.get("alarms", "1") != "0"
        self.want_readings = query.get("readings", "1") != "0"
        self.sent: dict[tuple[str, int | None], float] = {}

    def selected(self, device: str, kind: str) -> bool:
        return (not self.devices or device in self.devices) and (not self.kinds or kind in self.kinds)

    async def opening(self) -> list[bytes]:
        return []

    def alarm(self, item: dict[str, Any]) -> bytes | None:
        a = item["alarm"]
        if self.want_alarms and self.selected(str(a["device"]), str(a["kind"])):
            return event("alarm", item)
        return None

    async def lagged(self) -> tuple[list[bytes], bool]:
        return [b"event: overflow\ndata: {}\n\n"], True

    def tick(self) -> list[bytes]:
        if not self.want_readings:
            return []
        out = []
        specs = self.view.specs()
        for key, reading in list(self.view.latest().items()):
            if self.sent.get(key) == reading.ts:
                continue
            spec = specs.get(reading.device)
            kind = spec.kind if spec else "unknown"
            if not self.selected(reading.device, kind):
                continue
            self.sent[key] = reading.ts
            out.append(event("reading", reading_view(reading, kind)))
        return out

    async def still_allowed(self) -> list[bytes] | None:
        return None


# -- the server ----------------------------------------------------------------------------


class HttpServer:
    """Serves the app on ``http.listen``; a port that is taken is retried, never fatal.

    Alarms matter more than the API: if the address cannot be bound the gateway
    keeps running, logs it once, and retries with backoff.
    """

    def __init__(self, *, config: HttpConfig, views: Views, token: str | None,
                 health: HealthCheck, metrics: CollectorRegistry,
                 extend: Extension | None = None):
        self.config = config
        self.app = build_app(views, token=token, health=health, metrics=metrics, extend=extend)
        self.listening = False
        self.site: LimitedServer | None = None

    async def run(self, sock: socket.socket | None = None) -> None:
        """Serve until cancelled; on ``sock`` when given, already listening (bound at the
        gateway's start by ``http_on_demand``), else on ``http.listen``."""
        await serve_app(self, self.app, self.config, sock=sock, what="HTTP API",
                    routes="healthz, metrics, api")
