"""``load_site``: a site file checked whole, as ``check``, ``run`` and a reload see it.

The config's own checks (types, references, rules), each device type's checks
against its driver's profile (``gateway.runtime.device_types``) and the
console's warnings, put together in one call.
"""

from __future__ import annotations

from pathlib import Path

from gateway.config.loader import Site, load_config
from gateway.console.checks import console_warnings
from gateway.runtime.device_types import SPEC_BUILDERS


def load_site(path: str | Path) -> Site:
    """Read, validate and resolve a site config; raise ConfigError listing every problem."""
    site = load_config(path, SPEC_BUILDERS)
    warnings, blockers = console_warnings(site.config, site.path.resolve().parent, site.path)
    site.warnings.extend(warnings)
    site.blockers.extend(blockers)
    return site
