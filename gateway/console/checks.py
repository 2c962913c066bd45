"""What ``check`` says about the console section before anything runs."""

from __future__ import annotations

from pathlib import Path

from gateway.config.advice import is_loopback
from gateway.config.models import GatewayConfig
from gateway.errors import ConfigError


def console_warnings(config: GatewayConfig, base_dir: Path) -> list[str]:
    """Console settings that will not work, or not safely."""
    console = config.console
    if console is None:
        return []
    from gateway.console.users import UsersFile  # only sites with a console pay for it

    out = []
    if config.http is None:
        out.append("console: no 'http' section, so nothing serves the console; add "
                   "http: {listen: 127.0.0.1:8080}")
    elif not is_loopback(config.http.host):
        out.append(f"console on http.listen {config.http.listen}: passwords and session cookies "
                   "cross the network unencrypted; serve it through a TLS reverse proxy")
    path = console.users_file if console.users_file.is_absolute() else base_dir / console.users_file
    try:
        if not UsersFile(path=path).load():
            out.append(f"console.users_file {path}: no users yet, nobody can log in; "
                       "`community-gateway user add NAME --role operator`")
    except ConfigError as exc:
        problems = "; ".join(f"{key or 'file'}: {msg}" for key, msg in exc.problems)
        out.append(f"console.users_file {path}: {problems} (the gateway will not start)")
    return out
