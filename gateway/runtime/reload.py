"""Config reload (SIGHUP, ``systemctl reload``): apply what changed, or keep everything.

The file is checked whole first, exactly as at start. An invalid file changes
nothing: its problems are logged on one line and the gateway runs on with the
config it has. A valid file is compared with the running one:

- devices: unchanged ones keep running untouched (same task, driver, counters);
  changed ones (their config, their resolved profile or their bus changed) are
  restarted; removed ones stop; new ones start. A restarted device keeps its
  health record, so its offline alarm clears when it answers again. An alarm panel
  whose ``listen`` changed attaches to the receiver of its new address; a receiver
  no panel uses any more has closed its socket and is dropped;
- buses: a changed or removed bus is closed once its devices have stopped;
- rules: the engine is rebuilt, so rule state starts afresh (a pending on-delay
  begins again); open alarms whose condition held are handed to the new engine
  (``restore_active``) so they clear on the next normal reading;
- alarms of removed devices and of removed rules are cleared: nothing can hold
  them any more (a latched alarm stays until it is reset);
- every other section (site, mqtt, influxdb, pipeline, http, ...) needs a
  restart: a change there is logged as a warning and not applied.

The pipeline, sinks and the MQTT link keep running throughout.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from gateway.config.loader import DeviceSpec, Site
from gateway.config.models import GatewayConfig
from gateway.config.secrets import find_secrets
from gateway.errors import ConfigError
from gateway.runtime.site import load_site

if TYPE_CHECKING:
    from gateway.alarms.manager import AlarmManager
    from gateway.rules.engine import RuleEngine

log = logging.getLogger(__name__)

# Sections applied by a reload; a change anywhere else waits for a restart.
RELOADABLE = frozenset({"buses", "devices", "rules"})


@dataclass
class ReloadPlan:
    """What a new config changes in the running gateway."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    buses_closed: list[str] = field(default_factory=list)
    rules_removed: list[str] = field(default_factory=list)
    rules_changed: bool = False
    needs_restart: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Nothing to apply."""
        return not (self.added or self.removed or self.restarted or self.buses_closed
                    or self.rules_changed)

    def summary(self) -> str:
        """One log line's worth."""
        parts = [f"{name} {', '.join(ids)}" for name, ids in (
            ("added", self.added), ("restarted", self.restarted), ("removed", self.removed))
            if ids]
        if self.rules_changed:
            parts.append("rules rebuilt")
        return "; ".join(parts) or "no device or rule changed"


class Reloadable(Protocol):
    """What a reload works on: the running config, and a way to apply a plan (the
    gateway's ``apply_reload`` changes its own parts)."""

    site: Site
    reload_lock: asyncio.Lock  # one reload at a time
    reloads: collections.Counter[str]  # applied, refused, failed

    async def apply_reload(self, site: Site, plan: ReloadPlan) -> None: ...

    def reload_finished(self) -> None: ...


async def reload_config(target: Reloadable) -> bool:
    """Re-read the running config's file and apply it; False (logged) if it was refused."""
    async with target.reload_lock:
        try:
            applied = await _reload(target)
        except Exception:  # runs in the gateway's TaskGroup: a bug here must not stop it
            target.reloads["failed"] += 1
            log.exception("reload of %s failed part way; restart the gateway to apply the "
                          "config cleanly", target.site.path)
            applied = False
        finally:
            target.reload_finished()
    return applied


async def _reload(target: Reloadable) -> bool:
    path = target.site.path
    try:
        new = await asyncio.to_thread(load_site, path)
        _check_secrets(new)
    except ConfigError as exc:
        target.reloads["refused"] += 1
        problems = "; ".join(f"{key or '<top>'}: {msg}" for key, msg in exc.problems)
        log.error("reload of %s refused, still running the previous config: %s", exc.file,
                  problems)
        return False
    plan = plan_reload(target.site, new)
    for section in plan.needs_restart:
        log.warning("reload: '%s' changed; restart the gateway to apply it "
                    "(systemctl restart community-gateway)", section)
    for warning in new.warnings:
        log.warning("config: %s", warning)
    await target.apply_reload(site_to_run(target.site, new, plan), plan)
    target.reloads["applied"] += 1
    log.info("reload of %s applied: %s", path, plan.summary())
    return True


def _check_secrets(site: Site) -> None:
    """Every secret of the new file can be read, or the reload is refused (as a start would be)."""
    problems = []
    for key, secret in find_secrets(site.config):
        try:
            secret.reveal()
        except ValueError as exc:
            problems.append((key, str(exc)))
    if problems:
        raise ConfigError(str(site.path), problems)


def plan_reload(old: Site, new: Site) -> ReloadPlan:
    """Compare two checked configs: which devices start, stop or restart."""
    plan = ReloadPlan()
    for name in GatewayConfig.model_fields:
        if name not in RELOADABLE and getattr(old.config, name) != getattr(new.config, name):
            plan.needs_restart.append(name)
    old_buses = {b.id: b for b in old.config.buses}
    new_buses = {b.id: b for b in new.config.buses}
    changed_buses = {b for b in old_buses if new_buses.get(b) != old_buses[b]}
    plan.buses_closed = sorted(changed_buses)
    plan.removed = sorted(old.devices.keys() - new.devices.keys())
    plan.added = sorted(new.devices.keys() - old.devices.keys())
    plan.restarted = sorted(
        d for d in old.devices.keys() & new.devices.keys()
        if old.devices[d] != new.devices[d] or _bus_of(old.devices[d]) in changed_buses)
    old_rules = {r.id: r for r in old.config.rules}
    new_rules = {r.id: r for r in new.config.rules}
    plan.rules_removed = sorted(old_rules.keys() - new_rules.keys())
    plan.rules_changed = (old_rules != new_rules or bool(plan.added or plan.removed
                                                           or plan.restarted))
    return plan


def _bus_of(spec: DeviceSpec) -> str | None:
    return getattr(spec.config, "bus", None)


def site_to_run(old: Site, new: Site, plan: ReloadPlan) -> Site:
    """The new site, except that sections needing a restart keep their running values,
    so what the gateway reports (its site) is what it runs."""
    kept = {name: getattr(old.config, name) for name in plan.needs_restart}
    config = new.config.model_copy(update=kept) if kept else new.config
    return Site(path=new.path, config=config, devices=new.devices, warnings=new.warnings)


def hand_over_alarms(alarms: AlarmManager, engine: RuleEngine, site: Site, plan: ReloadPlan,
                     now: float) -> None:
    """Clear the open alarms nothing can hold any more (their device or rule is gone);
    tell the new rule engine which of the others are active, so they clear on the
    next normal reading."""
    rule_ids = {r.id for r in site.config.rules}
    removed_rules = set(plan.rules_removed)
    removed_devices = set(plan.removed)
    for alarm in alarms.open_alarms():
        if alarm.device in removed_devices or alarm.rule in removed_rules:
            alarms.deactivate(rule=alarm.rule, device=alarm.device, channel=alarm.channel,
                              value=None, ts=now)
        elif alarm.state == "active" and alarm.rule in rule_ids:
            engine.restore_active(alarm.rule, alarm.device, alarm.channel)
