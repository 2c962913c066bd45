"""Site configuration: pydantic models, device profiles, and the loader that checks them.

The names below are imported on first use, so that a process needing only the
models (the hub) does not import the loader and with it every driver's profiles.
"""

from __future__ import annotations

__all__ = ["GatewayConfig", "load_config"]


def __getattr__(name: str):
    if name == "load_config":
        from gateway.config.loader import load_config

        return load_config
    if name == "GatewayConfig":
        from gateway.config.models import GatewayConfig

        return GatewayConfig
    raise AttributeError(f"module 'gateway.config' has no attribute {name!r}")
