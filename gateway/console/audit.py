"""The console's audit trail: who logged in, out, or acted on which alarm, and how it went.

Every entry goes to the log (logger ``gateway.console.audit``) and, when a file is
configured, as one JSON line to that file. Alarm actions are also carried by the
alarm's own transitions (``by`` and ``note``), which reach MQTT and the history.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from pathlib import Path

from gateway import json_safe
from gateway.alarms.alarm import iso

log = logging.getLogger("gateway.console.audit")

RECENT = 500


class AuditLog:
    """Records operator actions; keeps the most recent ones in memory too."""

    def __init__(self, *, clock, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self._clock = clock
        self.recent: deque[dict[str, object]] = deque(maxlen=RECENT)
        self._lock = asyncio.Lock()
        self._write_failed = False

    async def record(self, *, operator: str, action: str, target: str | None = None,
                     note: str | None = None, ok: bool = True, detail: str | None = None,
                     remote: str | None = None) -> dict[str, object]:
        """Record one action (``login``, ``logout``, ``ack``, ``reset``, ``shelve`` ...)."""
        entry: dict[str, object] = {"ts": iso(self._clock.time()), "operator": operator,
                                    "action": action, "ok": ok}
        for key, value in (("target", target), ("note", note), ("detail", detail), ("remote", remote)):
            if value:
                entry[key] = value
        self.recent.append(entry)
        log.log(logging.INFO if ok else logging.WARNING, "console %s by %s%s%s%s", action, operator,
                f" on {target}" if target else "", f" ({note})" if note else "",
                "" if ok else f" refused: {detail}")
        if self.path is not None:
            line = json_safe.dumps(entry, compact=False) + "\n"
            async with self._lock:
                try:
                    await asyncio.to_thread(_append, self.path, line)
                    self._write_failed = False
                except OSError as exc:
                    if not self._write_failed:
                        log.error("cannot write console audit file %s: %s", self.path, exc)
                    self._write_failed = True
        return entry


def _append(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(line)
