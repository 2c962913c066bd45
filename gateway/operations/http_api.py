"""The local HTTP API: health, metrics, devices, alarms, and a live stream.

One ``aiohttp.web.Application`` per gateway, built by ``build_app`` from one
routes function per area (``health_routes``, ``device_routes``, ...); a new area
(the web console) adds its own. It listens on loopback unless the config says
otherwise (``http.listen``).

Reads are open. Every write under ``/api/`` (any method but GET/HEAD/OPTIONS)
must pass one of the app's write authorizers; the built-in one wants
``Authorization: Bearer <http.token>``. Without a configured token, API writes
are refused. Other areas (the console with its sessions) guard their own routes.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.alarms.commands import COMMANDS, CommandError
from gateway.alarms.manager import Transition
from gateway.backoff import Backoff
from gateway.config.models import HttpConfig
from gateway.console import add_console_routes
from gateway.operations.metrics import CONTENT_TYPE, render
from gateway.readings import Reading

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from gateway.views import AlarmsView, DevicesView, Views

log = logging.getLogger(__name__)

# Who may write: returns a name for the log and the alarm history, or None.
WriteAuthorizer = Callable[[web.Request], Awaitable[str | None]]
# ``/healthz``: (healthy, body naming what is down); see gateway.operations.liveness.
HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]

VIEWS = web.AppKey("views", object)
TOKEN = web.AppKey("token", object)
WRITE_AUTHORIZERS = web.AppKey("write_authorizers", list)
ALARM_FEED = web.AppKey("alarm_feed", object)
CLOSING = web.AppKey("closing", asyncio.Event)
ACTOR = web.RequestKey("actor", str)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_BODY = 64 * 1024
# The live stream looks at the latest readings this often (a person is watching).
STREAM_PERIOD = 0.25
STREAM_KEEPALIVE = 15.0
STREAM_QUEUE = 1000


def build_app(views: Views, *, token: str | None, health: HealthCheck,
              metrics: CollectorRegistry) -> web.Application:
    """The application with every area's routes; no socket is opened here."""
    app = web.Application(middlewares=[_errors_as_json, _guard_writes], client_max_size=MAX_BODY)
    app[VIEWS] = views
    app[TOKEN] = token
    app[WRITE_AUTHORIZERS] = [bearer_token]
    app[ALARM_FEED] = AlarmFeed(views.alarms)
    app[CLOSING] = asyncio.Event()  # set at shutdown: live streams end at once

    async def closing(app: web.Application) -> None:
        app[CLOSING].set()

    app.on_shutdown.append(closing)
    app.add_routes(health_routes(health, metrics))
    for routes in (device_routes, alarm_routes, stream_routes):
        app.add_routes(routes(views))
    if views.console is not None:
        add_console_routes(app, views)  # /console: the security room's page, session-guarded
    return app


# -- guards ------------------------------------------------------------------------


async def bearer_token(request: web.Request) -> str | None:
    """The built-in write authorizer: ``Authorization: Bearer <http.token>``."""
    token = request.app[TOKEN]
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if not token or scheme.lower() != "bearer":
        return None
    if hmac.compare_digest(value.strip().encode(), str(token).encode()):
        return "api-token"
    return None


@web.middleware
async def _guard_writes(request: web.Request, handler):
    if request.method in SAFE_METHODS or not request.path.startswith("/api/"):
        return await handler(request)
    for authorize in request.app[WRITE_AUTHORIZERS]:
        who = await authorize(request)
        if who is not None:
            request[ACTOR] = who
            return await handler(request)
    if not request.app[TOKEN] and len(request.app[WRITE_AUTHORIZERS]) == 1:
        return _error(403, "writes through the API are disabled: no http.token is configured")
    log.warning("HTTP %s %s from %s refused: missing or wrong token", request.method,
                request.path, request.remote)
    return _error(401, "a write needs 'Authorization: Bearer <token>'",
                  headers={"WWW-Authenticate": 'Bearer realm="community-gateway"'})


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
    return web.json_response({"error": message}, status=status, **extra)


# -- health and metrics --------------------------------------------------------------


def health_routes(health: HealthCheck, registry: CollectorRegistry) -> list[web.RouteDef]:
    """``/healthz`` (200 or 503 naming what is down) and ``/metrics`` (Prometheus text)."""

    async def healthz(request: web.Request) -> web.Response:
        ok, body = health()
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=render(registry), headers={"Content-Type": CONTENT_TYPE})

    return [web.get("/healthz", healthz), web.get("/metrics", metrics)]


# -- devices ---------------------------------------------------------------------------


def device_routes(views: Views) -> list[web.RouteDef]:
    """``/api/devices``: every device with its health and latest readings."""

    async def devices(request: web.Request) -> web.Response:
        return web.json_response({"devices": devices_json(views.devices)})

    return [web.get("/api/devices", devices)]


def devices_json(devices: DevicesView) -> list[dict[str, Any]]:
    """Each running device: what it is, where, how it is doing, what it read last."""
    latest: dict[str, dict[str, Any]] = {}
    for (device, channel), reading in list(devices.latest().items()):
        latest.setdefault(device, {})["" if channel is None else str(channel)] = {
            "values": reading.values, "ts": reading.ts}
    specs = devices.specs()
    out = []
    for device_id, health in devices.health().items():
        spec = specs.get(device_id)
        item: dict[str, Any] = {"id": device_id}
        if spec is not None:
            item.update(kind=spec.kind, type=spec.config.type, location=spec.location(),
                        channel_name=spec.channel_name, channels=spec.channel_count)
            if getattr(spec.config, "bus", None):
                item["bus"] = spec.config.bus
        item.update(health.to_json())
        item["latest"] = latest.get(device_id, {})
        out.append(item)
    return sorted(out, key=lambda d: d["id"])


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
        return web.json_response({
            "alarms": [a.to_json() for a in alarms.open_alarms()],
            "closed": alarms.recently_closed(),
            "history": await alarms.history(limit=limit) if limit else [],
        })

    async def alarm_history(request: web.Request) -> web.Response:
        alarm_id = request.match_info["alarm_id"]
        return web.json_response({"alarm": alarm_id,
                                  "history": await alarms.history(alarm_id=alarm_id)})

    async def command(request: web.Request) -> web.Response:
        alarm_id, name = request.match_info["alarm_id"], request.match_info["command"]
        body = await request.read()
        try:
            alarm = alarms.apply_command(alarm_id, name, body)
        except CommandError as exc:
            return web.json_response(exc.to_json(), status=exc.status)
        log.info("alarm %s: %s through the API (%s)", alarm_id, name, request.get(ACTOR))
        return web.json_response(alarm.to_json())

    return [web.get("/api/alarms", list_alarms),
            web.get("/api/alarms/{alarm_id}/history", alarm_history),
            web.post("/api/alarms/{alarm_id}/{command:%s}" % "|".join(COMMANDS), command)]


# -- live stream ------------------------------------------------------------------------


class AlarmFeed:
    """Fans alarm transitions out to live-stream clients, each with a bounded queue.

    A client that falls so far behind that its queue fills is cut off (it can
    reconnect) instead of holding memory or slowing the alarm manager.
    """

    def __init__(self, alarms: AlarmsView):
        self._subscribers: set[AlarmSubscriber] = set()
        alarms.add_listener(self._on_transition)

    def subscribe(self) -> AlarmSubscriber:
        """A new client's queue of transitions."""
        sub = AlarmSubscriber(queue=asyncio.Queue(maxsize=STREAM_QUEUE))
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: AlarmSubscriber) -> None:
        """Forget a client."""
        self._subscribers.discard(sub)

    def _on_transition(self, t: Transition) -> None:
        for sub in list(self._subscribers):
            try:
                sub.queue.put_nowait(t)
            except asyncio.QueueFull:
                sub.overflowed = True
                self._subscribers.discard(sub)


@dataclass(slots=True, eq=False)
class AlarmSubscriber:
    """One live-stream client's transitions; ``overflowed`` once it fell too far behind."""

    queue: asyncio.Queue[Transition]
    overflowed: bool = False


def stream_routes(views: Views) -> list[web.RouteDef]:
    """``/api/stream``: server-sent events, ``reading`` and ``alarm``, as they happen.

    Query: ``device=ID`` and ``kind=KIND`` filter (repeatable), ``alarms=0`` or
    ``readings=0`` leave one out. Readings are the latest per device and channel,
    looked at four times a second (a faster device shows its most recent value).
    """

    async def stream(request: web.Request) -> web.StreamResponse:
        devices = set(request.query.getall("device", []))
        kinds = set(request.query.getall("kind", []))
        want_alarms = request.query.get("alarms", "1") != "0"
        want_readings = request.query.get("readings", "1") != "0"

        def selected(device: str, kind: str) -> bool:
            return (not devices or device in devices) and (not kinds or kind in kinds)

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        feed: AlarmFeed = request.app[ALARM_FEED]  # type: ignore[assignment]
        sub = feed.subscribe()
        closing = request.app[CLOSING]
        loop = asyncio.get_running_loop()
        sent: dict[tuple[str, int | None], float] = {}
        last_write = loop.time()
        arrived: list[Transition] = []
        try:
            while not closing.is_set():
                chunks = []
                while not sub.queue.empty():
                    arrived.append(sub.queue.get_nowait())
                for t in arrived:
                    a = t.alarm
                    if want_alarms and selected(str(a["device"]), str(a["kind"])):
                        chunks.append(_sse("alarm", t.to_json()))
                arrived.clear()
                if sub.overflowed:
                    chunks.append(b"event: overflow\ndata: {}\n\n")
                elif want_readings:
                    chunks.extend(_new_readings(views.devices, sent, selected))
                if not chunks and loop.time() - last_write > STREAM_KEEPALIVE:
                    chunks.append(b": keepalive\n\n")
                if chunks:
                    await response.write(b"".join(chunks))
                    last_write = loop.time()
                if sub.overflowed:
                    return response  # the client reconnects and starts afresh
                try:
                    async with asyncio.timeout(STREAM_PERIOD):
                        arrived.append(await sub.queue.get())
                except TimeoutError:
                    pass
        except ConnectionResetError:
            pass  # the client went away
        finally:
            feed.unsubscribe(sub)
        return response

    return [web.get("/api/stream", stream)]


def _new_readings(devices: DevicesView, sent: dict[tuple[str, int | None], float],
                  selected: Callable[[str, str], bool]) -> list[bytes]:
    out = []
    specs = devices.specs()
    for key, reading in list(devices.latest().items()):
        if sent.get(key) == reading.ts:
            continue
        spec = specs.get(reading.device)
        kind = spec.kind if spec else "unknown"
        if not selected(reading.device, kind):
            continue
        sent[key] = reading.ts
        out.append(_sse("reading", _reading_json(reading, kind)))
    return out


def _reading_json(reading: Reading, kind: str) -> dict[str, Any]:
    return {"device": reading.device, "kind": kind, "channel": reading.channel,
            "values": reading.values, "ts": reading.ts}


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


# -- the server ----------------------------------------------------------------------------


class HttpServer:
    """Serves the app on ``http.listen``; a port that is taken is retried, never fatal.

    Alarms matter more than the API: if the address cannot be bound the gateway
    keeps running, logs it once, and retries with backoff.
    """

    def __init__(self, *, config: HttpConfig, views: Views, token: str | None,
                 health: HealthCheck, metrics: CollectorRegistry):
        self.config = config
        self.app = build_app(views, token=token, health=health, metrics=metrics)
        self.listening = False

    async def run(self) -> None:
        """Serve until cancelled."""
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
                        log.error("HTTP API cannot listen on %s: %s; retrying", self.config.listen,
                                  exc.strerror or exc)
                    failing = True
                await asyncio.sleep(backoff.next_delay())
            self.listening = True
            log.info("HTTP API on http://%s/ (healthz, metrics, api)", self.config.listen)
            await asyncio.Future()  # serve until cancelled
        finally:
            self.listening = False
            # In a task of its own: aiohttp's graceful shutdown gives up at once
            # inside a task that is being cancelled, and would leave handlers behind.
            await asyncio.shield(runner.cleanup())
