"""The console's users file: operator names, roles and password hashes (YAML).

::

    # written by `community-gateway user add`
    users:
      wang:
        role: operator        # operator: acknowledge, reset, shelve; viewer: read only;
                              # admin: as operator (the hub's console)
        password: scrypt$16384$8$1$...
      zhou:
        role: viewer
        password: scrypt$16384$8$1$...
        scope: {communities: [North]}   # hub console only: what this user may see and act on

``scope`` (optional) is read by the hub's console: a subdistrict, communities or
compounds, as in a hub file's ``scope``. A user without one sees the whole hub's
scope. A gateway's console has one site and ignores it.

The file is re-read when it changes, so ``user add`` takes effect without a
restart. It holds hashes only and is written with mode 0600.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from gateway.config.base import Strict
from gateway.console.passwords import is_hash
from gateway.errors import ConfigError

log = logging.getLogger(__name__)

Role = Literal["operator", "viewer", "admin"]
ROLES: tuple[Role, ...] = ("operator", "viewer", "admin")
ACTING_ROLES = frozenset({"operator", "admin"})  # may acknowledge, reset and shelve
# Names are shown to other operators and stored with every action: printable, short.
UserName = Annotated[str, Field(pattern=r"^[\w.@-]{1,32}$")]
HEADER = ("# Security-room console users: community-gateway user add NAME --role operator|viewer\n"
          "# Holds password hashes only (scrypt). Keep it readable by the gateway alone.\n")


class UserScope(Strict):
    """What a hub console user may see: sites whose hierarchy matches every part given."""

    subdistrict: str | None = None
    communities: list[str] = []
    compounds: list[str] = []

    @model_validator(mode="after")
    def _something(self) -> "UserScope":
        if self.subdistrict is None and not self.communities and not self.compounds:
            raise ValueError("name a subdistrict, communities or compounds (or leave scope out)")
        return self

    def covers(self, place: dict) -> bool:
        """Whether a site with this hierarchy (subdistrict, community, compound) is in it."""
        if self.subdistrict is not None and place.get("subdistrict") != self.subdistrict:
            return False
        if self.communities and place.get("community") not in self.communities:
            return False
        if self.compounds and place.get("compound") not in self.compounds:
            return False
        return True

    def describe(self) -> dict:
        return self.model_dump(exclude_defaults=True)


class UserEntry(Strict):
    """One operator in the file."""

    role: Role
    password: str
    scope: UserScope | None = None

    @field_validator("password")
    @classmethod
    def _hashed(cls, value: str) -> str:
        if not is_hash(value):
            raise ValueError("expected a scrypt hash written by `community-gateway user add`, "
                             "never a plain password")
        return value


class UsersModel(Strict):
    """The whole file."""

    users: dict[UserName, UserEntry] = {}


@dataclass(frozen=True, slots=True)
class User:
    """A console user as the console sees it."""

    name: str
    role: Role
    password_hash: str
    scope: UserScope | None = None

    @property
    def can_act(self) -> bool:
        """Operators (and admins) act on alarms; viewers only look."""
        return self.role in ACTING_ROLES

    @property
    def credential(self) -> str:
        """Changes whenever the password, the role or the scope does: a session logged in
        with an older one has ended (see ``Console.session_of``)."""
        text = f"{self.role}\0{self.password_hash}"
        if self.scope is not None:  # none: the same credential as before scopes existed
            text += "\0" + json.dumps(self.scope.describe(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]


class UsersFile:
    """Reads (and, for the CLI, writes) one users file."""

    def __init__(self, *, path: str | Path):
        self.path = Path(path)
        self._users: dict[str, User] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._broken = False

    def load(self) -> dict[str, User]:
        """Read the file now; ConfigError names what is wrong."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(str(self.path), [("", "users file not found; create it with "
                                                    "`community-gateway user add NAME --role operator "
                                                    f"--users-file {self.path}`")]) from None
        except OSError as exc:
            raise ConfigError(str(self.path), [("", f"cannot read users file: {exc.strerror}")]) from None
        try:
            raw = yaml.safe_load(text) or {}
            model = UsersModel.model_validate(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(str(self.path), [("", f"not valid YAML: {exc}")]) from None
        except ValidationError as exc:
            problems = [(".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors()]
            raise ConfigError(str(self.path), problems) from None
        return {name: User(name, e.role, e.password, e.scope) for name, e in model.users.items()}

    def get(self, name: str) -> User | None:
        """The user called ``name``, from the file as it is now (re-read if it changed).

        A file that became unreadable or invalid keeps the last good copy in use
        and logs the problem once.
        """
        try:
            st = self.path.stat()
            # the inode too: `user add --replace` writes a new file of the same size,
            # possibly within one tick of the file system's clock
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            try:
                self._users = self.load()
                if self._broken:
                    log.info("console users file %s readable again (%d users)", self.path, len(self._users))
                self._broken = False
            except ConfigError as exc:
                if not self._broken:
                    log.error("console users file unusable, keeping the last good copy: %s", exc)
                self._broken = True
            self._stamp = stamp
        return self._users.get(name)

    def save(self, users: dict[str, User]) -> None:
        """Write the file atomically with mode 0600."""
        body = {"users": {u.name: {"role": u.role, "password": u.password_hash,
                                   **({"scope": u.scope.describe()} if u.scope else {})}
                          for u in sorted(users.values(), key=lambda u: u.name)}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(HEADER + yaml.safe_dump(body, sort_keys=False, allow_unicode=True))
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def add(self, name: str, role: Role, password_hash: str, *, replace: bool = False,
            scope: UserScope | None = None) -> None:
        """Add a user (or, with ``replace``, change an existing one's role and password)."""
        users = self.load() if self.path.exists() else {}
        if name in users and not replace:
            raise ValueError(f"user {name!r} exists; use --replace to set a new password or role")
        UsersModel.model_validate({"users": {name: {"role": role, "password": password_hash}}})
        users[name] = User(name, role, password_hash, scope)
        self.save(users)

    def remove(self, name: str) -> None:
        """Remove a user; ValueError if there is none by that name."""
        users = self.load()
        if users.pop(name, None) is None:
            raise ValueError(f"no user {name!r} in {self.path}")
        self.save(users)

