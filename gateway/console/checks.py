"""What ``check`` says about the console section before anything runs."""

from __future__ import annotations

from pathlib import Path

from gateway.config.advice import is_loopback
from gateway.config.models import GatewayConfig
from gateway.errors import ConfigError


def console_warnings(config: GatewayConfig, base_dir: Path,
                     config_file: Path | None = None) -> tuple[list[str], list[str]]:
    """Console settings that will not work, or not safely (warnings), and those that
    stop the gateway from starting (blockers)."""
    console = config.console
    if console is None:
        return [], []
    from gateway.console.users import UsersFile  # only sites with a console pay for it

    out: list[str] = []
    blockers: list[str] = []
    if config.http is None:
        out.append("console: no 'http' section, so nothing serves the console; add "
                   "http: {listen: 127.0.0.1:8080}")
    elif not is_loopback(config.http.host):
        out.append(f"console on http.listen {config.http.listen}: passwords and session cookies "
                   "cross the network unencrypted; serve it through a TLS reverse proxy")
    path = console.users_file if console.users_file.is_absolute() else base_dir / console.users_file
    # The command to give must work as printed: `user add` needs to know which file.
    add = ("community-gateway user add NAME --role operator "
           + (f"--config {config_file}" if config_file is not None else f"--users-file {path}"))
    try:
        if not UsersFile(path=path).load():
            out.append(f"console.users_file {path}: no users yet, nobody can log in; `{add}`")
    except ConfigError as exc:
        problems = "; ".join(f"{key or 'file'}: {msg}" for key, msg in exc.problems)
        if "users file not found" in problems:
            problems = f"users file not found; create it with `{add}`"
        blockers.append(f"console.users_file {path}: {problems}")
    return out, blockers
