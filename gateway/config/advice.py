"""Settings that are legal but probably wrong, beyond what the models can check.

``check`` prints these as warnings and ``run`` logs them; none stops the gateway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.config.devices import ModbusDevice, ModbusRtuBus
from gateway.config.models import GatewayConfig

if TYPE_CHECKING:
    from gateway.config.loader import DeviceSpec

# Under this share of the line's time there is room left for writes, retries and a
# slave that stops answering (which costs timeout x tries per request).
BUS_HEADROOM = 0.7
LOOPBACK_HOSTS = ("localhost", "::1")


def advice(config: GatewayConfig, devices: dict[str, DeviceSpec]) -> list[str]:
    """Every warning about bus load and exposure, worded for an installer."""
    return bus_load_warnings(config, devices) + exposure_warnings(config)


def poll_seconds_on_rtu(spec: DeviceSpec, bus: ModbusRtuBus) -> float:
    """Line time one poll of the device takes on an RS-485 bus, when every slave answers.

    Per request: 8 bytes out, 5 + data bytes back, 3.5 silent characters after
    each frame (the RTU frame delimiter) and the bus's configured gap.
    """
    bits_per_char = 1 + bus.bytesize + (0 if bus.parity == "N" else 1) + bus.stopbits
    char = bits_per_char / bus.baudrate
    total = 0.0
    for data in spec.read_sizes:  # worked out by the Modbus spec builder
        total += (8 + 5 + data + 2 * 3.5) * char + bus.frame_gap
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
    if config.http is not None and not is_loopback(config.http.host):
        out.append(f"http.listen {config.http.listen}: /metrics and /api can be read from the "
                   f"network; keep it on 127.0.0.1 unless a firewall limits who reaches it")
    mqtt = config.mqtt
    if mqtt is not None:
        if mqtt.password is not None and mqtt.tls is None and not is_loopback(mqtt.host):
            out.append(f"mqtt: the password goes to {mqtt.host} in clear text; add 'mqtt.tls'")
        if mqtt.tls is not None and mqtt.tls.insecure:
            out.append("mqtt.tls.insecure: the broker's certificate is not checked against "
                       f"{mqtt.host!r}; anyone in the path can pose as the broker")
    return out


def is_loopback(host: str) -> bool:
    """Whether a host name or address stays on this machine."""
    return host in LOOPBACK_HOSTS or host.startswith("127.")
