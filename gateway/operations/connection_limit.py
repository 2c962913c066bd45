"""Serving the HTTP app inside its share of the process's file handles and time.

Every open connection is a file handle, and the process shares its limit
(``LimitNOFILE``) with the outbox, the sinks' sockets and the device links.
``LimitedServer`` serves a ``gateway.operations.http_app.App`` with
``asyncio.start_server``, one request per connection (microdot speaks HTTP/1.0:
no keep-alive), and holds each connection to its limits:

- at most ``max_connections`` at once: more are told a bare 503 and closed as they
  arrive, so a crowd of idle clients cannot starve the rest of the gateway (the
  cap is kept under half the process's soft limit whatever the config says);
- the request's head (and its body, at most 64 KiB) must arrive within
  ``head_timeout`` (``http.idle_timeout``): a silent or slowloris client is closed;
- a line of the head is at most 8190 bytes, the head at most ``MAX_HEAD``: a
  longer one, or one that does not parse, is answered 400 and closed;
- a write that waits ``write_timeout`` on a client that does not read ends the
  connection; a streamed answer (server-sent events) also ends when the client
  closes its side, so its stream slot is given back at once.

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
from typing import Any

import microdot.microdot as md

from gateway.backoff import Backoff
from gateway.config.models import HttpConfig
from gateway.operations.http_app import App, HttpError, MAX_LINE, json_response

log = logging.getLogger(__name__)

REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 5\r\n"
           b"Content-Length: 0\r\n\r\n")
LOG_EVERY = 60.0
MAX_HEAD = 32 * 1024
# A client whose socket buffer stays full this long is not reading: cut it off.
WRITE_TIMEOUT = 30.0
_OUT_OF_FILES = frozenset({errno.EMFILE, errno.ENFILE})


def effective_limit(configured: int) -> int:
    """``configured``, but at most half the process's soft limit on open files."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft // 2))


class _HeadReader:
    """The connection's reader as microdot's request parser sees it: at most
    ``MAX_HEAD`` bytes of head lines in all (each line is capped by the parser)."""

    def __init__(self, reader: asyncio.StreamReader):
        self._reader = reader
        self._head = 0

    async def readline(self) -> bytes:
        line = await self._reader.readline()
        self._head += len(line)
        if self._head > MAX_HEAD:
            raise ValueError(f"request head over {MAX_HEAD} bytes")
        return line

    async def readexactly(self, n: int) -> bytes:
        return await self._reader.readexactly(n)

    async def read(self, n: int = -1) -> bytes:
        return await self._reader.read(n)


class _Writer:
    """What microdot writes an answer to: each write waits at most ``timeout`` for
    the client to take it."""

    def __init__(self, writer: asyncio.StreamWriter, timeout: float):
        self._writer = writer
        self._timeout = timeout
        self._head: list[bytes] | None = []

    async def awrite(self, data: bytes) -> None:
        if self._head is not None:
            # microdot writes the status line and each header on its own, then b"\r\n":
            # sent as one write (not a dozen small segments), the body after it as it comes
            self._head.append(data)
            if data != b"\r\n":
                return
            data, self._head = b"".join(self._head), None
        # Any failure as errno 104 (reset): microdot then closes a streamed body and stops
        # quietly (an OSError without an errno would escape it).
        try:
            self._writer.write(data)
            async with asyncio.timeout(self._timeout):
                await self._writer.drain()
        except TimeoutError:
            raise ConnectionResetError(errno.ECONNRESET, "client not reading") from None
        except OSError as exc:
            raise ConnectionResetError(errno.ECONNRESET, str(exc) or "connection lost") from None

    async def aclose(self) -> None:
        self._writer.close()


class LimitedServer:
    """Serves ``app``: at most ``max_connections`` connections at once, one request
    each, within the time limits above."""

    def __init__(self, app: App, *, max_connections: int, head_timeout: float,
                 write_timeout: float = WRITE_TIMEOUT):
        self.app = app
        self.max_connections = max_connections
        self.head_timeout = head_timeout
        self.write_timeout = write_timeout
        self.refused = 0
        self._open: set[asyncio.Task[Any]] = set()
        self._last_warning = -LOG_EVERY
        self._unreported = 0
        self._server: asyncio.Server | None = None

    @property
    def open_connections(self) -> int:
        """Connections being served now."""
        return len(self._open)

    async def start(self, *, sock: socket.socket | None = None, host: str | None = None,
                    port: int | None = None) -> None:
        """Listen on ``sock`` (already bound and listening) or on ``host:port``."""
        if sock is not None:
            self._server = await asyncio.start_server(self._connection, sock=sock,
                                                      limit=2 * MAX_LINE)
        else:
            self._server = await asyncio.start_server(self._connection, host, port,
                                                      reuse_address=True, limit=2 * MAX_LINE)

    @property
    def port(self) -> int | None:
        """The port listened on (the one the OS chose for port 0)."""
        if self._server is None or not self._server.sockets:
            return None
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and end every connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._open):
            task.cancel()
        if self._open:
            await asyncio.wait(list(self._open), timeout=5)

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        if len(self._open) >= self.max_connections:
            self._refused()
            writer.write(REFUSAL)
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._open.add(task)
        try:
            await self._serve_one(reader, writer)
        except (ConnectionError, TimeoutError):
            pass  # the client went or stopped reading: nothing to tell it
        except Exception:  # a bug here must not end the server
            log.exception("HTTP: serving a connection failed")
        finally:
            self._open.discard(task)
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        out = _Writer(writer, self.write_timeout)
        try:
            async with asyncio.timeout(self.head_timeout):
                request = await md.Request.create(self.app.microdot, _HeadReader(reader), out,
                                                  writer.get_extra_info("peername"))
        except TimeoutError:
            return  # no (whole) request in time: closed, as an idle connection
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except Exception as exc:  # a head that does not parse, or is too long
            log.debug("HTTP: bad request head: %s", exc)
            await json_response({"error": "bad request"}, status=400).write(out)
            return
        if request is None:
            return  # closed before a request line
        if "Transfer-Encoding" in request.headers:
            answer = HttpError(411, "send the body with a Content-Length").response()
        else:
            answer = await self.app.microdot.dispatch_request(request)
        try:
            if hasattr(answer.body, "__anext__"):
                await self._stream(answer, reader, out)
            else:
                await answer.write(out)
        finally:
            await _close(answer)

    async def _stream(self, answer: Any, reader: asyncio.StreamReader, out: _Writer) -> None:
        """Write a streamed answer until it ends or the client closes its side."""
        writing = asyncio.create_task(answer.write(out), name="http-stream-write")
        gone = asyncio.create_task(_until_closed(reader), name="http-stream-watch")
        try:
            await asyncio.wait([writing, gone], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (writing, gone):
                task.cancel()
            await asyncio.gather(writing, gone, return_exceptions=True)
        failed = None if writing.cancelled() else writing.exception()
        if failed is not None and not isinstance(failed, ConnectionError):
            # a bug in an event source: the stream ends, the reason goes to the log
            log.error("HTTP: a streamed answer failed", exc_info=failed)

    def _refused(self) -> None:
        self.refused += 1
        self._unreported += 1
        now = time.monotonic()
        if now - self._last_warning >= LOG_EVERY:
            log.warning("HTTP: %d connection(s) refused: %d open is the limit (http.max_connections)",
                        self._unreported, self.max_connections)
            self._last_warning = now
            self._unreported = 0


async def serve_app(server: Any, app: App, config: HttpConfig, *, sock: socket.socket | None,
                    what: str, routes: str, write_timeout: float = WRITE_TIMEOUT) -> None:
    """Serve ``app`` until cancelled, with ``config``'s limits; ``server.site`` is the
    ``LimitedServer`` and ``server.listening`` says whether it listens (the gateway's
    API and the hub's share this)."""
    files_filter = OutOfFilesLogFilter()
    logging.getLogger("asyncio").addFilter(files_filter)  # accept() failing every second
    site = LimitedServer(app, max_connections=effective_limit(config.max_connections),
                         head_timeout=config.idle_timeout, write_timeout=write_timeout)
    server.site = site
    started: list[Any] = []
    try:
        started = await app.startup()
        backoff = Backoff(initial=1.0, cap=30.0)
        failing = False
        while True:
            try:
                await site.start(sock=sock, host=config.host, port=config.port)
                break
            except OSError as exc:
                if not failing:
                    log.error("%s cannot listen on %s: %s; retrying", what, config.listen,
                              exc.strerror or exc)
                failing = True
            await asyncio.sleep(backoff.next_delay())
        server.listening = True
        if sock is None:  # else said when the socket was bound
            log.info("%s on http://%s/ (%s)", what, config.listen, routes)
        await asyncio.Future()  # serve until cancelled
    finally:
        server.listening = False
        logging.getLogger("asyncio").removeFilter(files_filter)
        # In a task of its own: the streams end and the hooks run even though this
        # task is being cancelled.
        await asyncio.shield(_stop(site, app, started))


async def _stop(site: LimitedServer, app: App, started: list[Any]) -> None:
    await app.shutting_down()  # the live streams end at once
    await site.stop()
    await app.cleanup(started)


async def _until_closed(reader: asyncio.StreamReader) -> None:
    """Until the client closes its side (anything it sends meanwhile is dropped)."""
    while await reader.read(4096):
        pass


async def _close(answer: Any) -> None:
    """End a streamed body (its ``finally`` runs) and run the answer's ``on_close``."""
    body = answer.body
    if hasattr(body, "aclose"):
        await body.aclose()
    on_close = getattr(answer, "on_close", None)
    if on_close is not None:
        on_close()


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
