"""A minimal HTTP/1.1 client for one thing: POSTing a body to one URL, keep-alive.

The InfluxDB sink's only request. aiohttp would do (the webhooks use it when
configured); but importing its client costs ~10 MB of RSS, a fifth of what a whole
gateway may take on a Raspberry Pi, for a request this simple. Plain asyncio
streams (TLS through ``ssl``) keep one connection open and reopen it on failure.

Speaks what the InfluxDB v2 write API and VictoriaMetrics answer: a status line,
headers, and a body by ``Content-Length``, chunked, or to the connection's close.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.parse
from dataclasses import dataclass, field

MAX_BODY = 1 << 20  # of an answer: an error message, never data
MAX_HEADERS = 100


class HttpError(OSError):
    """The exchange failed (connection, malformed answer); the request may be retried."""


@dataclass(slots=True)
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case
    body: bytes = b""


class HttpPoster:
    """POSTs to ``url`` (query string included) over one kept-alive connection."""

    def __init__(self, url: str, *, headers: dict[str, str], timeout: float):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url}")
        self._host = parts.hostname
        self._tls = parts.scheme == "https"
        self._port = parts.port or (443 if self._tls else 80)
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default_port = self._port == (443 if self._tls else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._head = (f"POST {self._target} HTTP/1.1\r\nHost: {host}"
                      f"{'' if default_port else f':{self._port}'}\r\n"
                      + "".join(f"{k}: {v}\r\n" for k, v in headers.items()))
        self._timeout = timeout
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, body: bytes) -> Answer:
        """Send ``body``; the answer, whatever its status. Raises HttpError, TimeoutError."""
        try:
            async with asyncio.timeout(self._timeout):
                return await self._exchange(body)
        except BaseException:
            self.close()  # a half-done exchange leaves the connection unusable
            raise

    async def _exchange(self, body: bytes) -> Answer:
        if self._conn is None:
            context = ssl.create_default_context() if self._tls else None
            try:
                self._conn = await asyncio.open_connection(self._host, self._port, ssl=context)
            except OSError as exc:
                raise HttpError(f"cannot connect to {self._host}:{self._port}: {exc}") from exc
        reader, writer = self._conn
        writer.write(f"{self._head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        status_line = await reader.readline()
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise HttpError(f"not an HTTP answer: {status_line[:80]!r}")
        answer = Answer(int(parts[1]))
        for _ in range(MAX_HEADERS):
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            answer.headers[name.strip().lower()] = value.strip()
        else:
            raise HttpError("too many headers in the answer")
        answer.body = await self._body(reader, answer)
        if answer.headers.get("connection", "").lower() == "close":
            self.close()
        return answer

    async def _body(self, reader: asyncio.StreamReader, answer: Answer) -> bytes:
        if answer.status in (204, 304) or 100 <= answer.status < 200:
            return b""
        h = answer.headers
        if h.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            size = 0
            while True:
                n = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(await reader.readexactly(n))
                await reader.readexactly(2)
                size += n
                if size > MAX_BODY:
                    raise HttpError("answer too long")
        if "content-length" in h:
            n = int(h["content-length"])
            if n > MAX_BODY:
                raise HttpError("answer too long")
            return await reader.readexactly(n)
        data = await reader.read(MAX_BODY)  # no length: the body ends with the connection
        self.close()
        return data

    def close(self) -> None:
        """Drop the connection (the next post opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn[1].close()
