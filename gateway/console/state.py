"""The console's state for one gateway: users, sessions, the live feed, the audit trail."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

from aiohttp import web

from gateway.alarms.alarm import iso
from gateway.config.models import ConsoleConfig
from gateway.console.audit import AuditLog
from gateway.console.live import LiveFeed
from gateway.console.passwords import hash_password
from gateway.console.sessions import Session, SessionStore
from gateway.console.throttle import LoginThrottle
from gateway.console.users import UsersFile
from gateway.views import Views

COOKIE = "cg_session"
# How many stored transitions the history looks through (newest first) when filtering.
HISTORY_SCAN = 5000
STATIC = Path(str(resources.files("gateway.console") / "static"))


class Console:
    """The console's state: users, sessions, the live feed, the audit trail."""

    def __init__(self, *, views: Views, config: ConsoleConfig, base_dir: Path):
        def place(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else base_dir / p)

        self.site = views.site  # id, name, language
        self.alarms = views.alarms
        self.clock = views.clock
        self.config = config
        self.users = UsersFile(path=place(config.users_file))
        sessions_file = place(config.sessions_file) or self.users.path.with_name(
            self.users.path.name + ".sessions.json")
        self.sessions = SessionStore(minutes=config.session_minutes, clock=views.clock,
                                     path=sessions_file)
        self.audit = AuditLog(clock=views.clock, path=place(config.audit_file))
        self.throttle = LoginThrottle(clock=views.clock)
        self.feed = LiveFeed(alarms=views.alarms, devices=views.devices, clock=views.clock)
        self.version = _static_version()
        # Checked against when a name is unknown, so a wrong name costs as long as a wrong password.
        self.decoy_hash = hash_password("not-a-real-password-" + self.feed.instance)

    def session_of(self, request: web.Request) -> Session | None:
        """The request's live session, its role as the users file says now."""
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            return None
        user = self.users.get(session.user)
        if user is None:  # removed from the users file: logged out at once
            return None
        session.role = user.role
        return session

    async def transitions(self) -> list[dict[str, object]]:
        """Alarm transitions for the history, oldest first: the state file's from before
        this start (as far back as ``HISTORY_SCAN``), then those seen since."""
        recent = list(self.feed.history)
        full = len(recent) == self.feed.history.maxlen
        cutoff = recent[0][0] if full else self.feed.started
        older: list[dict[str, object]] = []
        for row in reversed(await self.alarms.history(limit=HISTORY_SCAN)):
            if row["ts"] < cutoff:
                item = {"event": row["event"], "ts": iso(row["ts"]), "alarm": row["alarm"]}
                item.update({k: row[k] for k in ("by", "note") if row.get(k)})
                older.append(item)
        return older + [item for _, item in recent]

    async def on_shutdown(self, _app: web.Application) -> None:
        """End the event streams so the server can stop, and keep the sessions."""
        self.feed.close()
        await self.sessions.persist()


CONSOLE = web.AppKey("console", Console)


def _static_version() -> str:
    """A digest of the static files: a page loaded from older files reloads itself."""
    digest = hashlib.sha256()
    for path in sorted(STATIC.iterdir()):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
