"""``community-gateway hub HUB.yaml`` and ``check`` of a hub file."""

from __future__ import annotations

import sys
from pathlib import Path

from gateway.errors import ConfigError
from gateway.config.yaml_file import read_yaml
from gateway.hub.config import check_secrets, is_hub_file, load_hub_config

EXIT_CONFIG = 2


def check_hub_file(path: str) -> int | None:
    """Check a hub file like a site file (exit status); None if ``path`` is not a hub file."""
    try:
        raw = read_yaml(Path(path))
    except ConfigError:
        return None  # the site file check reports an unreadable file
    if not is_hub_file(raw):
        return None
    try:
        config = load_hub_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    for warning in check_secrets(config):
        print(f"warning: {warning}")
    print(f"{path}: OK (hub {config.hub.id}: scope {config.scope.describe()}, broker "
          f"{config.broker.host}:{config.broker.port}, {len(config.webhooks)} webhooks)")
    return 0


def run_hub(path: str, run_until_signal) -> int:
    """Load the hub file and run the hub until a signal."""
    try:
        config = load_hub_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG

    from gateway.operations.systemd import SystemdNotifier

    notifier = SystemdNotifier.from_environment()

    async def serve() -> None:
        from gateway.hub.service import Hub

        try:
            await Hub(config, notifier=notifier).run()
        finally:
            notifier.close()

    return run_until_signal(serve())
