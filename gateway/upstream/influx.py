"""InfluxDB v2 write API sink (InfluxDB itself, or VictoriaMetrics which accepts it).

The write API is one request: ``POST /api/v2/write?org=&bucket=&precision=ns`` with
``Authorization: Token ...`` and the lines as the body. It is written here with
aiohttp (already the gateway's HTTP library) rather than influxdb-client, whose
async path alone loads ~850 modules and ~39 MB: on a Raspberry Pi that is most of
the gateway's memory, for one POST.
"""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Mapping
from datetime import datetime, timezone

import aiohttp

from gateway.config.models import InfluxConfig
from gateway.errors import SinkRejected, SinkRetryable

# Statuses that retrying cannot fix: the batch itself is wrong (a field type clash).
# 401/403/404 are configuration problems an installer fixes; data waits for that.
_REJECTED = {400, 413, 422}


class InfluxSink:
    """Writes line-protocol batches to the InfluxDB v2 write API."""

    def __init__(self, config: InfluxConfig, token: str | None, name: str = "influxdb"):
        self.name = name
        self._config = config
        self._url = config.url.rstrip("/") + "/api/v2/write"
        self._params = {"org": config.org, "bucket": config.bucket, "precision": "ns"}
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if token:
            self._headers["Authorization"] = f"Token {token}"
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._session: aiohttp.ClientSession | None = None

    async def write(self, lines: list[str]) -> None:
        """Write one batch; all or nothing."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = "\n".join(lines).encode()
        try:
            async with self._session.post(self._url, params=self._params, data=body,
                                          headers=self._headers) as resp:
                if resp.status < 300:
                    return
                text = await resp.text(errors="replace")
                detail = f"HTTP {resp.status}: {text!s:.200}"
                if resp.status in _REJECTED:
                    raise SinkRejected(self.name, detail, resp.status)
                raise SinkRetryable(self.name, detail, resp.status, _retry_after(resp.headers))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise SinkRetryable(self.name, f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        """Release the HTTP session."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the upstream asked us to wait (429, 503): ``Retry-After`` as seconds or
    as an HTTP date; None when absent or unreadable."""
    value = headers.get("Retry-After") if headers else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
