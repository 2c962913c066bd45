"""Personal data at the edge: which devices' readings leave the gateway, and as whom.

Health radars watch one resident each; their breathing and heart rates are
personal data (PIPL). A device's ``upstream`` setting decides what the upstream
sinks (TSDB, MQTT telemetry) get: ``all``; ``none`` (the default for personal
kinds: readings stay on the gateway, where rules and the console still use them);
or ``pseudonymised``: sent under ``resident-<pseudonym>`` (a keyed hash of the
resident, ``privacy.key``), tagged with the building only, so a series can be
followed over time without naming the household. Alarms are not affected: the
security room must know where to go.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from gateway.config.base import Location
from gateway.config.loader import DeviceSpec

#: Device kinds whose readings are personal data: kept local unless a site says otherwise.
PERSONAL_KINDS = frozenset({"health_radar"})


def upstream_mode(spec: DeviceSpec) -> str:
    """``all``, ``none`` or ``pseudonymised`` for a device."""
    chosen = getattr(spec.config, "upstream", None)
    if chosen is not None:
        return chosen
    return "none" if spec.kind in PERSONAL_KINDS else "all"


@dataclasses.dataclass(frozen=True)
class UpstreamIdentities:
    """Device id -> the id its readings carry upstream (None: they stay here)."""

    aliases: dict[str, str | None]
    alias_specs: dict[str, DeviceSpec]  # for the line encoder's tags


def upstream_identities(devices: dict[str, DeviceSpec],
                        pseudonymise: Callable[[str], str] | None) -> UpstreamIdentities:
    """Which devices do not go upstream under their own id, and what they become."""
    aliases: dict[str, str | None] = {}
    specs: dict[str, DeviceSpec] = {}
    for device_id, spec in devices.items():
        mode = upstream_mode(spec)
        if mode == "all":
            continue
        if mode == "none" or pseudonymise is None:
            aliases[device_id] = None
            continue
        resident = getattr(spec.config, "resident", None) or device_id
        alias = f"resident-{pseudonymise('resident:' + resident)}"
        aliases[device_id] = alias
        building = Location(building=spec.config.location.building)
        config = spec.config.model_copy(update={"id": alias, "location": building})
        specs[alias] = dataclasses.replace(spec, config=config)
    return UpstreamIdentities(aliases, specs)
