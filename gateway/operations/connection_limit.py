"""Keeping the HTTP server inside its share of the process's file handles.

Every open connection is a file handle, and the process shares its limit
(``LimitNOFILE``) with the outbox, the sinks' sockets and the device links.
``LimitedTCPSite`` closes connections beyond a cap as they arrive (after a bare
503), so a crowd of idle clients cannot starve the rest of the gateway, and the
cap is kept under half the process's soft limit whatever the config says.

If handles do run out anyway, asyncio logs a failed ``accept()`` every second
with a traceback; ``OutOfFilesLogFilter`` lets one such line through a minute,
with the count of those held back.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import time

from aiohttp import web

log = logging.getLogger(__name__)

REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 5\r\n"
           b"Content-Length: 0\r\n\r\n")
LOG_EVERY = 60.0
_OUT_OF_FILES = frozenset({errno.EMFILE, errno.ENFILE})


def effective_limit(configured: int) -> int:
    """``configured``, but at most half the process's soft limit on open files."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft // 2))


class _Refuse(asyncio.Protocol):
    """A connection over the cap: told 503 and closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(REFUSAL)
        transport.close()


class LimitedTCPSite(web.TCPSite):
    """``web.TCPSite`` that serves at most ``max_connections`` connections at once."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, max_connections: int,
                 sock: socket.socket | None = None, **kwargs):
        super().__init__(runner, host, port, **kwargs)
        self.max_connections = max_connections
        self._sock = sock  # already bound and listening (http_on_demand), else bind host:port
        self.refused = 0
        self._last_warning = -LOG_EVERY
        self._unreported = 0

    @property
    def open_connections(self) -> int:
        """Connections being served now."""
        server = self._runner.server
        return len(server.connections) if server is not None else 0

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None

        def protocol() -> asyncio.Protocol:
            if len(server.connections) >= self.max_connections:
                self._refused()
                return _Refuse()
            return server()

        loop = asyncio.get_running_loop()
        if self._sock is not None:
            self._server = await loop.create_server(protocol, sock=self._sock,
                                                    ssl=self._ssl_context, backlog=self._backlog)
        else:
            self._server = await loop.create_server(
                protocol, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
                reuse_address=self._reuse_address, reuse_port=self._reuse_port)
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port

    def _refused(self) -> None:
        self.refused += 1
        self._unreported += 1
        now = time.monotonic()
        if now - self._last_warning >= LOG_EVERY:
            log.warning("HTTP: %d connection(s) refused: %d open is the limit (http.max_connections)",
                        self._unreported, self.max_connections)
            self._last_warning = now
            self._unreported = 0


class OutOfFilesLogFilter(logging.Filter):
    """Lets one "too many open files" record through per ``every`` seconds."""

    def __init__(self, *, every: float = LOG_EVERY, clock=time.monotonic):
        super().__init__()
        self.every = every
        self._clock = clock
        self._last: float | None = None
        self.held_back = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not _about_files(record):
            return True
        now = self._clock()
        if self._last is not None and now - self._last < self.every:
            self.held_back += 1
            return False
        if self.held_back:
            record.msg = f"{record.msg} ({self.held_back} more like it in the last {self.every:.0f} s)"
        self._last = now
        self.held_back = 0
        return True


def _about_files(record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, OSError) and exc.errno in _OUT_OF_FILES:
        return True
    return "Too many open files" in record.getMessage()
