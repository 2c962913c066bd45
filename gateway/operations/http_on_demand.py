"""The local HTTP API's address bound at start, its server loaded at the first connection.

The API's server was aiohttp (which always imports its client half too: cookies,
compression, websockets, a resolver), ~16 MiB of a Pi's memory; it is microdot
now (0.25 MiB, gateway.operations.http_app), but the API still brings the metrics'
renderer, the console and the pydantic models of its request bodies. Most of the
time nobody asks the API anything, so this module, which imports none of that,
binds ``http.listen`` when the gateway starts (a port that is taken is logged and
retried with backoff, as ever) and loads the server only when a first connection
waits in the listen backlog. The import runs in a thread so the loop keeps polling
meanwhile; the waiting connection is then served by the real server on the same
socket. Once loaded it stays loaded (a Prometheus scraping ``/metrics`` keeps the
gateway at the higher figure).

Anything that reads the server (``app``, ``site``, ...) through this object loads
it at once: tools and tests see the same attributes as on ``HttpServer``.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.backoff import Backoff

if TYPE_CHECKING:
    from gateway.config.models import HttpConfig
    from gateway.operations.http_api import HttpServer

log = logging.getLogger(__name__)

SERVER_MODULE = "gateway.operations.http_api"
BACKLOG = 128  # as aiohttp had (asyncio's own default is 100)


class OnDemandHttpServer:
    """``HttpServer`` behind a socket bound at start and a load on the first connection.

    ``build(module)`` makes the real server from the imported ``SERVER_MODULE``; it
    runs on the loop's thread (it registers listeners with the gateway's parts)."""

    def __init__(self, *, config: HttpConfig, build: Callable[[Any], HttpServer]):
        self.config = config
        self._build = build
        self._server: HttpServer | None = None
        self.listening = False

    @property
    def loaded(self) -> bool:
        """Whether the real server has been built (by a connection or a reader)."""
        return self._server is not None

    @property
    def server(self) -> HttpServer:
        """The real server, built now if it is not yet (a synchronous import)."""
        if self._server is None:
            self._server = self._build(importlib.import_module(SERVER_MODULE))
        return self._server

    @property
    def site(self) -> Any:
        """The real server's listening site; None until it serves."""
        return self._server.site if self._server is not None else None

    def __getattr__(self, name: str) -> Any:
        # Only reached for what this class lacks: ``app`` and the like are the server's.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.server, name)

    async def run(self) -> None:
        """Bind, wait for a first connection (or a reader), load the server, serve."""
        sock = await self._bind()
        try:
            self.listening = True
            log.info("HTTP API on http://%s/ (healthz, metrics, api)", self.config.listen)
            if self._server is None:
                await _readable(sock)
            if self._server is None:
                # The import in a thread (the loop keeps polling); the build on the loop.
                module = await asyncio.to_thread(importlib.import_module, SERVER_MODULE)
                if self._server is None:
                    self._server = self._build(module)
                log.info("HTTP API loaded at its first connection")
            await self._server.run(sock=sock)
        finally:
            self.listening = False
            sock.close()

    async def _bind(self) -> socket.socket:
        backoff = Backoff(initial=1.0, cap=30.0)
        failing = False
        while True:
            try:
                family = socket.getaddrinfo(self.config.host, self.config.port,
                                            type=socket.SOCK_STREAM)[0][0]
                sock = socket.create_server((self.config.host, self.config.port), family=family,
                                            backlog=BACKLOG)
                sock.setblocking(False)
                return sock
            except OSError as exc:
                if not failing:
                    log.error("HTTP API cannot listen on %s: %s; retrying", self.config.listen,
                              exc.strerror or exc)
                failing = True
            await asyncio.sleep(backoff.next_delay())


async def _readable(sock: socket.socket) -> None:
    """Until a connection waits to be accepted on the listening ``sock``."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())
