"""The console in ``community-gateway demo``: a fresh operator login for each run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.console.passwords import hash_password
from gateway.console.user_cli import generate_password
from gateway.console.users import UsersFile

USERS_FILE = "console-users.yaml"


@dataclass(frozen=True)
class DemoLogin:
    """Where the demo's console is and how to log in (print it once)."""

    url: str
    user: str
    password: str

    def describe(self) -> str:
        return f"security-room console on {self.url} (log in as {self.user} / {self.password})"


def enable_console(raw: dict, data_dir: Path, *, http_port: int, user: str = "guard") -> DemoLogin:
    """Turn the console on in a demo site config (``raw``, to be written into ``data_dir``).

    Serves HTTP on 127.0.0.1:``http_port`` (unless ``raw`` already has an ``http``
    section) and writes ``data_dir/console-users.yaml`` with one operator whose
    password is new each run.
    """
    raw.setdefault("http", {"listen": f"127.0.0.1:{http_port}"})
    listen = raw["http"]["listen"]
    password = generate_password()
    UsersFile(path=data_dir / USERS_FILE).add(user, "operator", hash_password(password), replace=True)
    raw["console"] = {"users_file": USERS_FILE, "audit_file": "console-audit.jsonl"}
    return DemoLogin(url=f"http://{listen}/console/", user=user, password=password)
