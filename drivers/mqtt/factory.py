"""Build an ``MqttDeviceSource`` from a checked site config (the gateway's driver factory)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from drivers.mqtt.device import MqttDeviceSource
from drivers.mqtt.mapping import MessageMapping
from drivers.mqtt.profile import MqttProfile
from drivers.mqtt.pseudonym import Pseudonymiser, RawValueLog
from gateway.config.loader import DeviceSpec, load_profile
from gateway.errors import ConfigError
from gateway.mqtt_tls import tls_context

if TYPE_CHECKING:
    from gateway.runtime.app import Gateway


def client_id(site_id: str, device_id: str) -> str:
    """The fixed MQTT client id of a device's persistent session."""
    return f"gateway-{site_id}-{device_id}"


def build_mqtt_device(spec: DeviceSpec, gateway: "Gateway") -> MqttDeviceSource:
    """The driver of one ``type: mqtt`` device; ConfigError when a secret cannot be read."""
    dev = spec.config
    site = gateway.site
    cfg = site.config
    profile: MqttProfile = load_profile(dev.profile, site.path.parent, MqttProfile)
    pseudonymiser = None
    raw_log = None
    if profile.pseudonymise:
        privacy = cfg.privacy
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
    broker = dev.broker or cfg.mqtt
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
        client_id=client_id(cfg.site.id, dev.id), username=broker.username, password=password,
        keepalive=getattr(broker, "keepalive", 30), raw_log=raw_log,
        tls_context=functools.partial(tls_context, tls) if tls is not None else None,
        clock=gateway.clock)
