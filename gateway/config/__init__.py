"""Site configuration: pydantic models, device profiles, and the loader that checks them."""

from gateway.config.loader import load_config
from gateway.config.models import GatewayConfig

__all__ = ["GatewayConfig", "load_config"]
