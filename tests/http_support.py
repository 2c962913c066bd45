"""An HTTP app of ours (gateway.operations.http_app) served for real on 127.0.0.1, with an
aiohttp client session to ask it: what aiohttp's TestServer/TestClient gave for its apps."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp

from gateway.config.models import HttpConfig
from gateway.operations.connection_limit import serve_app
from gateway.operations.http_app import App


class AppServer:
    """Serves ``app`` on a free loopback port until ``close()`` (``async with`` works)."""

    def __init__(self, app: App, config: HttpConfig | None = None, **limits: Any):
        self.app = app
        self.config = config or HttpConfig()
        self.limits = limits  # serve_app's: write_timeout
        self.listening = False
        self.site = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> None:
        sock = socket.create_server(("127.0.0.1", 0))
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._task = asyncio.create_task(serve_app(self, self.app, self.config, sock=sock,
                                                   what="test HTTP", routes="all",
                                                   **self.limits),
                                         name="test-http-server")
        # (the socket listens already: a request now waits in its backlog)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def make_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> AppServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AppClient:
    """A browser of its own (cookies kept, IP hosts too) against an ``AppServer``; made
    from an app it serves that app itself. ``get``/``post``/... as aiohttp's session."""

    def __init__(self, server: App | AppServer, **session: Any):
        self._owns = not isinstance(server, AppServer)
        self.server = AppServer(server) if self._owns else server
        self._session_args = session
        self.session: aiohttp.ClientSession | None = None

    async def start_server(self) -> None:
        if self._owns and self.server.port == 0:
            await self.server.start()
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                             **self._session_args)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self._owns:
            await self.server.close()

    def make_url(self, path: str) -> str:
        return self.server.make_url(path)

    def request(self, method: str, path: str, **kwargs: Any):
        assert self.session is not None, "start_server() first"
        return self.session.request(method, self.make_url(path), **kwargs)

    def get(self, path: str, **kwargs: Any):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any):
        return self.request("POST", path, **kwargs)

    async def __aenter__(self) -> AppClient:
        await self.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def mocked_request(method: str, path: str, *, headers: dict[str, str], app: App):
    """A request as a handler sees it, with no connection (for a guard's unit test)."""
    from microdot.microdot import NoCaseDict, Request as RawRequest

    from gateway.operations.http_app import Request

    raw = RawRequest(app.microdot, ("127.0.0.1", 40000), method, path, "1.1",
                     NoCaseDict(headers))
    return Request(app, raw, {})
