"""Secrets in a config: where they are, and that their files are not readable by everyone."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel


def check_private(path: Path) -> None:
    """Raise ValueError if other users may read or write ``path`` (OSError if it cannot be stat'ed).

    Owner-only (0600) or owner and group (0640, e.g. ``root:community-gateway``)
    pass; anything with permissions for "others" does not, so a secret cannot be
    left world-readable by accident.
    """
    mode = os.stat(path).st_mode
    if mode & stat.S_IRWXO:
        raise ValueError(f"{path} is accessible by other users (mode {stat.S_IMODE(mode):04o}); "
                         f"chmod 600 (or 640 for a group) it")


def find_secrets(node: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """Every ``Secret`` in a config model, with its key path (``webhooks[0].token``)."""
    from gateway.config.base import Secret  # base imports this module

    if isinstance(node, Secret):
        yield where, node
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            yield from find_secrets(getattr(node, name), f"{where}.{name}" if where else name)
    elif isinstance(node, (list, tuple)):
        for i, item in enumerate(node):
            yield from find_secrets(item, f"{where}[{i}]")
    elif isinstance(node, dict):
        for key, item in node.items():
            yield from find_secrets(item, f"{where}.{key}" if where else str(key))
