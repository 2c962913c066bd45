"""InfluxDB v2 write API sink (InfluxDB itself, or VictoriaMetrics which accepts it)."""

from __future__ import annotations

import asyncio
import email.utils
from datetime import datetime, timezone

import aiohttp
from influxdb_client import WritePrecision
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.rest import ApiException

from gateway.config.models import InfluxConfig
from gateway.errors import SinkRejected, SinkRetryable

# Statuses that retrying cannot fix: the batch itself is wrong (a field type clash).
# 401/403/404 are configuration problems an installer fixes; data waits for that.
_REJECTED = {400, 413, 422}


class InfluxSink:
    """Writes line-protocol batches with influxdb-client's async write API."""

    def __init__(self, config: InfluxConfig, token: str | None, name: str = "influxdb"):
        self.name = name
        self._config = config
        # No token (VictoriaMetrics): the client then sends no Authorization header.
        self._client = InfluxDBClientAsync(url=config.url, token=token or "", org=config.org,
                                           timeout=int(config.timeout * 1000))
        self._api = self._client.write_api()

    async def write(self, lines: list[str]) -> None:
        """Write one batch; all or nothing."""
        try:
            await self._api.write(bucket=self._config.bucket, org=self._config.org,
                                  record="\n".join(lines), precision=WritePrecision.NS)
        except ApiException as exc:
            status = exc.status or 0
            detail = f"HTTP {status}: {(exc.body or exc.reason or '')!s:.200}"
            if status in _REJECTED:
                raise SinkRejected(self.name, detail, status) from exc
            raise SinkRetryable(self.name, detail, status, _retry_after(exc)) from exc
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise SinkRetryable(self.name, f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        """Release the HTTP session."""
        await self._client.close()


def _retry_after(exc: ApiException) -> float | None:
    """Seconds the upstream asked us to wait (429, 503): ``Retry-After`` as seconds or
    as an HTTP date; None when absent or unreadable."""
    value = exc.headers.get("Retry-After") if exc.headers else None
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
