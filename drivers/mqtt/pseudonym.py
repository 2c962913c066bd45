"""Pseudonyms for card numbers and person ids: a keyed hash, computed before anything leaves.

``pseudonym = HMAC-SHA256(key, identifier text)`` as lowercase hex, truncated to
16 hex digits (64 bits: no collision is to be expected among the few hundred
thousand cards of a compound, and the pseudonym stays short in the time series).
The key stays on the gateway (``privacy.key`` in the site config, from an
environment variable or a file); without it a pseudonym cannot be reversed or
even recomputed, so a card number space of 10^8 cannot simply be enumerated.
The same card gets the same pseudonym at every terminal and after restarts, so
repeated denials of one card can still be told apart from denials of many.

When a site allows it (``privacy.keep_raw: true``), ``RawValueLog`` keeps each
pseudonym's raw value in a local file (mode 0600), once per pseudonym, so the
property office can look up a card on site. That file is never sent anywhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
from pathlib import Path

from gateway import json_safe

DIGITS = 16
MIN_KEY_LENGTH = 16


class Pseudonymiser:
    """Turns an identifier's text into its pseudonym; optionally remembers the raw value."""

    def __init__(self, *, key: str | bytes, digits: int = DIGITS,
                 raw_log: "RawValueLog | None" = None):
        key_bytes = key.encode() if isinstance(key, str) else key
        if len(key_bytes) < MIN_KEY_LENGTH:
            raise ValueError(f"the pseudonymisation key must be at least {MIN_KEY_LENGTH} "
                             f"characters long (got {len(key_bytes)})")
        if not 8 <= digits <= 64:
            raise ValueError("digits must be 8..64")
        self._mac = hmac.new(key_bytes, digestmod=hashlib.sha256)
        self._digits = digits
        self.raw_log = raw_log

    def __call__(self, value: str) -> str:
        """The pseudonym of ``value``."""
        mac = self._mac.copy()
        mac.update(value.encode("utf-8"))
        pseudonym = mac.hexdigest()[: self._digits]
        if self.raw_log is not None:
            self.raw_log.note(pseudonym, value)
        return pseudonym


class RawValueLog:
    """A local lookup file of pseudonym -> raw value, one JSON line per new pseudonym.

    ``note`` is called on the hot path and only queues; ``flush`` writes in a
    worker thread. Pseudonyms already in the file (from earlier runs) are read
    on the first flush, so each is written once.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._known: set[str] | None = None
        self._pending: dict[str, str] = {}

    def note(self, pseudonym: str, raw: str) -> None:
        """Remember a pseudonym's raw value until the next flush."""
        if self._known is None or pseudonym not in self._known:
            self._pending.setdefault(pseudonym, raw)

    @property
    def pending(self) -> int:
        """Values waiting for ``flush``."""
        return len(self._pending)

    async def flush(self) -> None:
        """Append the new pseudonyms; raises OSError if the file cannot be written."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        try:
            await asyncio.to_thread(self._write, pending)
        except BaseException:
            for k, v in pending.items():  # try again with the next flush
                self._pending.setdefault(k, v)
            raise

    def _write(self, pending: dict[str, str]) -> None:
        if self._known is None:
            self._known = self._read_known()
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        lines = [json_safe.dumps({"pseudonym": p, "value": v, "first_seen": now})
                 for p, v in pending.items() if p not in self._known]
        if lines:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
        self._known.update(pending)

    def _read_known(self) -> set[str]:
        known: set[str] = set()
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return known
        for line in text.splitlines():
            try:
                known.add(json.loads(line)["pseudonym"])
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line from a crash: that value is written again
        return known
