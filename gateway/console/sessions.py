"""Console sessions: server-side, with an idle expiry and a CSRF token each.

The browser holds only a random token (an HttpOnly, SameSite=Strict cookie).
Sessions are kept in memory and in a small JSON file, so a guard's page stays
logged in across a gateway restart; the file stores a SHA-256 of each token,
never the token itself. A session expires ``minutes`` after it was last used;
an open console page uses it all the time, so it lasts as long as the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from gateway import json_safe
from gateway.console.users import ACTING_ROLES, ROLES, User

log = logging.getLogger(__name__)

MAX_SESSIONS = 1000
# How stale the file's expiry times may get before a touch rewrites it.
PERSIST_EVERY = 300.0


@dataclass(slots=True)
class Session:
    """One logged-in browser."""

    user: str
    role: str
    csrf: str
    created: float
    last_seen: float
    # The user's ``credential`` at login; sessions from before a password or role
    # change (or from a file written before this field existed) no longer match.
    credential: str = ""

    @property
    def can_act(self) -> bool:
        """Operators (and admins) act on alarms; viewers only look."""
        return self.role in ACTING_ROLES


class SessionStore:
    """Sessions by token; ``path`` (optional) keeps them across restarts."""

    def __init__(self, *, minutes: float, clock, path: str | Path | None = None):
        self.ttl = minutes * 60.0
        self.path = Path(path) if path is not None else None
        self._clock = clock
        self._sessions: dict[str, Session] = {}  # sha256(token) -> session
        self._persisted_at = 0.0
        self._write_lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def load(self) -> None:
        """Take the unexpired sessions from the file (a bad file is logged and ignored)."""
        if self.path is None or not self.path.exists():
            return
        now = self._clock.time()
        try:
            raw = json.loads(self.path.read_bytes())  # UTF-8, as written
            sessions = {key: Session(**value) for key, value in raw.items()}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.error("console sessions file %s unusable, starting without sessions: %s", self.path, exc)
            return
        self._sessions = {k: s for k, s in sessions.items()
                          if s.role in ROLES and now - s.last_seen < self.ttl}
        self._persisted_at = now

    async def create(self, user: User) -> tuple[str, Session]:
        """Log ``user`` in: a new token and its session."""
        now = self._clock.time()
        self._expire(now)
        while len(self._sessions) >= MAX_SESSIONS:  # login spam must not grow memory
            oldest = min(self._sessions, key=lambda k: self._sessions[k].last_seen)
            del self._sessions[oldest]
        # token_urlsafe's default: 32 random bytes (256 bits) each.
        token = secrets.token_urlsafe()
        session = Session(user=user.name, role=user.role, csrf=secrets.token_urlsafe(),
                          created=now, last_seen=now, credential=user.credential)
        self._sessions[_key(token)] = session
        await self._persist()
        return token, session

    def get(self, token: str | None) -> Session | None:
        """The live session for ``token`` (and mark it used), or None."""
        if not token:
            return None
        key = _key(token)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self._clock.time()
        if now - session.last_seen >= self.ttl:
            del self._sessions[key]
            return None
        session.last_seen = now
        return session

    def persist_soon(self) -> bool:
        """Whether expiry times in the file are stale enough to rewrite it."""
        return self.path is not None and self._clock.time() - self._persisted_at > PERSIST_EVERY

    async def drop(self, token: str | None) -> None:
        """Log out."""
        if token and self._sessions.pop(_key(token), None) is not None:
            await self._persist()

    async def persist(self) -> None:
        """Write the file now (e.g. when the gateway stops)."""
        await self._persist()

    def _expire(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if now - s.last_seen >= self.ttl]:
            del self._sessions[key]

    async def _persist(self) -> None:
        if self.path is None:
            return
        self._persisted_at = self._clock.time()
        body = json_safe.dumps({k: asdict(s) for k, s in self._sessions.items()})
        async with self._write_lock:
            try:
                await asyncio.to_thread(_write_private, self.path, body)
            except OSError as exc:  # sessions still work, they just will not survive a restart
                log.error("cannot write console sessions file %s: %s", self.path, exc)


def _key(token: str) -> str:
    # A cookie may carry lone surrogates (undecodable bytes): hashed, never an error.
    return hashlib.sha256(token.encode(errors="surrogatepass")).hexdigest()


def _write_private(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body.encode())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
