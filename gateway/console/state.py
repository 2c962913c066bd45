"""The console's state for one gateway: users, sessions, the live feed, the audit trail."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.alarms.alarm import iso
from gateway.config.models import ConsoleConfig
from gateway.console.audit import AuditLog
from gateway.console.live import LiveFeed
from gateway.console.passwords import PasswordChecker, hash_password
from gateway.console.sessions import Session, SessionStore
from gateway.console.throttle import LoginThrottle
from gateway.console.users import UsersFile
from gateway.operations.http_trust import client_address
from gateway.views import Views

if TYPE_CHECKING:
    from gateway.operations.http_app import App, Request

COOKIE = "cg_session"
# How many stored transitions the history looks through (newest first) when filtering.
HISTORY_SCAN = 5000
STATIC = Path(str(resources.files("gateway.console") / "static"))


class Console:
    """The console's state: users, sessions, the live feed, the audit trail."""

    def __init__(self, *, views: Views, config: ConsoleConfig, base_dir: Path):
        def place(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else base_dir / p)

        self.views = views
        self.site = views.site  # id, name, language
        self.alarms = views.alarms
        self.devices = views.devices
        self.display = views.display
        self.clock = views.clock
        self.config = config
        self.users = UsersFile(path=place(config.users_file))
        sessions_file = place(config.sessions_file) or self.users.path.with_name(
            self.users.path.name + ".sessions.json")
        self.sessions = SessionStore(minutes=config.session_minutes, clock=views.clock,
                                     path=sessions_file)
        self.audit = AuditLog(clock=views.clock, path=place(config.audit_file))
        self.throttle = LoginThrottle(clock=views.clock)
        self.checker = PasswordChecker()
        self.trusted_proxies = list(views.http.trusted_proxies) if views.http is not None else []
        self.feed = LiveFeed(alarms=views.alarms, devices=views.devices, clock=views.clock)
        self.version = _static_version()
        # Checked against when a name is unknown, so a wrong name costs as long as a wrong password.
        self.decoy_hash = hash_password("not-a-real-password-" + self.feed.instance)

    async def session_of(self, request: Request) -> Session | None:
        """The request's live session; None (and the session ended) if its user was
        removed from the users file or their password or role changed since login."""
        return await self.session_for(request.cookies.get(COOKIE))

    async def session_for(self, token: str | None) -> Session | None:
        """The live session of a token, checked against the users file as it is now."""
        session = self.sessions.get(token)
        if session is None:
            return None
        user = self.users.get(session.user)
        if user is None or not hmac.compare_digest(user.credential, session.credential):
            await self.sessions.drop(token)
            return None
        return session

    def covers(self, session: Session) -> Callable[[dict], bool] | None:
        """On a console of many sites (the hub): whether a row (an alarm, a gateway, a
        place) is in the session's user's scope; None when everything may be seen (a
        gateway's console, or a hub user without a scope)."""
        if self.views.hub is None:
            return None
        user = self.users.get(session.user)
        if user is None:
            return lambda row: False
        return user.scope.covers if user.scope is not None else None

    def scope_key(self, session: Session) -> str | None:
        """The same text for users of the same scope (their pages share what is built for
        it); None without a scope."""
        if self.views.hub is None:
            return None
        user = self.users.get(session.user)
        if user is None or user.scope is None:
            return None
        return user.scope.model_dump_json()

    def remote(self, request: Request) -> str:
        """The client's address (from X-Forwarded-For only behind a trusted proxy)."""
        return client_address(request, self.trusted_proxies)

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

    async def on_shutdown(self, _app: App) -> None:
        """Stop the password checks and keep the sessions (the streams end with the fan-out)."""
        self.checker.close()
        await self.sessions.persist()


CONSOLE = "console"  # the app's Console (app[CONSOLE])


def _static_version() -> str:
    """A digest of the static files: a page loaded from older files reloads itself."""
    digest = hashlib.sha256()
    for path in sorted(STATIC.iterdir()):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
