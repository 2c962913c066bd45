"""One entry per device type: how its config is checked against its driver's profile
(a spec builder, for the config loader) and how its driver is built (for the gateway).

This is the one module that knows both sides: ``gateway.config`` describes a
device's config without importing any driver, and ``drivers/`` speak their
protocol without importing the gateway. A new device type adds its config model
in ``gateway.config.devices``, its driver under ``drivers/`` and one entry in
``DEVICE_TYPES`` here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from drivers.modbus.bus import ModbusBus
from drivers.modbus.device import ModbusDevice
from drivers.modbus.register_map import ModbusProfile, expand, overlaps
from drivers.modbus.request_plan import answer_data_bytes
from gateway.clock import Clock
from gateway.config import devices as cfg
from gateway.config.suggest import did_you_mean
from gateway.config.loader import (DeviceSpec, ResolveContext, Site, SpecBuilder, load_profile,
                                   profile_problems)
from gateway.device_faults import FaultSource
from gateway.errors import ConfigError

if TYPE_CHECKING:
    from drivers.mqtt.device import MqttDeviceSource
    from drivers.serial_frames.driver import SerialFrameDevice
    from drivers.synthetic import SyntheticDevice

# The drivers of the other device types (MQTT devices with paho and their profile
# models, serial radars with pyserial, alarm panels) are imported by their own
# functions below, when a site has such a device: a Pi's memory (issue 16) holds
# only the drivers its site uses.


@dataclass(frozen=True)
class DriverContext:
    """What building a driver may need besides the device's spec."""

    site: Site  # the checked config (site id, mqtt, privacy) and the file's folder
    buses: Mapping[str, ModbusBus]
    clock: Clock
    # SIA DC-09 receivers by listen address, shared by the alarm panels on each
    receivers: dict[str, Any] = field(default_factory=dict)


DriverFactory = Callable[[DeviceSpec, DriverContext], Any]


@dataclass(frozen=True)
class DeviceType:
    """A device config type's two halves: check it, build its driver."""

    resolve: SpecBuilder
    build: DriverFactory


def build_driver(spec: DeviceSpec, ctx: DriverContext) -> Any:
    """The driver of a resolved device; ConfigError when a secret it needs cannot be read."""
    return DEVICE_TYPES[type(spec.config)].build(spec, ctx)


def build_bus(bus: cfg.ModbusTcpBus | cfg.ModbusRtuBus) -> ModbusBus:
    """The shared connection (one lock, one frame gap) of a configured Modbus line."""
    if isinstance(bus, cfg.ModbusTcpBus):
        return ModbusBus.tcp(name=bus.id, host=bus.host, port=bus.port, timeout=bus.timeout,
                             retries=bus.retries, frame_gap=bus.frame_gap)
    return ModbusBus.rtu(name=bus.id, port=bus.port, baudrate=bus.baudrate, parity=bus.parity,
                         stopbits=bus.stopbits, bytesize=bus.bytesize, timeout=bus.timeout,
                         retries=bus.retries, frame_gap=bus.gap_seconds)


# -- synthetic ------------------------------------------------------------------------


def _synthetic_spec(dev: cfg.SyntheticDevice, where: str, ctx: ResolveContext) -> DeviceSpec:
    return DeviceSpec(dev, dev.kind, "channel", dev.channels or 0, frozenset(dev.fields), frozenset(),
                      events=None if dev.events is None else frozenset(dev.events))


def _synthetic_driver(spec: DeviceSpec, ctx: DriverContext) -> SyntheticDevice:
    from drivers.synthetic import SyntheticDevice

    dev = spec.config
    return SyntheticDevice(device_id=dev.id, fields=dev.fields, channels=dev.channels,
                           clock=ctx.clock)


# -- Modbus ---------------------------------------------------------------------------


def _modbus_device_spec(dev: cfg.ModbusDevice, where: str, ctx: ResolveContext) -> DeviceSpec | None:
    if dev.bus not in ctx.bus_ids:
        ctx.problems.append((f"{where}.bus", f"no bus with id {dev.bus!r}"
                                             f"{did_you_mean(dev.bus, ctx.bus_ids)}; "
                                             f"buses: {sorted(ctx.bus_ids)}"))
    try:
        profile = load_profile(dev.profile, ctx.config_dir, ModbusProfile)
    except ConfigError as exc:
        ctx.problems.extend(profile_problems(exc, where))
        return None
    return _modbus_spec(dev, profile, where, ctx.problems)


def _modbus_spec(dev: cfg.ModbusDevice, profile: ModbusProfile, where: str,
                 problems: list[tuple[str, str]]) -> DeviceSpec:
    if dev.channels is not None and profile.channels is None:
        problems.append((f"{where}.channels", f"profile {dev.profile!r} has no channels"))
    points = expand(profile, dev.channels, dev.slave_base)
    for a, b in overlaps(points):
        problems.append((f"{where}.profile", f"fields {a.name!r} and {b.name!r} overlap at "
                                             f"slave {a.slave} {a.table} {b.address}"))
    for p in points:
        if not 1 <= p.slave <= 247:
            problems.append((f"{where}.slave_base", f"field {p.name!r} lands on slave {p.slave}, "
                                                    "outside 1..247"))
            break
    count = 0
    if profile.channels is not None:
        count = dev.channels if dev.channels is not None else profile.channels.count
    fields = frozenset(p.name for p in points)
    _check_faults(profile.faults, fields, None, f"{where}.profile", problems)
    _check_faults(dev.faults, fields, None, f"{where}.faults", problems)
    for zone in dev.zones:
        if not 1 <= zone <= count:
            problems.append((f"{where}.zones.{zone}", f"no channel {zone}; the device has "
                                                      f"channels 1..{count}"))
    return DeviceSpec(
        config=dev, kind=dev.kind or profile.kind,
        channel_name=profile.channels.name if profile.channels else "channel",
        channel_count=count,
        fields=fields,
        writable=frozenset(p.name for p in points if p.writable),
        points=tuple(points), limits=profile.requests,
        read_sizes=tuple(answer_data_bytes(points, profile.requests)),
        faults=tuple(profile.faults) + tuple(dev.faults),
        channel_places=_places(dev.zones),
    )


def _places(zones: Mapping[int, cfg.AlarmZone]) -> dict[int, dict[str, str]]:
    """Each zone's name and place, for its alarms' location."""
    return {zone: {"zone_name": z.name, **z.location.as_dict()} for zone, z in zones.items()}


def _check_faults(faults: tuple[FaultSource, ...] | list[FaultSource], fields: frozenset[str],
                  events: frozenset[str] | None, where: str,
                  problems: list[tuple[str, str]]) -> None:
    """Each fault source names a field (or event) the device really has."""
    for k, source in enumerate(faults):
        if source.field is not None and source.field not in fields:
            problems.append((where, f"faults[{k}].field: no field {source.field!r}; "
                                    f"fields: {sorted(fields)}"))
        for name in (source.event, source.clear_on):
            if name is not None and events is not None and name not in events:
                problems.append((where, f"faults[{k}]: no event {name!r}; "
                                        f"events: {sorted(events)}"))


def _modbus_driver(spec: DeviceSpec, ctx: DriverContext) -> ModbusDevice:
    dev = spec.config
    return ModbusDevice(device_id=dev.id, bus=ctx.buses[dev.bus], points=list(spec.points),
                        limits=spec.limits, clock=ctx.clock)


# -- serial frames (radars) -------------------------------------------------------------


def _serial_frames_spec(dev: cfg.SerialFramesDevice, where: str, ctx: ResolveContext) -> DeviceSpec:
    from drivers.serial_frames import settings as radar_settings, vocabulary as radar_vocabulary

    settable = radar_settings.SETTABLE[dev.codec]
    for name, value in dev.setup.values().items():
        limit = radar_settings.LIMITS.get((dev.codec, name))
        if name not in settable:
            ctx.problems.append((f"{where}.setup.{name}", f"a {dev.codec} radar cannot set "
                                                          f"{name}; it can set {sorted(settable)}"))
        elif limit is not None and value > limit:
            ctx.problems.append((f"{where}.setup.{name}", f"a {dev.codec} radar takes at most "
                                                          f"{limit:g} (got {value:g})"))
    kind = dev.kind or radar_vocabulary.KINDS[dev.codec]
    return DeviceSpec(dev, kind, "channel", 0, radar_vocabulary.FIELDS[dev.codec], frozenset(),
                      events=radar_vocabulary.EVENTS[dev.codec])


def _serial_frames_driver(spec: DeviceSpec, ctx: DriverContext) -> SerialFrameDevice:
    from drivers.serial_frames.driver import SerialFrameDevice

    dev = spec.config
    return SerialFrameDevice(device_id=dev.id, port=dev.port, protocol=dev.codec,
                             baudrate=dev.baudrate, quiet_gap=dev.quiet_gap,
                             command_timeout=dev.command_timeout, setup=dev.setup.values(),
                             clock=ctx.clock)


# -- MQTT -------------------------------------------------------------------------------


def _mqtt_device_spec(dev: cfg.MqttDevice, where: str, ctx: ResolveContext) -> DeviceSpec | None:
    from drivers.mqtt.profile import MqttProfile, check_device as check_mqtt_device

    try:
        profile = load_profile(dev.profile, ctx.config_dir, MqttProfile)
    except ConfigError as exc:
        ctx.problems.extend(profile_problems(exc, where))
        return None
    ctx.problems.extend((f"{where}.{key}", msg) for key, msg in check_mqtt_device(dev, profile, ctx.config))
    channels = profile.channels
    _check_faults(profile.faults, frozenset(profile.fields), profile.event_names,
                  f"{where}.profile", ctx.problems)
    return DeviceSpec(dev, dev.kind or profile.kind, channels.name if channels else "channel",
                      (dev.channels or channels.count) if channels else 0,
                      frozenset(profile.fields), frozenset(), events=profile.event_names,
                      faults=tuple(profile.faults))


def mqtt_client_id(site_id: str, device_id: str) -> str:
    """The fixed MQTT client id of a device's persistent session."""
    return f"gateway-{site_id}-{device_id}"


def _mqtt_driver(spec: DeviceSpec, ctx: DriverContext) -> MqttDeviceSource:
    from drivers.mqtt.device import MqttDeviceSource
    from drivers.mqtt.mapping import MessageMapping
    from drivers.mqtt.profile import MqttProfile
    from drivers.mqtt.pseudonym import Pseudonymiser, RawValueLog
    from gateway.mqtt_tls import tls_context

    dev = spec.config
    site = ctx.site
    config = site.config
    profile: MqttProfile = load_profile(dev.profile, site.path.parent, MqttProfile)
    pseudonymiser = None
    raw_log = None
    if profile.pseudonymise:
        privacy = config.privacy
        if privacy is None:  # the loader refuses this; kept for configs built in code
            raise ConfigError(str(site.path), [("privacy", "required to pseudonymise "
                                                           f"{profile.pseudonymise}")])
        if privacy.keep_raw and privacy.raw_file is not None:
            path = privacy.raw_file
            raw_log = RawValueLog(path if path.is_absolute() else site.path.parent / path)
        try:
            pseudonymiser = Pseudonymiser(key=privacy.key.reveal(), raw_log=raw_log)
        except ValueError as exc:
            raise ConfigError(str(site.path), [("privacy.key", str(exc))]) from None
    mapping = MessageMapping(profile=profile, device_id=dev.id, source=dev.wire_id,
                             pseudonymise=pseudonymiser, channel_count=spec.channel_count or None)
    broker = dev.broker or config.mqtt
    if broker is None:
        raise ConfigError(str(site.path), [(f"devices.{dev.id}.broker", "no broker and no site 'mqtt'")])
    password = None
    if broker.password is not None:
        key = "mqtt.password" if dev.broker is None else f"devices.{dev.id}.broker.password"
        try:
            password = broker.password.reveal()
        except ValueError as exc:
            raise ConfigError(str(site.path), [(key, str(exc))]) from None
    tls = getattr(broker, "tls", None) if dev.broker is None else None
    return MqttDeviceSource(
        device_id=dev.id, mapping=mapping, host=broker.host, port=broker.port,
        client_id=mqtt_client_id(config.site.id, dev.id), username=broker.username,
        password=password, keepalive=getattr(broker, "keepalive", 30), raw_log=raw_log,
        tls_context=functools.partial(tls_context, tls) if tls is not None else None,
        clock=ctx.clock)


# -- alarm hosts (SIA DC-09 / Contact ID over TCP) ---------------------------------------


def _alarm_host_spec(dev: cfg.AlarmHostDevice, where: str, ctx: ResolveContext) -> DeviceSpec:
    from drivers.sia_dc09 import contact_id

    port = dev.address[1]
    if not 1 <= port <= 65535:
        ctx.problems.append((f"{where}.listen", f"port {port} is outside 1..65535"))
    for i, other in enumerate(ctx.config.devices if ctx.config else ()):
        if (isinstance(other, cfg.AlarmHostDevice) and other is not dev and other.listen == dev.listen
                and other.account.upper() == dev.account.upper()):
            ctx.problems.append((f"{where}.account", f"account {dev.account} on {dev.listen} is "
                                                     f"also devices[{i}] ({other.id})"))
            break
    for i, other in enumerate(ctx.config.devices if ctx.config else ()):
        # One receiver (one socket) per listen string: one socket spelt two ways
        # (localhost / 127.0.0.1, or a wildcard beside an address) would be two receivers
        # fighting for the port, and after a reload the panel left on the old spelling
        # could not listen again. Two addresses of their own (two networks) are fine.
        if (isinstance(other, cfg.AlarmHostDevice) and other.listen != dev.listen
                and other.address[1] == port and _same_socket(other.address[0], dev.address[0])):
            ctx.problems.append((f"{where}.listen", f"{dev.listen} is the socket of "
                                                    f"devices[{i}].listen {other.listen!r}: "
                                                    f"spell one listen address the same way"))
            break
    return DeviceSpec(dev, dev.kind, "zone", max(dev.zones, default=0), frozenset({"online"}),
                      frozenset(), events=contact_id.event_names(), channel_places=_places(dev.zones),
                      faults=contact_id.FAULTS)


_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]", "*"})


def _same_socket(host: str, other: str) -> bool:
    """Whether listening on both hosts (on one port) would need the same socket."""
    if host in _WILDCARDS or other in _WILDCARDS:
        return True
    loopback = {"localhost": "127.0.0.1"}
    return loopback.get(host, host) == loopback.get(other, other)


def _alarm_host_driver(spec: DeviceSpec, ctx: DriverContext):
    from drivers.sia_dc09.receiver import AlarmHostDevice, Dc09Receiver  # only when configured

    dev = spec.config
    receiver = ctx.receivers.get(dev.listen)
    if receiver is None:  # panels on one address share its socket
        host, port = dev.address
        receiver = ctx.receivers[dev.listen] = Dc09Receiver(
            name=dev.listen, host=host, port=port, clock=ctx.clock)
    return AlarmHostDevice(device_id=dev.id, receiver=receiver, account=dev.account,
                           time_window=dev.time_window)


DEVICE_TYPES: dict[type, DeviceType] = {
    cfg.SyntheticDevice: DeviceType(resolve=_synthetic_spec, build=_synthetic_driver),
    cfg.ModbusDevice: DeviceType(resolve=_modbus_device_spec, build=_modbus_driver),
    cfg.MqttDevice: DeviceType(resolve=_mqtt_device_spec, build=_mqtt_driver),
    cfg.SerialFramesDevice: DeviceType(resolve=_serial_frames_spec, build=_serial_frames_driver),
    cfg.AlarmHostDevice: DeviceType(resolve=_alarm_host_spec, build=_alarm_host_driver),
}
SPEC_BUILDERS: dict[type, SpecBuilder] = {t: d.resolve for t, d in DEVICE_TYPES.items()}
