"""Site configuration: pydantic models and the loader that checks them.

Imports no driver: each device type's profile checks are handed to the loader
(see ``gateway.runtime.site.load_site``).
"""

from gateway.config.loader import load_config, read_config
from gateway.config.models import GatewayConfig

__all__ = ["GatewayConfig", "load_config", "read_config"]
