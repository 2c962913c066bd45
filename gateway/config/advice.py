"""Settings that are legal but probably wrong, beyond what the models can check.

``check`` prints these as warnings and ``run`` logs them; none stops the gateway.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from gateway.config.devices import ModbusDevice, ModbusRtuBus
from gateway.config.models import GatewayConfig

if TYPE_CHECKING:
    from gateway.config.loader import DeviceSpec

# Under this share of the line's time there is room left for writes, retries and a
# slave that stops answering (which costs timeout x tries per request).
BUS_HEADROOM = 0.7


def advice(config: GatewayConfig, devices: dict[str, DeviceSpec]) -> list[str]:
    """Every warning about bus load and exposure, worded for an installer."""
    return bus_load_warnings(config, devices) + exposure_warnings(config)


def poll_seconds_on_rtu(spec: DeviceSpec, bus: ModbusRtuBus) -> float:
    """Line time one poll of the device takes on an RS-485 bus, when every slave answers.

    Per request: 8 bytes out, 3.5 silent characters (the RTU frame delimiter),
    5 + data bytes back, then the bus's gap (by default the same 3.5 characters).
    """
    char = bus.char_seconds
    total = 0.0
    for data in spec.read_sizes:  # worked out by the Modbus spec builder
        total += (8 + 5 + data + 3.5) * char + bus.gap_seconds
    return total


def bus_load_warnings(config: GatewayConfig, devices: dict[str, DeviceSpec]) -> list[str]:
    """Polls an RS-485 line cannot serve at its baud rate."""
    out = []
    for bus in config.buses:
        if not isinstance(bus, ModbusRtuBus):
            continue
        load = 0.0
        members = 0
        for spec in devices.values():
            dev = spec.config
            if not isinstance(dev, ModbusDevice) or dev.bus != bus.id:
                continue
            seconds = poll_seconds_on_rtu(spec, bus)
            members += 1
            load += seconds / dev.poll_interval
            if seconds > dev.poll_interval:
                out.append(f"device {dev.id}: about {seconds:.2f}s of bus time per poll at "
                           f"{bus.baudrate} baud exceeds its poll interval {dev.poll_interval}s")
        if load > 1:
            out.append(f"bus {bus.id}: its {members} device(s) need about {load:.0%} of the line "
                       f"at {bus.baudrate} baud; polls will fall behind: raise poll_interval "
                       f"or the baud rate, or split the devices over two lines")
        elif load > BUS_HEADROOM:
            out.append(f"bus {bus.id}: polls take about {load:.0%} of the line at {bus.baudrate} "
                       f"baud; little room is left for writes and for a slave that stops "
                       f"answering ({bus.timeout}s x {bus.retries + 1} tries per request)")
    return out


def exposure_warnings(config: GatewayConfig) -> list[str]:
    """Secrets or APIs more exposed than they should be."""
    out = []
    http = config.http
    if http is not None and not is_loopback(http.host):
        if http.token is None:
            out.append(f"http.listen {http.listen} is not loopback and no http.token is set: "
                       "every /api request (reads too) is refused; set http.token, or listen "
                       "on 127.0.0.1")
        else:
            out.append(f"http.listen {http.listen} is not loopback: /api needs the token for "
                       "reads too, but /healthz and /metrics are open to whoever reaches it; "
                       "keep a firewall in front, or listen on 127.0.0.1")
    mqtt = config.mqtt
    if mqtt is not None:
        if mqtt.password is not None and mqtt.tls is None and not is_loopback(mqtt.host):
            out.append(f"mqtt: the password goes to {mqtt.host} in clear text; add 'mqtt.tls'")
        if mqtt.tls is not None and mqtt.tls.insecure:
            out.append("mqtt.tls.insecure: the broker's certificate is not checked against "
                       f"{mqtt.host!r}; anyone in the path can pose as the broker")
    return out


def is_loopback(host: str) -> bool:
    """Whether a host name or address stays on this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # another host name: it may resolve to anything
        return False
