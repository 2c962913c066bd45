"""The local HTTP API: health, metrics, devices, alarms, and a live stream.

One ``aiohttp.web.Application`` per gateway, built by ``build_app`` from one
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
``http.idle_timeout`` seconds is closed.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import hdrs, web

from gateway import json_safe
from gateway.alarms.commands import COMMANDS, CommandError
from gateway.backoff import Backoff
from gateway.config.advice import is_loopback
from gateway.config.models import HttpConfig
from gateway.operations.connection_limit import LimitedTCPSite, OutOfFilesLogFilter, effective_limit
from gateway.operations.device_view import devices_view, reading_view
from gateway.operations.live_events import event, live_parts, serve_events
from gateway.operations.metrics import CONTENT_TYPE, render

if TYPE_CHECKING:
    from gateway.operations.metrics import CollectorRegistry

    from gateway.views import Views

log = logging.getLogger(__name__)

# Who may write: returns a name for the log and the alarm history, or None.
WriteAuthorizer = Callable[[web.Request], Awaitable[str | None]]

VIEWS = web.AppKey("views", object)
TOKEN = web.AppKey("token", object)
WRITE_AUTHORIZERS = web.AppKey("write_authorizers", list)
READS_NEED_AUTH = web.AppKey("reads_need_auth", bool)
REFUSALS = web.AppKey("refusals", object)
ACTOR = web.RequestKey("actor", str)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_BODY = 64 * 1024
# The live stream looks at the latest readings this often (a person is watching).
STREAM_PERIOD = 0.25
STREAM_KEEPALIVE = 15.0


def build_app(views: Views, *, token: str | None, health: HealthCheck,
              metrics: CollectorRegistry, extend: Extension | None = None) -> web.Application:
    """The application with every area's routes; no socket is opened here.

    ``extend(app, actor_of)`` adds the rest a process serves (the console, a site's
    zone arming and device digest), given how to name the credential a write came
    with; the API itself knows nothing of them."""
    app = web.Application(middlewares=[_errors_as_json, _guard_api], client_max_size=MAX_BODY)
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


async def bearer_token(request: web.Request) -> str | None:
    """The built-in write authorizer: ``Authorization: Bearer <http.token>``."""
    token = request.app[TOKEN]
    given = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, value = given.partition(" ")
    if not token or scheme.lower() != "bearer":
        return None
    if hmac.compare_digest(value.strip().encode(), str(token).encode()):
        return "api-token"
    return None


@web.middleware
async def _guard_api(request: web.Request, handler):
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

    def note(self, request: web.Request) -> None:
        self._count += 1
        now = asyncio.get_running_loop().time()
        if now - self._last >= self.EVERY:
            log.warning("HTTP %s %s from %s refused: missing or wrong token (%d refused since "
                        "the last such line)", request.method, request.path, request.remote,
                        self._count)
            self._last, self._count = now, 0



@web.middleware
async def _errors_as_json(request: web.Request, handler):
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:  # a bug in one handler must not take the API down
        log.exception("HTTP %s %s failed", request.method, request.path)
        return _error(500, "internal error; see the gateway's log")


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return _json({"error": message}, status=status, **extra)


def _json(body: object, **kwargs: Any) -> web.Response:
    """A JSON answer; NaN and infinity become null (see gateway.json_safe)."""
    return web.json_response(body, dumps=json_safe.dumps, **kwargs)


# -- health and metrics --------------------------------------------------------------


# ``/healthz``: (healthy, body naming what is down); see gateway.operations.liveness.
HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]
# The name of the credential a request came with (the API token, a session), or None.
ActorOf = Callable[[web.Request], "str | None"]
Extension = Callable[[web.Application, ActorOf], None]


def health_routes(health: HealthCheck, registry: CollectorRegistry) -> list[web.RouteDef]:
    """``/healthz`` (200 or 503 naming what is down) and ``/metrics`` (Prometheus text)."""

    async def healthz(request: web.Request) -> web.Response:
        ok, body = health()
        return _json(body, status=200 if ok else 503)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=render(registry), headers={"Content-Type": CONTENT_TYPE})

    return [web.get("/healthz", healthz), web.get("/metrics", metrics)]


# -- devices ---------------------------------------------------------------------------


def device_routes(views: Views) -> list[web.RouteDef]:
    """``/api/devices``: every device with its health and latest readings."""

    async def devices(request: web.Request) -> web.Response:
        return _json({"devices": devices_view(views.devices)})

    return [web.get("/api/devices", devices)]


# -- alarms ---------------------------------------------------------------------------


def alarm_routes(views: Views) -> list[web.RouteDef]:
    """``GET /api/alarms`` (open alarms, recently closed ones, recent transitions;
    ``?history=N``), ``GET /api/alarms/{id}/history`` and
    ``POST /api/alarms/{id}/{ack|reset|shelve|unshelve}`` with
    ``{"by", "note", "minutes"}`` (token required; see gateway.alarms.commands)."""

    alarms = views.alarms

    async def list_alarms(request: web.Request) -> web.Response:
        try:
            limit = max(0, min(int(request.query.get("history", "100")), 10_000))
        except ValueError:
            return _error(400, "'history' must be a whole number")
        return _json({
            "alarms": [a.to_json() for a in alarms.open_alarms()],
            "closed": alarms.recently_closed(),
            "history": await alarms.history(limit=limit) if limit else [],
        })

    async def alarm_history(request: web.Request) -> web.Response:
        alarm_id = request.match_info["alarm_id"]
        return _json({"alarm": alarm_id,
                       "history": await alarms.history(alarm_id=alarm_id)})

    async def command(request: web.Request) -> web.Response:
        alarm_id, name = request.match_info["alarm_id"], request.match_info["command"]
        body = await request.read()
        try:
            alarm = alarms.apply_command(alarm_id, name, body)
        except CommandError as exc:
            return _json(exc.to_json(), status=exc.status)
        log.info("alarm %s: %s through the API (%s)", alarm_id, name, request.get(ACTOR))
        return _json(alarm.to_json())

    return [web.get("/api/alarms", list_alarms),
            web.get("/api/alarms/{alarm_id}/history", alarm_history),
            web.post("/api/alarms/{alarm_id}/{command:%s}" % "|".join(COMMANDS), command)]


# -- live stream ------------------------------------------------------------------------


def stream_routes(views: Views) -> list[web.RouteDef]:
    """``/api/stream``: server-sent events, ``reading`` and ``alarm``, as they happen.

    Query: ``device=ID`` and ``kind=KIND`` filter (repeatable), ``alarms=0`` or
    ``readings=0`` leave one out. Readings are the latest per device and channel,
    looked at four times a second (a faster device shows its most recent value).
    A client that falls too far behind gets ``overflow`` and the stream ends (it
    reconnects and starts afresh).
    """

    async def stream(request: web.Request) -> web.StreamResponse:
        fanout, slots = live_parts(request.app, views)
        return await serve_events(request, ApiStream(views, request.query), fanout=fanout,
                                  slots=slots, tick=STREAM_PERIOD, keepalive=STREAM_KEEPALIVE)

    return [web.get("/api/stream", stream)]


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
        self.site: LimitedTCPSite | None = None

    async def run(self, sock: socket.socket | None = None) -> None:
        """Serve until cancelled; on ``sock`` when given, already listening (bound at the
        gateway's start by ``http_on_demand``), else on ``http.listen``."""
        # keepalive_timeout also closes a connection that never sends a request
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                               shutdown_timeout=1.0, keepalive_timeout=self.config.idle_timeout)
        await runner.setup()
        files_filter = OutOfFilesLogFilter()
        logging.getLogger("asyncio").addFilter(files_filter)  # accept() failing every second
        try:
            backoff = Backoff(initial=1.0, cap=30.0)
            failing = False
            max_connections = effective_limit(self.config.max_connections)
            while True:
                site = LimitedTCPSite(runner, self.config.host, self.config.port, reuse_address=True,
                                      max_connections=max_connections, sock=sock)
                self.site = site
                try:
                    await site.start()
                    break
                except OSError as exc:
                    if not failing:
                        log.error("HTTP API cannot listen on %s: %s; retrying", self.config.listen,
                                  exc.strerror or exc)
                    failing = True
                await asyncio.sleep(backoff.next_delay())
            self.listening = True
            if sock is None:  # else said when the socket was bound
                log.info("HTTP API on http://%s/ (healthz, metrics, api)", self.config.listen)
            await asyncio.Future()  # serve until cancelled
        finally:
            self.listening = False
            logging.getLogger("asyncio").removeFilter(files_filter)
            # In a task of its own: aiohttp's graceful shutdown gives up at once
            # inside a task that is being cancelled, and would leave handlers behind.
            await asyncio.shield(runner.cleanup())
