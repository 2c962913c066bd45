"""Signed operator commands over MQTT: ``sign`` for senders, ``CommandVerifier`` for the gateway.

A command is published as a JSON envelope around the command's own body (see
gateway.alarms.commands for the body)::

    {"key": "hub-compound", "issued_at": 1796119200, "nonce": "3f8a...",
     "body": "{\\"by\\":\\"guard wang\\"}", "sig": "<64 hex digits>"}

``sig`` is HMAC-SHA256, with the named key's secret (its UTF-8 bytes), over the
UTF-8 bytes of six lines joined by ``\\n`` (no trailing newline)::

    community-gateway command v1
    {topic}          the full topic it is published on
    {key}
    {issued_at}      Unix seconds, decimal
    {nonce}
    {body}           the "body" string exactly as sent (may hold newlines: it is last)

Every part but the body is refused if it could hold a newline, so the input is
unambiguous. The body is a string, not a nested object, so the bytes signed are
the bytes received, with no JSON canonicalisation to agree on. docs/alarms.md
has a worked example; tests check it.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import re
import secrets
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

DOMAIN = "community-gateway command v1"
MAX_AGE = 60.0  # seconds a command stays valid after issued_at
MAX_AHEAD = 5.0  # seconds issued_at may be ahead of the gateway's clock (clock skew)
MIN_SECRET_LENGTH = 32  # characters: a key as long as the hash (RFC 2104), e.g. 32 random bytes in hex is 64
RATE_PER_ALARM = 10  # default: authenticated commands per alarm per minute
MAX_TRACKED = 10_000  # nonces held at most (commands within MAX_AGE); past it commands wait
RATE_WINDOW = 60.0

KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
SIG = re.compile(r"^[0-9a-fA-F]{64}$")
ENVELOPE_KEYS = frozenset({"key", "issued_at", "nonce", "body", "sig"})


class Clock(Protocol):
    def time(self) -> float: ...
    def monotonic(self) -> float: ...


def mac_input(topic: str, key: str, issued_at: int, nonce: str, body: str) -> bytes:
    """The exact bytes the signature covers."""
    return "\n".join((DOMAIN, topic, key, str(issued_at), nonce, body)).encode()


def signature(secret: str | bytes, topic: str, key: str, issued_at: int, nonce: str,
              body: str) -> str:
    """HMAC-SHA256 of ``mac_input(...)`` in lowercase hex."""
    raw = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(raw, mac_input(topic, key, issued_at, nonce, body), hashlib.sha256).hexdigest()


def sign(topic: str, body: str | Mapping[str, Any], *, key: str, secret: str | bytes,
         issued_at: int | None = None, nonce: str | None = None,
         clock: Clock | None = None) -> bytes:
    """The payload to publish on ``topic`` for a command ``body`` signed with ``key``.

    ``body`` is the command (``{"by": ..., "note": ..., "minutes": ...}``) as a dict
    or as its JSON text; ``issued_at`` defaults to now, ``nonce`` to 128 random bits.
    """
    if not KEY_NAME.match(key):
        raise ValueError(f"key name {key!r} must match {KEY_NAME.pattern}")
    if "\n" in topic:
        raise ValueError("a topic cannot hold a newline")
    text = body if isinstance(body, str) else json.dumps(dict(body), ensure_ascii=False,
                                                          separators=(",", ":"), allow_nan=False)
    if issued_at is None:
        issued_at = int(clock.time() if clock is not None else time.time())
    nonce = nonce if nonce is not None else secrets.token_hex(16)
    if not NONCE.match(nonce):
        raise ValueError(f"nonce must match {NONCE.pattern}")
    envelope = {"key": key, "issued_at": issued_at, "nonce": nonce, "body": text,
                "sig": signature(secret, topic, key, issued_at, nonce, text)}
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()


def check_secret(value: str) -> bytes:
    """A command key's secret as bytes; ValueError if it is too short to be safe."""
    if len(value) < MIN_SECRET_LENGTH:
        raise ValueError(f"a command key's secret needs at least {MIN_SECRET_LENGTH} characters "
                         f"(got {len(value)}); e.g. `openssl rand -hex 32`")
    return value.encode()


class CommandRefused(Exception):
    """A command the gateway will not apply; ``status`` as in HTTP (400, 401, 429)."""

    def __init__(self, detail: str, status: int):
        self.detail = detail
        self.status = status
        super().__init__(detail)


@dataclass(frozen=True, slots=True)
class VerifiedCommand:
    """What a good signature vouches for: the sending key and the command body."""

    key: str
    body: str
    issued_at: int
    nonce: str


class CommandVerifier:
    """Checks signed commands: known key, good signature, fresh, not replayed, not too many.

    Holds each accepted nonce until its command could no longer be fresh (so memory
    is bounded by the commands of the last minute, at most ``max_tracked``; past
    that, commands are refused rather than a nonce forgotten early), and counts
    authenticated commands per alarm over the last minute. Only a good signature
    counts against an alarm's limit, so strangers cannot use it up.
    """

    def __init__(self, keys: Mapping[str, bytes], *, clock: Clock, max_age: float = MAX_AGE,
                 max_ahead: float = MAX_AHEAD, per_alarm_per_minute: int = RATE_PER_ALARM,
                 max_tracked: int = MAX_TRACKED):
        self._keys = dict(keys)
        self._clock = clock
        self.max_age = max_age
        self.max_ahead = max_ahead
        self.per_alarm_per_minute = per_alarm_per_minute
        self.max_tracked = max_tracked
        self._nonces: set[tuple[str, str]] = set()
        self._nonce_expiry: list[tuple[float, tuple[str, str]]] = []  # heap
        self._recent: deque[tuple[float, str]] = deque()  # (monotonic, alarm id), in order
        self._per_alarm: dict[str, int] = {}

    @property
    def key_names(self) -> list[str]:
        """The names of the keys it accepts."""
        return sorted(self._keys)

    @property
    def tracked(self) -> int:
        """Nonces held for replay detection right now."""
        return len(self._nonces)

    def verify(self, topic: str, alarm_id: str, payload: bytes) -> VerifiedCommand:
        """The verified command, or ``CommandRefused`` saying why not."""
        env = _envelope(payload)
        key, issued_at, nonce, body, sig = (env["key"], env["issued_at"], env["nonce"],
                                            env["body"], env["sig"])
        secret = self._keys.get(key)
        if secret is None:
            raise CommandRefused(f"unknown key {key!r}", 401)
        if "\n" in topic:
            raise CommandRefused("topic holds a newline", 400)
        expected = hmac.new(secret, mac_input(topic, key, issued_at, nonce, body),
                            hashlib.sha256).digest()
        if not hmac.compare_digest(expected, bytes.fromhex(sig)):
            raise CommandRefused(f"bad signature for key {key!r}", 401)
        now = self._clock.time()
        if now - issued_at > self.max_age:
            raise CommandRefused(f"stale: issued {now - issued_at:.0f} s ago "
                                 f"(at most {self.max_age:.0f} s)", 401)
        if issued_at - now > self.max_ahead:
            raise CommandRefused(f"issued {issued_at - now:.0f} s in the future "
                                 f"(check the sender's clock)", 401)
        self._forget_expired(now)
        if (key, nonce) in self._nonces:
            raise CommandRefused("replayed: this nonce was already used", 401)
        if len(self._nonces) >= self.max_tracked:
            raise CommandRefused(f"too many commands: {self.max_tracked} in the last "
                                 f"{self.max_age:.0f} s; try again shortly", 429)
        self._nonces.add((key, nonce))
        heapq.heappush(self._nonce_expiry, (issued_at + self.max_age, (key, nonce)))
        self._count(alarm_id)
        return VerifiedCommand(key=key, body=body, issued_at=issued_at, nonce=nonce)

    def _forget_expired(self, now: float) -> None:
        while self._nonce_expiry and self._nonce_expiry[0][0] < now:
            _, entry = heapq.heappop(self._nonce_expiry)
            self._nonces.discard(entry)

    def _count(self, alarm_id: str) -> None:
        now = self._clock.monotonic()
        while self._recent and self._recent[0][0] <= now - RATE_WINDOW:
            _, old = self._recent.popleft()
            left = self._per_alarm[old] - 1
            if left:
                self._per_alarm[old] = left
            else:
                del self._per_alarm[old]
        if self._per_alarm.get(alarm_id, 0) >= self.per_alarm_per_minute:
            raise CommandRefused(f"rate limit: at most {self.per_alarm_per_minute} commands "
                                 f"per alarm per minute", 429)
        self._recent.append((now, alarm_id))
        self._per_alarm[alarm_id] = self._per_alarm.get(alarm_id, 0) + 1


def _envelope(payload: bytes) -> dict[str, Any]:
    expected = '{"key", "issued_at", "nonce", "body", "sig"} (see docs/alarms.md)'
    try:
        env = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise CommandRefused(f"not JSON; expected a signed command {expected}", 400) from None
    if not isinstance(env, dict):
        raise CommandRefused(f"expected a signed command {expected}", 400)
    if "sig" not in env:
        raise CommandRefused(f"unsigned command refused; expected {expected}", 401)
    unknown = sorted(set(env) - ENVELOPE_KEYS)
    missing = sorted(ENVELOPE_KEYS - set(env))
    if unknown or missing:
        parts = ([f"unknown keys {unknown}"] if unknown else []) + (
            [f"missing {missing}"] if missing else [])
        raise CommandRefused(f"{'; '.join(parts)}; expected {expected}", 400)
    problems = []
    if not isinstance(env["key"], str) or not KEY_NAME.match(env["key"]):
        problems.append("key: a key name")
    issued = env["issued_at"]
    if isinstance(issued, bool) or not isinstance(issued, int) or not 0 <= issued < 2**40:
        problems.append("issued_at: Unix seconds, an integer")
    if not isinstance(env["nonce"], str) or not NONCE.match(env["nonce"]):
        problems.append("nonce: 16 to 64 of A-Z a-z 0-9 _ -")
    if not isinstance(env["body"], str):
        problems.append("body: the command's JSON as a string")
    if not isinstance(env["sig"], str) or not SIG.match(env["sig"]):
        problems.append("sig: 64 hex digits")
    if problems:
        raise CommandRefused("; ".join(problems), 400)
    return env
