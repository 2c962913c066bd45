"""Config reload (SIGHUP, ``systemctl reload``): apply what changed, or keep everything.

The file is checked whole first, exactly as at start. An invalid file changes
nothing: its problems are logged on one line and the gateway runs on with the
config it has. A valid file is compared with the running one:

- devices: unchanged ones keep running untouched (same task, driver, counters);
  changed ones (their config, their resolved profile or their bus changed) are
  restarted; removed ones stop; new ones start. A restarted device keeps its
  health record, so its offline alarm clears when it answers again;
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
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.config.loader import DeviceSpec, Site, load_config
from gateway.config.models import GatewayConfig
from gateway.config.secrets import find_secrets
from gateway.errors import ConfigError
from gateway.operations.liveness import status_line
from gateway.rules.engine import RuleEngine
from gateway.upstream.line_protocol import LineEncoder

if TYPE_CHECKING:
    from gateway.runtime.app import Gateway

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


async def reload_config(gateway: Gateway) -> bool:
    """Re-read the gateway's config file and apply it; False (logged) if it was refused."""
    async with gateway.reload_lock:
        try:
            applied = await _reload(gateway)
        except Exception:  # runs in the gateway's TaskGroup: a bug here must not stop it
            gateway.reloads["failed"] += 1
            log.exception("reload of %s failed part way; restart the gateway to apply the "
                          "config cleanly", gateway.site.path)
            applied = False
        finally:
            if gateway.notifier is not None:
                gateway.notifier.ready(status_line(gateway))
    return applied


async def _reload(gateway: Gateway) -> bool:
    path = gateway.site.path
    try:
        new = await asyncio.to_thread(load_config, path)
        _check_secrets(new)
    except ConfigError as exc:
        gateway.reloads["refused"] += 1
        problems = "; ".join(f"{key or '<top>'}: {msg}" for key, msg in exc.problems)
        log.error("reload of %s refused, still running the previous config: %s", exc.file,
                  problems)
        return False
    plan = plan_reload(gateway.site, new)
    for section in plan.needs_restart:
        log.warning("reload: '%s' changed; restart the gateway to apply it "
                    "(systemctl restart community-gateway)", section)
    for warning in new.warnings:
        log.warning("config: %s", warning)
    await apply_plan(gateway, new, plan)
    gateway.reloads["applied"] += 1
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


async def apply_plan(gateway: Gateway, new: Site, plan: ReloadPlan) -> None:
    """Stop, swap and start what the plan says; the rest keeps running."""
    old = gateway.site
    carried = {}
    for device in plan.removed + plan.restarted:
        runner = await gateway.stop_device(device)
        if runner is not None:
            carried[device] = runner.health
    for bus_id in plan.buses_closed:
        bus = gateway.buses.pop(bus_id, None)
        if bus is not None:
            await bus.close()

    # Sections that need a restart keep their running values, so what the gateway
    # reports (its site) is what it runs.
    kept = {name: getattr(old.config, name) for name in plan.needs_restart}
    config = new.config.model_copy(update=kept) if kept else new.config
    gateway.site = Site(path=new.path, config=config, devices=new.devices, warnings=new.warnings)
    from gateway.runtime.app import _make_bus  # the one place buses are built (app imports this module)

    for bus in config.buses:
        if bus.id not in gateway.buses:
            gateway.buses[bus.id] = _make_bus(bus)

    pipeline = gateway.pipeline
    if plan.rules_changed:
        _swap_rules(gateway, new, plan)
    # Readings of a removed device may still be queued: keep its spec for the encoder.
    gone = {d: old.devices[d] for d in plan.removed}
    encoder = LineEncoder(config.site.id, {**gone, **new.devices})
    encoder.skipped_values = pipeline.encoder.skipped_values
    pipeline.encoder = encoder
    for key in [k for k in pipeline.latest if k[0] in plan.removed]:
        del pipeline.latest[key]

    for device in plan.added + plan.restarted:
        try:
            runner = gateway.start_device(device)
        except Exception:  # checked above; whatever is left must not stop the gateway
            log.exception("reload: device %s could not be started", device)
            continue
        if device in carried:
            runner.health = carried[device]


def _swap_rules(gateway: Gateway, new: Site, plan: ReloadPlan) -> None:
    engine = RuleEngine(list(new.config.rules), new.devices, clock=gateway.clock)
    gateway.pipeline.rules = engine
    gateway.pipeline.devices = new.devices
    now = gateway.clock.time()
    rule_ids = {r.id for r in new.config.rules}
    removed_rules = set(plan.rules_removed)
    removed_devices = set(plan.removed)
    for alarm in gateway.alarms.open_alarms():
        if alarm.device in removed_devices or alarm.rule in removed_rules:
            gateway.alarms.deactivate(rule=alarm.rule, device=alarm.device, channel=alarm.channel,
                                      value=None, ts=now)
        elif alarm.state == "active" and alarm.rule in rule_ids:
            engine.restore_active(alarm.rule, alarm.device, alarm.channel)
