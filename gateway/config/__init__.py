"""Site configuration: pydantic models, device profiles, and the loader that checks them.

Imports no driver: each device type's profile checks are handed to the loader (see
``gateway.runtime.site.load_site``). The names below are imported on first use, so a
process needing only the models (the hub) does not import the loader.
"""

from __future__ import annotations

__all__ = ["GatewayConfig", "load_config", "read_config"]


def __getattr__(name: str):
    if name in ("load_config", "read_config"):
        from gateway.config import loader

        return getattr(loader, name)
    if name == "GatewayConfig":
        from gateway.config.models import GatewayConfig

        return GatewayConfig
    raise AttributeError(f"module 'gateway.config' has no attribute {name!r}")
