"""InfluxDB v2 write API sink (InfluxDB itself, or VictoriaMetrics which accepts it).

The write API is one request: ``POST /api/v2/write?org=&bucket=&precision=ns`` with
``Authorization: Token ...`` and the lines as the body, sent here over one kept-alive
connection (gateway.upstream.http_post). Neither influxdb-client (its async path
loads ~850 modules, ~39 MB) nor aiohttp's client (~10 MB) is imported for it: on a
Raspberry Pi that is a large share of the gateway's memory, for one POST.
"""

from __future__ import annotations

import email.utils
import urllib.parse
from collections.abc import Mapping
from datetime import datetime, timezone

from gateway.config.models import InfluxConfig
from gateway.errors import SinkRejected, SinkRetryable
from gateway.upstream.http_post import HttpPoster

# Statuses that retrying cannot fix: the batch itself is wrong (a field type clash).
# 401/403/404 are configuration problems an installer fixes; data waits for that.
_REJECTED = {400, 413, 422}


class InfluxSink:
    """Writes line-protocol batches to the InfluxDB v2 write API."""

    def __init__(self, config: InfluxConfig, token: str | None, name: str = "influxdb"):
        self.name = name
        self._config = config
        query = urllib.parse.urlencode({"org": config.org, "bucket": config.bucket,
                                        "precision": "ns"})
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if token:
            headers["Authorization"] = f"Token {token}"
        self._poster = HttpPoster(f"{config.url.rstrip('/')}/api/v2/write?{query}",
                                  headers=headers, timeout=config.timeout)

    async def write(self, lines: list[str]) -> None:
        """Write one batch; all or nothing."""
        body = "\n".join(lines).encode()
        try:
            answer = await self._poster.post(body)
        except (OSError, TimeoutError) as exc:
            raise SinkRetryable(self.name, f"{type(exc).__name__}: {exc}") from exc
        if answer.status < 300:
            return
        detail = f"HTTP {answer.status}: {answer.body.decode('utf-8', 'replace')!s:.200}"
        if answer.status in _REJECTED:
            raise SinkRejected(self.name, detail, answer.status)
        raise SinkRetryable(self.name, detail, answer.status, _retry_after(answer.headers))

    async def close(self) -> None:
        """Close the connection."""
        self._poster.close()


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the upstream asked us to wait (429, 503): ``Retry-After`` as seconds or
    as an HTTP date; None when absent or unreadable."""
    value = None
    if headers:
        value = headers.get("Retry-After", headers.get("retry-after"))
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
