"""Meaning checks of alarm rules against the resolved devices, one function per rule kind.

Each names the key path of what is wrong: a field no selected device reads, an
event no selected device emits, a device that does not exist, a write to a field
that cannot be written. Devices whose type does not declare its events
(``DeviceSpec.events is None``) accept any event name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from gateway.config.suggest import did_you_mean
from gateway.config.rules import (AbsenceRule, ConfirmRule, CountRule, EventRule, ForcedRule,
                                  HeldRule, RateRule, ThresholdRule)

if TYPE_CHECKING:
    from gateway.config.loader import DeviceSpec

Problems = list[tuple[str, str]]


def check_rule(rule: Any, where: str, selected: list[DeviceSpec],
               devices: dict[str, DeviceSpec], problems: Problems) -> None:
    """Check one rule whose selector matched ``selected`` (not empty)."""
    targets = RULE_CHECKS[type(rule)](rule, where, selected, devices, problems)
    _check_actions(rule, where, targets, devices, problems)


def with_field(selected: Iterable[DeviceSpec], field: str) -> list[DeviceSpec]:
    """The devices that read ``field``."""
    return [d for d in selected if field in d.fields]


def emitting(selected: Iterable[DeviceSpec], names: Iterable[str]) -> list[DeviceSpec]:
    """The devices that may emit one of ``names`` (undeclared devices may emit anything)."""
    wanted = set(names)
    return [d for d in selected if d.events is None or d.events & wanted]


def _need_field(field: str, key: str, selected: list[DeviceSpec],
                problems: Problems) -> list[DeviceSpec]:
    found = with_field(selected, field)
    if not found:
        known = sorted(set().union(*(d.fields for d in selected)))
        problems.append((key, f"no selected device has field {field!r}"
                              f"{did_you_mean(field, known)}; fields: {known}"))
    return found


def _need_events(names: list[str], key: str, selected: list[DeviceSpec],
                 problems: Problems) -> list[DeviceSpec]:
    """Every name must be emitted by some selected device (when they declare events)."""
    if any(d.events is None for d in selected):
        return emitting(selected, names)
    known = set().union(*(d.events or () for d in selected))
    for j, name in enumerate(names):
        if name not in known:
            problems.append((f"{key}[{j}]" if len(names) > 1 else key,
                             f"no selected device emits event {name!r}"
                             f"{did_you_mean(name, known)}; events: {sorted(known)}"))
    return emitting(selected, names)


def _field_rule(rule: ThresholdRule | HeldRule | RateRule, where: str, selected: list[DeviceSpec],
                devices: dict[str, DeviceSpec], problems: Problems) -> list[DeviceSpec]:
    return _need_field(rule.field, f"{where}.field", selected, problems)


def _event_rule(rule: EventRule, where: str, selected: list[DeviceSpec],
                devices: dict[str, DeviceSpec], problems: Problems) -> list[DeviceSpec]:
    if rule.field is not None:
        return _need_field(rule.field, f"{where}.field", selected, problems)
    assert rule.event is not None
    found = _need_events(rule.event, f"{where}.event", selected, problems)
    if rule.clear_on:
        _need_events(rule.clear_on, f"{where}.clear_on", selected, problems)
    return found


def _count_rule(rule: CountRule, where: str, selected: list[DeviceSpec],
                devices: dict[str, DeviceSpec], problems: Problems) -> list[DeviceSpec]:
    found = _need_events(rule.event, f"{where}.event", selected, problems)
    if rule.reset_on:
        _need_events(rule.reset_on, f"{where}.reset_on", selected, problems)
    return found


def _absence_rule(rule: AbsenceRule, where: str, selected: list[DeviceSpec],
                  devices: dict[str, DeviceSpec], problems: Problems) -> list[DeviceSpec]:
    return selected


def _confirm_rule(rule: ConfirmRule, where: str, selected: list[DeviceSpec],
                  devices: dict[str, DeviceSpec], problems: Problems) -> list[DeviceSpec]:
    first = rule.first
    if first.field is not None:
        found = _need_field(first.field, f"{where}.first.field", selected, problems)
    else:
        found = _need_events(first.event or [], f"{where}.first.event", selected, problems)
    then = _need_field(rule.then.field, f"{where}.then.field", selected, problems)
    both = [d for d in found if d in then]
    if found and then and not both:
        problems.append((f"{where}.then.field", f"no selected device has both the first sign and "
                                                f"field {rule.then.field!r}"))
    return both


def _forced_rule(rule: ForcedRule, where: str, selected: list[DeviceSpec],
                 devices: dict[str, DeviceSpec], problems: Problems) -> list[DeviceSpec]:
    doors = _need_field(rule.field, f"{where}.field", selected, problems)
    granters = list(doors)
    for j, dev in enumerate(rule.grants_from):
        if dev not in devices:
            problems.append((f"{where}.grants_from[{j}]", f"no device with id {dev!r}"
                                                          f"{did_you_mean(dev, devices)}"))
        else:
            granters.append(devices[dev])
    if granters:
        _need_events(rule.unless_events, f"{where}.unless_events", granters, problems)
    return doors


def _check_actions(rule: Any, where: str, targets: list[DeviceSpec],
                   devices: dict[str, DeviceSpec], problems: Problems) -> None:
    for k, action in enumerate(rule.actions):
        if action.device is not None and action.device not in devices:
            problems.append((f"{where}.actions[{k}].device", f"no device with id {action.device!r}"
                                                             f"{did_you_mean(action.device, devices)}"))
            continue
        if action.targets is not None:
            on = [d for d in devices.values() if targeted(action.targets, d)]
            if not on:
                problems.append((f"{where}.actions[{k}].targets", "selects no device"))
                continue
        else:
            on = [devices[action.device]] if action.device is not None else targets
        for target in on:
            if action.write not in target.writable:
                problems.append((f"{where}.actions[{k}].write",
                                 f"device {target.id!r} has no writable field {action.write!r}"
                                 f"{did_you_mean(action.write, target.writable)}; "
                                 f"writable: {sorted(target.writable)}"))
                break


def targeted(targets: Any, device: DeviceSpec, source: DeviceSpec | None = None) -> bool:
    """Whether an action's ``targets`` take ``device`` (for an alarm of ``source``;
    without one, the ``same`` parts are not compared: any place may match)."""
    loc = device.config.location
    if not ((not targets.kinds or device.kind in targets.kinds)
            and (not targets.devices or device.id in targets.devices)
            and (not targets.buildings or loc.building in targets.buildings)
            and (not targets.units or loc.unit in targets.units)):
        return False
    if source is None:
        return True
    here = source.config.location
    return all(getattr(loc, part) is not None and getattr(loc, part) == getattr(here, part)
               for part in targets.same)


# One entry per rule config type: check it, return the devices its actions act on.
RULE_CHECKS: dict[type, Callable[..., list[DeviceSpec]]] = {
    ThresholdRule: _field_rule,
    HeldRule: _field_rule,
    RateRule: _field_rule,
    EventRule: _event_rule,
    CountRule: _count_rule,
    AbsenceRule: _absence_rule,
    ConfirmRule: _confirm_rule,
    ForcedRule: _forced_rule,
}
