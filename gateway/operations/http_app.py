"""The HTTP server's application, on microdot: what every handler of ours is given.

microdot (2 modules, 0.25 MiB) replaced ``aiohttp.web`` (161 modules, ~16 MiB of a
Pi's memory, issue 16). This module is the one place that knows microdot's
request and routing; the handlers see:

- ``App``: routes (``app.add_routes([get(...), post(...)])``, aiohttp-style patterns
  ``/api/alarms/{alarm_id}/{command:ack|reset}``), app-wide state (``app[KEY]``),
  middlewares ``mw(request, handler)``, ``on_shutdown`` and ``cleanup_ctx`` hooks,
  static files;
- ``Request``: method, path, ``query``, ``match_info``, headers, cookies, ``remote``,
  ``host``, ``scheme``, ``await read()`` / ``await json()``, per-request state;
- ``json_response`` / ``text_response`` / ``redirect``, ``HttpError`` (raised: its
  JSON answer), ``set_cookie`` / ``delete_cookie`` (microdot's have no SameSite).

A handler that raises anything else gets a 500 JSON answer and its traceback goes
to the log (microdot would print it). Serving, with its limits, is
``gateway.operations.connection_limit.LimitedServer``.
"""

from __future__ import annotations

import http
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote

import microdot.microdot as _microdot
from microdot import Microdot, Response

from gateway import json_safe

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
# aiohttp's limits for a request line and a header line
MAX_LINE = 8190


def _log_exception(exc: BaseException) -> None:
    # microdot prints a handler's or a parser's exception to stderr; ours go to the log
    log.error("HTTP: %s", exc, exc_info=(type(exc), exc, exc.__traceback__))


_microdot.print_exception = _log_exception
_microdot.Request.max_readline = MAX_LINE
_microdot.Request.max_content_length = MAX_BODY  # more: 413 before a byte of it is read
_microdot.Request.max_body_length = MAX_BODY

Handler = Callable[["Request"], Awaitable[Response]]
Middleware = Callable[["Request", Handler], Awaitable[Response]]


class HttpError(Exception):
    """Raised by a handler: answered as ``{"error": message, ...}`` with ``status``."""

    def __init__(self, status: int, message: str, *, headers: Mapping[str, str] | None = None,
                 **extra: Any):
        super().__init__(message)
        self.status = status
        self.body = {"error": message, **extra}
        self.headers = dict(headers or {})

    def response(self) -> Response:
        return json_response(self.body, status=self.status, headers=self.headers)


# -- answers ---------------------------------------------------------------------------


def response(body: bytes | str, *, status: int = 200, content_type: str | None = None,
             headers: Mapping[str, str] | None = None) -> Response:
    """An answer with a whole body (its Content-Length set)."""
    all_headers = dict(headers or {})
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    return Response(body, status_code=status, headers=all_headers, reason=_reason(status))


def json_response(body: object, *, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> Response:
    """A JSON answer; NaN and infinity become null (see gateway.json_safe)."""
    return response(json_safe.dumps(body), status=status, headers=headers,
                    content_type="application/json; charset=utf-8")


def text_response(text: str, *, content_type: str = "text/plain", status: int = 200,
                  headers: Mapping[str, str] | None = None) -> Response:
    """A text answer in UTF-8."""
    return response(text, status=status, headers=headers,
                    content_type=f"{content_type}; charset=utf-8")


def stream_response(body: Any, *, headers: Mapping[str, str],
                    on_close: Callable[[], None] | None = None) -> Response:
    """An answer whose body an async generator yields, written as it comes (no length:
    the connection's close ends it). ``on_close`` runs once the connection is done,
    whether or not the body was ever started (see LimitedServer)."""
    answer = Response(body, status_code=200, headers=dict(headers), reason="OK")
    answer.on_close = on_close  # type: ignore[attr-defined]
    return answer


def redirect(location: str, status: int = 302) -> Response:
    return Response(b"", status_code=status, headers={"Location": location},
                    reason=_reason(status))


def set_cookie(answer: Response, name: str, value: str, *, path: str, http_only: bool = True,
               same_site: str = "Strict", secure: bool = False, max_age: int | None = None,
               expires: str | None = None) -> None:
    """Add a ``Set-Cookie`` header (with SameSite, which microdot's own lacks)."""
    if any(c in value for c in ";\r\n") or any(c in path for c in ";\r\n"):
        raise ValueError("a cookie's value or path holds ';' or a line break")
    parts = [f"{name}={value}", f"Path={path}"]
    if expires is not None:
        parts.append(f"expires={expires}")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if http_only:
        parts.append("HttpOnly")
    if same_site:
        parts.append(f"SameSite={same_site}")
    if secure:
        parts.append("Secure")
    cookies = answer.headers.get("Set-Cookie")
    if cookies is None:
        answer.headers["Set-Cookie"] = cookies = []
    cookies.append("; ".join(parts))


def delete_cookie(answer: Response, name: str, *, path: str) -> None:
    set_cookie(answer, name, '""', path=path, http_only=False, same_site="", max_age=0,
               expires="Thu, 01 Jan 1970 00:00:00 GMT")


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


# -- the request ------------------------------------------------------------------------


class Query(Mapping[str, str]):
    """The query string: ``query[k]`` / ``get`` give the first value, ``getall`` every one."""

    def __init__(self, args: Mapping[str, Any]):
        # microdot's MultiDict keeps each key's values in a list underneath
        self._values = {k: list(v) if isinstance(v, list) else [v] for k, v in dict.items(args)}

    def __getitem__(self, key: str) -> str:
        return self._values[key][0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def getall(self, key: str, default: list[str] | None = None) -> list[str]:
        if key in self._values:
            return list(self._values[key])
        if default is None:
            raise KeyError(key)
        return default


class Request:
    """One request, as our handlers read it (microdot's underneath: ``raw``)."""

    def __init__(self, app: App, raw: _microdot.Request, match_info: dict[str, str]):
        self.app = app
        self.raw = raw
        self.method: str = raw.method.upper()
        self.path: str = raw.path
        self.match_info = {k: unquote(v) if isinstance(v, str) else v
                           for k, v in match_info.items()}
        self.headers = raw.headers
        self.cookies: dict[str, str] = raw.cookies
        self.query = Query(raw.args if isinstance(raw.args, dict) else {})
        self._state: dict[Any, Any] = {}

    @property
    def remote(self) -> str | None:
        """The TCP peer's address."""
        peer = self.raw.client_addr
        return str(peer[0]) if peer else None

    @property
    def host(self) -> str:
        return self.headers.get("Host", "")

    @property
    def scheme(self) -> str:
        return self.raw.scheme

    @property
    def secure(self) -> bool:
        return self.raw.scheme == "https"

    @property
    def content_type(self) -> str:
        """The body's media type, without parameters ("application/json")."""
        return (self.raw.content_type or "application/octet-stream").split(";")[0].strip().lower()

    async def read(self) -> bytes:
        """The body (at most MAX_BODY: a longer one was refused with 413 before this)."""
        return self.raw.body or b""

    async def json(self) -> Any:
        """The body as JSON; None when empty; ValueError when it is not JSON."""
        body = await self.read()
        return json.loads(body) if body else None

    def __getitem__(self, key: Any) -> Any:
        return self._state[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._state[key] = value

    def get(self, key: Any, default: Any = None) -> Any:
        return self._state.get(key, default)


# -- the application ----------------------------------------------------------------------


class Route(NamedTuple):
    method: str
    pattern: str
    handler: Handler


def get(pattern: str, handler: Handler) -> Route:
    return Route("GET", pattern, handler)


def post(pattern: str, handler: Handler) -> Route:
    return Route("POST", pattern, handler)


_PARAM = re.compile(r"\{(\w+)(?::([^{}]+))?\}")


def _microdot_pattern(pattern: str) -> str:
    """aiohttp's ``{name}`` / ``{name:regex}`` as microdot's ``<name>`` / ``<re:regex:name>``."""
    def one(m: re.Match[str]) -> str:
        name, regex = m.group(1), m.group(2)
        return f"<re:{regex}:{name}>" if regex else f"<{name}>"
    return _PARAM.sub(one, pattern)


class App:
    """Routes, middlewares, app-wide state and start/stop hooks over one ``Microdot``."""

    def __init__(self, *, middlewares: list[Middleware] | None = None):
        self.microdot = Microdot()
        self.middlewares: list[Middleware] = list(middlewares or [])
        self.on_shutdown: list[Callable[[App], Awaitable[None]]] = []
        # async generator functions: run to their yield at start, resumed at stop
        self.cleanup_ctx: list[Callable[[App], Any]] = []
        self._state: dict[Any, Any] = {}
        for status, message in ((400, "bad request"), (404, "not found"),
                                (405, "method not allowed"),
                                (413, f"request body too large (at most {MAX_BODY} bytes)")):
            self.microdot.errorhandler(status)(self._error_handler(status, message))

    @staticmethod
    def _error_handler(status: int, message: str):
        async def answer(_request) -> Response:
            return json_response({"error": message}, status=status)
        return answer

    # app-wide state, as aiohttp's app[key]
    def __getitem__(self, key: Any) -> Any:
        return self._state[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._state[key] = value

    def __contains__(self, key: Any) -> bool:
        return key in self._state

    def get(self, key: Any, default: Any = None) -> Any:
        return self._state.get(key, default)

    def add_routes(self, routes: list[Route]) -> None:
        for route in routes:
            self.add_route(route.method, route.pattern, route.handler)

    def add_route(self, method: str, pattern: str, handler: Handler) -> None:
        async def dispatch(raw: _microdot.Request, **match_info: str) -> Response:
            return await self.handle(Request(self, raw, match_info), handler)

        dispatch.__name__ = getattr(handler, "__name__", "handler")
        self.microdot.route(_microdot_pattern(pattern), methods=[method])(dispatch)

    def add_static(self, prefix: str, directory: Path) -> None:
        """Serve the files directly in ``directory`` under ``prefix``; nothing else (no
        sub-folder, no ``..``: a name is served only if it is one of those files)."""
        files = {p.name: p for p in directory.iterdir() if p.is_file()}

        async def static(request: Request) -> Response:
            path = files.get(request.match_info["name"])
            if path is None:
                raise HttpError(404, "not found")
            kind = _microdot.Response.types_map.get(path.suffix.lstrip("."),
                                                    "application/octet-stream")
            if kind.startswith("text/") or kind == "application/javascript":
                kind += "; charset=utf-8"
            return response(path.read_bytes(), content_type=kind)

        self.add_route("GET", prefix.rstrip("/") + "/{name:.+}", static)

    async def handle(self, request: Request, handler: Handler) -> Response:
        """Run the middlewares and the handler; errors as JSON, never a crash."""
        async def call(i: int, req: Request) -> Response:
            if i == len(self.middlewares):
                return await handler(req)
            return await self.middlewares[i](req, lambda r: call(i + 1, r))

        try:
            return await call(0, request)
        except HttpError as exc:
            return exc.response()
        except Exception:  # a bug in one handler must not take the server down
            log.exception("HTTP %s %s failed", request.method, request.path)
            return json_response({"error": "internal error; see the log"}, status=500)

    async def startup(self) -> list[Any]:
        """Run each cleanup context to its ``yield``; what ``shutdown`` resumes."""
        started = []
        for ctx in self.cleanup_ctx:
            gen = ctx(self)
            await gen.__anext__()
            started.append(gen)
        return started

    async def shutting_down(self) -> None:
        """The ``on_shutdown`` hooks (the live streams end at once)."""
        for hook in self.on_shutdown:
            await hook(self)

    async def cleanup(self, started: list[Any]) -> None:
        """Resume the cleanup contexts ``startup`` started, last started first."""
        for gen in reversed(started):
            try:
                await gen.__anext__()
            except StopAsyncIteration:
                pass
