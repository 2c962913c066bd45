"""The console's HTTP routes, added to the gateway's (or the hub's) HTTP app.

Pages: ``/console/`` (the console), ``/console/login``; static files under
``/console/static/``. JSON under ``/console/api/``: ``me``, ``alarms``,
``devices``, ``history``, ``login``, ``logout``, ``alarms/{id}/{ack|reset|shelve}`` and
``devices/{id}/chart.svg?field=NAME`` (the field's last hour, see ``recent.py``);
``zones``, ``zones/{action}`` and ``digest`` (see ``zones.py``).
Live updates: ``/console/events`` (server-sent events, see ``stream.py``).

Every route but the login page and static files needs a session. Every POST
must carry the session's CSRF token in ``X-CSRF-Token`` and, when the browser
sends an ``Origin``, come from this server's own origin. Actions need the
operator role; the viewer role sees everything and changes nothing.
"""

from __future__ import annotations

import hmac
import inspect
import logging
import math
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.alarms.commands import COMMANDS, CommandError
from gateway.config.models import ConsoleConfig
from gateway.console.chart_svg import render_chart
from gateway.console.history import query_history
from gateway.console.passwords import ChecksBusy
from gateway.console.sessions import Session
from gateway.console.state import CONSOLE, COOKIE, STATIC, Console
from gateway.console.recent import RecentReadings
from gateway.console.stream import events
from gateway.console.zones import add_zone_routes
from gateway.operations.http_app import (App, Request, Response, delete_cookie,
                                         get, json_response, post, redirect, set_cookie,
                                         text_response)
from gateway.operations.live_events import live_parts
from gateway.views import CommandOutcome, Views

log = logging.getLogger(__name__)

PREFIX = "/console"
# Headers on every page and JSON answer: no caching, no framing, scripts only from here.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
}
NOTE_MAX = 500
PLAIN_NAME = re.compile(r"[\w.@-]{1,64}")
# Shelving choices offered on the page (those within the site's alarms.max_shelve_minutes).
SHELVE_MINUTES = (15, 30, 60, 120, 240, 480)


RECENT = "console-recent"  # the app's RecentReadings (app[RECENT])
# Channel names on the charts' legends, in the page's language.
CHANNEL_LABELS = {"en": {"port": "Port {}", "door": "Door {}"}, "zh": {"port": "{}号端口", "door": "{}号门"}}


Handler = Callable[[Request, Session], Awaitable[Response]]


def add_console_routes(app: App, views: Views,
                       config: ConsoleConfig | None = None) -> Console:
    """Serve the security-room console under /console on ``app``; the Console it runs.

    ``views`` is what it shows and acts on (gateway.views); ``config`` defaults to
    the site config's ``console`` section. The users file is read now: a missing or
    invalid one is a ConfigError, as for any config.
    """
    config = config or views.console
    if config is None:
        raise ValueError("the site config has no console section")
    console = Console(views=views, config=config, base_dir=views.config_dir)
    users = console.users.load()
    if not users:
        log.warning("console: no users in %s; add one with `community-gateway user add`",
                    console.users.path)
    console.sessions.load()
    app[CONSOLE] = console
    live_parts(app, views)  # the stream slots and alarm fan-out, shared with /api/stream
    app.on_shutdown.append(console.on_shutdown)
    app[RECENT] = RecentReadings(latest=views.devices.latest)  # the device charts' last hour
    app.cleanup_ctx.append(app[RECENT].context)

    app.add_routes([
        get(PREFIX, _to_index),
        get(PREFIX + "/", _index),
        get(PREFIX + "/login", _login_page),
        post(PREFIX + "/api/login", _login),
        post(PREFIX + "/api/logout", guarded(_logout)),
        get(PREFIX + "/api/me", guarded(_me)),
        get(PREFIX + "/api/alarms", guarded(_alarms)),
        get(PREFIX + "/api/devices", guarded(_devices)),
        get(PREFIX + "/api/history", guarded(_history)),
        get(PREFIX + "/api/devices/{device_id}/chart.svg", guarded(_chart)),
        post(PREFIX + "/api/alarms/{alarm_id}/{action:%s}" % "|".join(COMMANDS),
             guarded(_action, act=True)),
        get(PREFIX + "/events", guarded(events)),
    ])
    add_zone_routes(app, guarded, _json_body, _json, _error)  # Zones and Digest (zones.py)
    if views.hub is not None:  # a console of many sites (the hub): the fleet by level
        app.add_routes([get(PREFIX + "/api/fleet", guarded(_fleet))])
    app.add_static(PREFIX + "/static/", STATIC)  # only the files in it, by exact name
    log.info("console: /console/ (%d users in %s)", len(users), console.users.path)
    return console


def guarded(handler: Handler, *, act: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: a session is required, POSTs need CSRF and same origin, ``act`` the operator role."""

    async def wrapper(request: Request) -> Response:
        console = request.app[CONSOLE]
        session = await console.session_of(request)
        if session is None:
            return _error(401, "login required")
        if request.method == "POST":
            if not _same_origin(request):
                return _error(403, "cross-origin request refused")
            sent = request.headers.get("X-CSRF-Token", "")
            if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
                return _error(403, "missing or wrong CSRF token; reload the page")
        if act and not session.can_act:
            await console.audit.record(operator=session.user, action=request.match_info.get("action", "?"),
                                       target=request.match_info.get("alarm_id"), ok=False,
                                       detail="read-only user", remote=console.remote(request))
            return _error(403, "your role is read-only")
        return await handler(request, session)

    wrapper.__name__ = handler.__name__
    return wrapper


# -- pages ------------------------------------------------------------------------


async def _to_index(request: Request) -> Response:
    return redirect(PREFIX + "/")


async def _index(request: Request) -> Response:
    console = request.app[CONSOLE]
    if await console.session_of(request) is None:
        return redirect(PREFIX + "/login")
    return _page("index.html", console.version)


async def _login_page(request: Request) -> Response:
    console = request.app[CONSOLE]
    if await console.session_of(request) is not None:
        return redirect(PREFIX + "/")
    return _page("login.html", console.version)


def _page(name: str, version: str) -> Response:
    html = (STATIC / name).read_text(encoding="utf-8").replace("__VERSION__", version)
    return text_response(html, content_type="text/html", headers=SECURITY_HEADERS)


# -- login / logout ------------------------------------------------------------------


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    user: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


async def _login(request: Request) -> Response:
    console = request.app[CONSOLE]
    if not _same_origin(request):
        return _error(403, "cross-origin request refused")
    body = await _json_body(request, LoginBody)
    if isinstance(body, Response):
        return body
    # Counted before the password is checked: parallel guesses cannot slip past.
    who = {"account": body.user, "address": console.remote(request)}
    wait = console.throttle.begin(**who)
    if wait > 0:
        return _error(429, "too many failed logins; try again later", retry_after=math.ceil(wait))
    user = console.users.get(body.user)
    try:
        ok = await console.checker.verify(body.password,
                                          user.password_hash if user else console.decoy_hash)
    except ChecksBusy:
        console.throttle.not_checked(**who)
        return _error(503, "too many logins at once; try again in a moment", retry_after=1)
    if user is None or not ok:
        console.throttle.failed(**who)
        # whatever was typed as a name goes to the log: quoted, if it is not a plain name
        shown = body.user if PLAIN_NAME.fullmatch(body.user) else repr(body.user)
        await console.audit.record(operator=shown, action="login", ok=False,
                                   detail="wrong user name or password", remote=who["address"])
        return _error(401, "wrong user name or password")
    console.throttle.succeeded(**who)
    token, session = await console.sessions.create(user)
    await console.audit.record(operator=user.name, action="login", remote=console.remote(request))
    response = _json({"user": user.name, "role": user.role})
    set_cookie(response, COOKIE, token, path=PREFIX, http_only=True, same_site="Strict",
               secure=_secure(request))
    return response


async def _logout(request: Request, session: Session) -> Response:
    console = request.app[CONSOLE]
    await console.sessions.drop(request.cookies.get(COOKIE))
    await console.audit.record(operator=session.user, action="logout", remote=console.remote(request))
    response = _json({"ok": True})
    delete_cookie(response, COOKIE, path=PREFIX)
    return response


# -- data ----------------------------------------------------------------------------


async def _me(request: Request, session: Session) -> Response:
    console = request.app[CONSOLE]
    site = console.site
    return _json({
        "user": session.user, "role": session.role, "csrf": session.csrf,
        "actions": list(COMMANDS) if session.can_act else [],
        "shelve_minutes": [m for m in SHELVE_MINUTES if m * 60 <= console.alarms.max_shelve],
        "site": {"id": site.id, "name": site.name, "language": site.language,
                 **(console.display.title() if console.display else {})},
        # which alarm values to show, with units
        "values": console.display.values() if console.display else {},
        "instance": console.feed.instance, "version": console.version,
        **_hub_me(console, session),
    })


def _hub_me(console: Console, session: Session) -> dict[str, object]:
    """The hub's part of ``me``: ``hub: true``, its levels and the user's scope."""
    if console.views.hub is None:
        return {}
    user = console.users.get(session.user)
    scope = user.scope.describe() if user is not None and user.scope is not None else None
    return {**console.views.hub.me(), "user_scope": scope}


async def _fleet(request: Request, session: Session) -> Response:
    console = request.app[CONSOLE]
    return _json(console.views.hub.fleet(console.covers(session)))


def _visible(console: Console, session: Session, rows: list[dict]) -> list[dict]:
    covers = console.covers(session)
    return rows if covers is None else [r for r in rows if covers(r)]


async def _alarms(request: Request, session: Session) -> Response:
    console = request.app[CONSOLE]
    return _json({"alarms": _visible(console, session, console.feed.alarms())})


async def _devices(request: Request, session: Session) -> Response:
    console = request.app[CONSOLE]
    return _json({"devices": _visible(console, session, console.feed.devices())})


async def _chart(request: Request, session: Session) -> Response:
    """``chart.svg?field=power[&lang=zh]``: the field's last hour, a line per channel."""
    console = request.app[CONSOLE]
    recent = request.app[RECENT]
    device = request.match_info["device_id"]
    spec = console.devices.specs().get(device)
    if spec is None:
        return _error(404, f"no device {device!r}")
    field = request.query.get("field", "")
    if field not in spec.fields:
        return _error(400, f"device {device!r} has no field {field!r}; fields: {sorted(spec.fields)}")
    lang = "zh" if request.query.get("lang") == "zh" else "en"
    names = CHANNEL_LABELS[lang]
    now = console.clock.time()
    per_channel = recent.series(device, field, now=now)

    def label(channel: int | None) -> str:
        if channel is None:
            return device
        return names.get(spec.channel_name, spec.channel_name + " {}").format(channel)

    series = {label(ch): points for ch, points in
              sorted(per_channel.items(), key=lambda kv: -1 if kv[0] is None else kv[0])}
    svg = render_chart(series, now=now, window=recent.window,
                       unit=console.display.units(spec).get(field) if console.display else None,
                       title=f"{device} {field}",
                       empty_text="暂无读数" if lang == "zh" else "No readings kept yet.")
    return text_response(svg, content_type="image/svg+xml", headers=SECURITY_HEADERS)


async def _history(request: Request, session: Session) -> Response:
    console = request.app[CONSOLE]
    try:
        transitions = await console.transitions()
        covers = console.covers(session)
        if covers is not None:
            transitions = [t for t in transitions if covers(t["alarm"])]
        entries = query_history(transitions, dict(request.query))
    except ValueError as exc:
        return _error(400, str(exc))
    return _json({"entries": entries})


class ActionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str | None = Field(default=None, max_length=NOTE_MAX)
    minutes: float | None = Field(default=None, gt=0, le=7 * 24 * 60)


async def _action(request: Request, session: Session) -> Response:
    console = request.app[CONSOLE]
    alarm_id, action = request.match_info["alarm_id"], request.match_info["action"]
    body = await _json_body(request, ActionBody)
    if isinstance(body, Response):
        return body
    note = (body.note or "").strip() or None
    command: dict[str, object] = {"by": session.user, "note": note}
    if action == "shelve":
        command["minutes"] = body.minutes
    try:
        if action == "shelve" and not note:
            raise CommandError(action, alarm_id, "shelving needs a note saying why", 400)
        covers = console.covers(session)
        if covers is not None and not any(a["id"] == alarm_id and covers(a)
                                          for a in console.feed.alarms()):
            # outside the user's scope: as if it did not exist (and nothing is sent)
            raise CommandError(action, alarm_id, f"no open alarm {alarm_id!r}", 404)
        alarm = console.alarms.apply_command(alarm_id, action, command)
        if inspect.isawaitable(alarm):  # the hub: sent, then confirmed by the gateway
            alarm = await alarm
    except CommandError as exc:
        await console.audit.record(operator=session.user, action=action, target=alarm_id, note=note,
                                   ok=False, detail=exc.detail, remote=console.remote(request))
        return _error(exc.status, exc.detail)
    except CommandOutcome as exc:  # the hub: not delivered, or refused by the gateway
        await console.audit.record(operator=session.user, action=action, target=alarm_id, note=note,
                                   ok=False, detail=f"{exc.state}: {exc}",
                                   remote=console.remote(request))
        return _error(exc.status, str(exc), state=exc.state)
    await console.audit.record(operator=session.user, action=action, target=alarm_id, note=note,
                               remote=console.remote(request))
    return _json({"alarm": alarm.to_json()})


# -- helpers -------------------------------------------------------------------------


def _same_origin(request: Request) -> bool:
    # Browsers send Origin on every cross-site POST; a mismatch is a forged request.
    # Behind a TLS reverse proxy the browser's origin is the proxy's (X-Forwarded-*);
    # a cross-site page cannot set those headers without a preflight nobody answers.
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    hosts = {request.host, _forwarded(request, "X-Forwarded-Host")}
    schemes = {request.scheme, _forwarded(request, "X-Forwarded-Proto")}
    return parts.netloc in hosts and parts.scheme in schemes


def _forwarded(request: Request, header: str) -> str | None:
    value = request.headers.get(header)
    return value.split(",")[0].strip() if value else None


def _secure(request: Request) -> bool:
    """Whether the browser reached us over HTTPS (directly or through a TLS proxy)."""
    return request.secure or _forwarded(request, "X-Forwarded-Proto") == "https"


async def _json_body(request: Request, model: type[BaseModel]):
    if request.content_type != "application/json":
        return _error(415, "expected application/json")
    try:
        raw = await request.json()
        return model.model_validate(raw if raw is not None else {})
    except ValueError as exc:  # JSONDecodeError and ValidationError both are
        if isinstance(exc, ValidationError):
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            return _error(400, problems)
        return _error(400, "body is not valid JSON")


def _json(body: dict[str, object], status: int = 200) -> Response:
    return json_response(body, status=status, headers=SECURITY_HEADERS)


def _error(status: int, message: str, **extra: object) -> Response:
    headers = dict(SECURITY_HEADERS)
    if "retry_after" in extra:
        headers["Retry-After"] = str(extra["retry_after"])
    return json_response({"error": message, **extra}, status=status, headers=headers)

