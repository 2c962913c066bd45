"""Load a site config file and check it whole: types, references, meaning.

Every problem found is reported at once, each with the key path and what was
expected, so an installer fixes a file in one pass. Nothing starts from a file
with any problem.

This module knows the config's own shape only. What a device type means (its
profile, what its driver can read and set) is checked by that type's spec
builder, handed in by the caller: the config layer imports no driver. The
builders for the gateway's device types and the one-call ``load_site`` are in
``gateway.runtime.device_types`` and ``gateway.runtime.site``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from gateway.config.advice import advice
from gateway.config.devices import ModbusDevice
from gateway.config.fire_centre import check_fire_centre
from gateway.device_faults import FaultSource
from gateway.config.models import GatewayConfig
from gateway.config.rule_checks import check_rule
from gateway.config.suggest import did_you_mean, known_keys
from gateway.config.yaml_file import read_yaml
from gateway.errors import ConfigError


@dataclass(frozen=True)
class DeviceSpec:
    """A device with its profile resolved: what it reads and what can be written."""

    config: Any  # one of gateway.config.devices' device models
    kind: str
    channel_name: str
    channel_count: int
    fields: frozenset[str]
    writable: frozenset[str]
    # Modbus only: drivers.modbus.register_map's Points and RequestLimits (typed
    # loosely: the config layer does not import drivers).
    points: tuple[Any, ...] = ()
    limits: Any = None
    # Event names the device can emit (DeviceEvent.name); None: its type does not
    # declare them, so rules naming events on it are not checked against a list.
    events: frozenset[str] | None = None
    # Where each channel is, when it has its own place (a panel's zones): merged
    # over the device's location in the channel's alarms.
    channel_places: dict[int, dict[str, str]] = field(default_factory=dict)
    # Where the device reports its own faults (gateway.device_faults); device_fault alarms.
    faults: tuple[FaultSource, ...] = ()
    # Modbus only: data bytes in the answer to each read request of one poll
    # (for the bus-load advice).
    read_sizes: tuple[int, ...] = ()

    @property
    def id(self) -> str:
        return self.config.id

    def location(self) -> dict[str, str]:
        """Building, unit, floor, room: the parts that are set."""
        return self.config.location.as_dict()


@dataclass
class Site:
    """A checked config: the file's model plus every device resolved."""

    path: Path
    config: GatewayConfig
    devices: dict[str, DeviceSpec]
    warnings: list[str] = field(default_factory=list)
    # Valid, but the gateway will not start like this (a users file that cannot be read).
    blockers: list[str] = field(default_factory=list)


def load_config(path: str | Path, spec_builders: Mapping[type, SpecBuilder]) -> Site:
    """Read, validate and resolve a site config, each device by its type's entry in
    ``spec_builders``; raise ConfigError listing every problem."""
    path = Path(path)
    config = read_config(path)
    problems: list[tuple[str, str]] = []
    devices = _resolve_devices(path, config, spec_builders, problems)
    # Devices whose profile could not be read: rules about them are not checked, since
    # every problem found there would follow from the one already reported.
    unresolved = {d.id for d in config.devices} - set(devices)
    _check_references(config, devices, problems, unresolved)
    if problems:
        raise ConfigError(str(path), problems)
    return Site(path=path, config=config, devices=devices, warnings=_warnings(config, devices))


def read_config(path: str | Path) -> GatewayConfig:
    """Read a site file and check its types and keys, without resolving devices (for
    commands that need one section only: the users file, the outbox)."""
    path = Path(path)
    raw = read_yaml(path)
    try:
        return GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(str(path), pydantic_problems(exc, raw, GatewayConfig)) from None


def pydantic_problems(exc: ValidationError, raw: Any,
                      model: type[BaseModel] | None = None) -> list[tuple[str, str]]:
    """Turn pydantic's errors into (key path, what was expected) pairs; with the
    validated ``model``, an unknown key names the nearest allowed one."""
    problems = []
    for err in exc.errors():
        path = _key_path(err["loc"], raw)
        kind = err["type"]
        if kind == "extra_forbidden":
            key = str(err["loc"][-1])
            msg = "unknown key" + (did_you_mean(key, known_keys(model, err["loc"]))
                                   if model is not None else "")
        elif kind == "missing":
            msg = "required key is missing"
        elif kind == "union_tag_invalid":
            tag = str(err['ctx'].get('tag', err['input']))
            expected = [t.strip(" '") for t in str(err['ctx']['expected_tags']).split(",")]
            msg = (f"unknown type {tag!r}{did_you_mean(tag, expected)}; "
                   f"expected one of {err['ctx']['expected_tags']}")
        elif kind == "union_tag_not_found":
            msg = f"missing 'type'; expected one of {err['ctx'].get('discriminator', '')}"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if kind not in ("value_error", "assertion_error") and "input" in err \
                    and not _holds_secret(err):
                msg += f" (got {err['input']!r})"
        problems.append((path, msg))
    return _without_follow_ons(problems)


def _without_follow_ons(problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A misspelt key also makes the key it meant "missing": report the typo only."""
    meant = {path.rpartition(".")[0] + "." + msg.split("did you mean '")[1].split("'")[0]
             for path, msg in problems if "did you mean '" in msg and msg.startswith("unknown key")}
    return [(path, msg) for path, msg in problems
            if not (msg == "required key is missing" and path in meant)]


_SECRET_KEY = re.compile(r"password|passwd|token|secret|key", re.IGNORECASE)


def _holds_secret(err: Any) -> bool:
    """Whether a validation error's input may be a secret written inline (never echo it)."""
    keys = [item for item in err["loc"] if isinstance(item, str)]
    return (any(_SECRET_KEY.search(k) for k in keys)
            or (err.get("ctx") or {}).get("class_name") == "Secret")


# Pydantic names the member of a plain union it tried: 'str', 'LocalizedText',
# 'function-after[...]', 'list[str]'; config keys are lower-case words.
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|none|[A-Z]\w*|.*\[.*\])$")


def _key_path(loc: tuple, raw: Any) -> str:
    """``('devices', 2, 'modbus', 'bus')`` -> ``devices[2].bus``; drops union tags."""
    parts: list[str] = []
    node = raw
    after_index = False
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
            node = node[item] if isinstance(node, list) and item < len(node) else None
            after_index = True
            continue
        was_index, after_index = after_index, False
        if (isinstance(node, dict) and node.get("type") == item
                and (item not in node or was_index)):
            continue  # the discriminator's value pydantic inserts into the path
        if isinstance(node, dict) and item not in node and _UNION_MEMBER.match(str(item)):
            continue  # which member of a plain union (str | Model) was tried
        else:
            parts.append(("." if parts else "") + str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts)


def _resolve_devices(path: Path, config: GatewayConfig, spec_builders: Mapping[type, SpecBuilder],
                     problems: list[tuple[str, str]]) -> dict[str, DeviceSpec]:
    devices: dict[str, DeviceSpec] = {}
    bus_ids = _unique_ids("buses", [b.id for b in config.buses], problems)
    _unique_ids("devices", [d.id for d in config.devices], problems)
    _unique_ids("rules", [r.id for r in config.rules], problems)
    context = ResolveContext(config_dir=path.parent, bus_ids=bus_ids, problems=problems,
                             config=config)
    for i, dev in enumerate(config.devices):
        spec = spec_builders[type(dev)](dev, f"devices[{i}]", context)
        if spec is not None:
            devices.setdefault(dev.id, spec)
    return devices


@dataclass
class ResolveContext:
    """What a device type's spec builder may need besides its own config."""

    config_dir: Path
    bus_ids: set[str]
    problems: list[tuple[str, str]]
    config: GatewayConfig | None = None


def profile_problems(exc: ConfigError, where: str) -> list[tuple[str, str]]:
    """A profile's own problems, reported under the device's ``profile`` key."""
    if [p for p, m in exc.problems] == [""] and exc.problems[0][1].startswith("no profile "):
        return [(f"{where}.profile", exc.problems[0][1])]  # not found: the message names it
    return [(f"{where}.profile", f"{exc.file}: {p + ': ' if p else ''}{m}") for p, m in exc.problems]


def _unique_ids(section: str, ids: list[str], problems: list[tuple[str, str]]) -> set[str]:
    seen: set[str] = set()
    for i, ident in enumerate(ids):
        if ident in seen:
            problems.append((f"{section}[{i}].id", f"duplicate id {ident!r}"))
        seen.add(ident)
    return seen


def load_profile(name: str, config_dir: Path, model: type[BaseModel]) -> Any:
    """Find a profile by name (``<config dir>/profiles/<name>.yaml``, then the
    profiles shipped with the gateway) or by path, and validate it as ``model``."""
    candidates = [config_dir / name] if name.endswith((".yaml", ".yml")) else [
        config_dir / "profiles" / f"{name}.yaml",
        Path(str(resources.files("configs") / "profiles" / f"{name}.yaml")),
    ]
    for candidate in candidates:
        if candidate.is_file():
            raw = read_yaml(candidate)
            try:
                return model.model_validate(raw)
            except ValidationError as exc:
                raise ConfigError(str(candidate), pydantic_problems(exc, raw, model)) from None
    known = profile_names(config_dir)
    raise ConfigError(name, [("", f"no profile {name!r}{did_you_mean(name, known)}; "
                                  f"profiles: {known}; looked in "
                                  + ", ".join(map(str, candidates)))])


def profile_names(config_dir: Path) -> list[str]:
    """Profiles a site in ``config_dir`` can name: its own ``profiles/`` and the shipped ones."""
    folders = [config_dir / "profiles", Path(str(resources.files("configs") / "profiles"))]
    return sorted({p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.yaml")})


def _check_references(config: GatewayConfig, devices: dict[str, DeviceSpec],
                      problems: list[tuple[str, str]], unresolved: set[str] = frozenset()) -> None:
    kinds = {d.kind for d in devices.values()}
    groups = _unique_ids("arming", [g.id for g in config.arming], problems)
    for i, rule in enumerate(config.rules):
        if rule.armed_by is not None and rule.armed_by not in groups:
            problems.append((f"rules[{i}].armed_by", f"no arming group {rule.armed_by!r}; "
                                                      f"groups: {sorted(groups)}"))
    for i, dev in enumerate(config.devices):
        if dev.upstream == "pseudonymised" and config.privacy is None:
            problems.append((f"devices[{i}].upstream", "'pseudonymised' needs a 'privacy' section "
                                                       "with the key: privacy: {key: {env: NAME}}"))
    broken = [d for d in config.devices if d.id in unresolved]  # kind and fields unknown
    for i, rule in enumerate(config.rules):
        where = f"rules[{i}]"
        named = _strings(rule.model_dump())
        if any(d.id in named for d in broken):
            continue  # about a device already reported as broken: its problems follow from that
        before = len(problems)
        for j, dev in enumerate(rule.select.devices):
            if dev not in devices:
                problems.append((f"{where}.select.devices[{j}]", f"no device with id {dev!r}"
                                                                 f"{did_you_mean(dev, devices)}"))
        for j, kind in enumerate(rule.select.kinds):
            if kind not in kinds:
                problems.append((f"{where}.select.kinds[{j}]",
                                 f"no device of kind {kind!r}{did_you_mean(kind, kinds)}; "
                                 f"kinds: {sorted(kinds)}"))
        selected = [d for d in devices.values() if selects(rule, d)]
        if (len(problems) > before or not selected) and any(_may_select(rule, d) for d in broken):
            del problems[before:]  # the broken device may be the one it means
            continue
        if not selected:
            if len(problems) == before:  # else a misnamed device or kind says why
                problems.append((f"{where}.select", "selects no device"))
            continue
        check_rule(rule, where, selected, devices, problems)
    problems.extend(check_fire_centre(config, devices))


def _may_select(rule: Any, dev: Any) -> bool:
    """Whether a rule's selector may match a device whose kind is not known."""
    sel, loc = rule.select, dev.location
    kind = getattr(dev, "kind", None)
    return ((not sel.kinds or kind is None or kind in sel.kinds)
            and (not sel.devices or dev.id in sel.devices)
            and (not sel.buildings or loc.building in sel.buildings)
            and (not sel.units or loc.unit in sel.units))


def _strings(value: Any) -> set[str]:
    """Every string value inside a dumped model."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return set().union(*(_strings(v) for v in value)) if value else set()
    return set()


def selects(rule: BaseModel, device: DeviceSpec) -> bool:
    """Whether a rule's selector matches a device."""
    sel = rule.select  # type: ignore[attr-defined]
    loc = device.config.location
    return ((not sel.kinds or device.kind in sel.kinds)
            and (not sel.devices or device.id in sel.devices)
            and (not sel.buildings or loc.building in sel.buildings)
            and (not sel.units or loc.unit in sel.units))


def _warnings(config: GatewayConfig, devices: dict[str, DeviceSpec]) -> list[str]:
    """Settings that are legal but probably wrong."""
    out = []
    if config.mqtt is None:
        out.append("no 'mqtt' section: alarms go to the log only")
    if config.influxdb is None and config.local_series is None:
        out.append("no 'influxdb' or 'local_series' section: readings are not kept")
    buses = {b.id: b for b in config.buses}
    for spec in devices.values():
        dev = spec.config
        if isinstance(dev, ModbusDevice) and dev.bus in buses:
            bus = buses[dev.bus]
            if bus.timeout * (bus.retries + 1) >= dev.poll_interval:
                out.append(f"device {dev.id}: bus timeout {bus.timeout}s x {bus.retries + 1} tries "
                           f"is not shorter than its poll interval {dev.poll_interval}s")
    out.extend(advice(config, devices))  # bus load at the baud rate, exposure of secrets/APIs
    return out


# How a device type's config becomes a DeviceSpec: (device config, its key path,
# context) -> the spec, or None after recording its problems in the context.
SpecBuilder = Callable[[Any, str, ResolveContext], "DeviceSpec | None"]
