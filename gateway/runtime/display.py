"""What the console page needs to show values and places as a guard reads them.

An alarm's ``value`` is the reading that raised it while its condition holds (after
that, the reading that cleared it: 0 W once a port is cut). The page shows it only
for rules on a measured quantity, with the field's unit; a yes/no field (smoke, a
fall, a door) says nothing a number would add.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drivers.modbus.register_map import ModbusProfile
from gateway.errors import ConfigError
from gateway.config.loader import DeviceSpec, Site, load_profile, selects

# Rules whose value is a measured quantity: a limit crossed, a rate of change.
VALUE_RULES = ("threshold", "rate")


def rule_values(site: Site) -> dict[str, dict[str, Any]]:
    """``{rule id: {"field": name, "unit": unit or None}}`` for rules whose alarm value
    is worth showing; rules on yes/no fields and event rules are left out."""
    out: dict[str, dict[str, Any]] = {}
    for rule in site.config.rules:
        if rule.type not in VALUE_RULES:
            continue
        limits = [x for x in (getattr(rule, "above", None), getattr(rule, "below", None))
                  if x is not None]
        if rule.type == "threshold" and limits and all(0 < x <= 1 for x in limits):
            continue  # `above: 0.5` on a 0/1 field: smoke, fall, presence
        selected = [d for d in site.devices.values() if selects(rule, d) and rule.field in d.fields]
        if selected and all(_is_flag(d, rule.field) for d in selected):
            continue
        units = {u for d in selected if (u := _units(d, site).get(rule.field))}
        out[rule.id] = {"field": rule.field, "unit": units.pop() if len(units) == 1 else None}
    return out


def site_title(site: Site) -> dict[str, Any]:
    """The header: the compound's name and the buildings its devices are in."""
    info = site.config.site
    name = " · ".join(p for p in (info.community, info.compound) if p) or info.name or info.id
    buildings = sorted({str(d.config.location.building) for d in site.devices.values()
                        if d.config.location.building},
                       key=lambda b: (len(b), b))
    return {"title": name, "buildings": buildings}


def _is_flag(spec: DeviceSpec, field: str) -> bool:
    return any(p.name == field and p.type in ("bool", "bit") for p in spec.points)


_UNITS: dict[tuple[str, str], dict[str, str]] = {}


def field_units(site: Site, spec: DeviceSpec) -> dict[str, str]:
    """Units of a device's fields, where its profile gives them."""
    return _units(spec, site)


def _units(spec: DeviceSpec, site: Site) -> dict[str, str]:
    """Units of a Modbus device's fields, from its profile (cached per profile)."""
    profile_name = getattr(spec.config, "profile", None)
    if not spec.points or profile_name is None:
        return {}
    key = (str(site.path.resolve().parent), profile_name)
    if key not in _UNITS:
        try:
            profile: ModbusProfile = load_profile(profile_name, site.path.resolve().parent,
                                                  ModbusProfile)
        except (ConfigError, OSError):  # checked when the config loaded; no unit is no harm
            profile = None  # type: ignore[assignment]
        fields = [] if profile is None else [*profile.fields, *(profile.channels.fields
                                                                if profile.channels else [])]
        _UNITS[key] = {f.name: f.unit for f in fields if f.unit}
    return _UNITS[key]


class SiteDisplay:
    """What the console shows besides alarms and devices, for the site as it is now
    (a reload's new site is seen at once): its title, which alarm values are worth
    showing and with what unit, and each device's field units."""

    def __init__(self, site: Callable[[], Site]):
        self._site = site

    def title(self) -> dict[str, Any]:
        return site_title(self._site())

    def values(self) -> dict[str, dict[str, Any]]:
        return rule_values(self._site())

    def units(self, spec: DeviceSpec) -> dict[str, str]:
        return field_units(self._site(), spec)
