"""Where a site's outbox file lives: used by the gateway that writes it and by the
``outbox`` command that reads it, so both open the same file."""

from __future__ import annotations

from pathlib import Path

from gateway.config.models import GatewayConfig

OUTBOX_FILE = "outbox.sqlite"


def outbox_path(config: GatewayConfig, config_file: Path) -> Path:
    """``outbox.path``, else ``STATE_DIR/outbox.sqlite``; relative paths are taken from
    the config file's folder."""
    path = config.outbox.path or Path(config.state_dir) / OUTBOX_FILE
    return Path(config_file).parent / path  # an absolute path stays as it is
