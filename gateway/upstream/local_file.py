"""Keep the time series in a local line-protocol file, for sites (and demos) without a TSDB.

The file is plain InfluxDB line protocol, so it can be loaded later with
``influx write`` or ``curl --data-binary @file .../api/v2/write``. It rotates
once it passes ``max_mb``, keeping one previous file (``.1``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.errors import SinkRetryable


class LocalFileSink:
    """Appends batches to a file, rotating at a size limit."""

    def __init__(self, path: Path, max_mb: float, name: str = "local-file"):
        self.name = name
        self.path = Path(path)
        self._max_bytes = int(max_mb * 1024 * 1024)

    async def write(self, lines: list[str]) -> None:
        """Append one batch."""
        data = ("\n".join(lines) + "\n").encode()
        try:
            await asyncio.to_thread(self._append, data)
        except OSError as exc:
            raise SinkRetryable(self.name, f"cannot write {self.path}: {exc.strerror}") from exc

    def _append(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size + len(data) > self._max_bytes:
            self.path.replace(self.path.with_name(self.path.name + ".1"))
        with self.path.open("ab") as f:
            f.write(data)

    async def close(self) -> None:
        """Nothing held open between writes."""
