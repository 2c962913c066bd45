"""The gateway process: builds every part from a checked config and runs them.

One supervising TaskGroup, tasks named after what they serve
(``driver[charger-b3]``, ``sink[influxdb]``). Stopping is cancellation: polls end,
queued readings go through the rules, buffered lines are flushed (bounded in
time), connections close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from drivers.modbus.bus import ModbusBus
from drivers.modbus.device import ModbusDevice
from drivers.synthetic import SyntheticDevice
from gateway.actions import ACTUATION_FAILED, ActionRunner
from gateway.alarms.manager import AlarmManager, Transition
from gateway.clock import SystemClock
from gateway.config.devices import ModbusDevice as ModbusDeviceConfig
from gateway.config.devices import ModbusRtuBus, ModbusTcpBus
from gateway.config.devices import SyntheticDevice as SyntheticDeviceConfig
from gateway.config.loader import DeviceSpec, Site
from gateway.device_runner import DeviceRunner
from gateway.errors import ConfigError
from gateway.messages import alarm_location
from gateway.mqtt_link import MqttLink
from gateway.pipeline import Pipeline
from gateway.rules.engine import RuleEngine
from gateway.stream_runner import StreamRunner
from gateway.upstream.influx import InfluxSink
from gateway.upstream.line_protocol import LineEncoder
from gateway.upstream.local_file import LocalFileSink
from gateway.upstream.sink_runner import SinkRunner

log = logging.getLogger(__name__)

DEVICE_OFFLINE = "device_offline"
SHUTDOWN_FLUSH_SECONDS = 3.0


class Gateway:
    """Everything one site runs; ``await run()`` until cancelled."""

    def __init__(self, site: Site, *, clock=None):
        self.site = site
        cfg = site.config
        self.clock = clock or SystemClock()
        self.alarms = AlarmManager(clock=self.clock, listeners=[_log_transition])
        self.buses = {b.id: _make_bus(b) for b in cfg.buses}
        self.drivers = {d.id: self._make_driver(d.id) for d in cfg.devices}
        self.actions = ActionRunner(drivers=self.drivers, on_failure=self._actuation_failed)
        self.sinks = self._make_sinks()
        self.pipeline = Pipeline(
            devices=site.devices, rules=RuleEngine(list(cfg.rules), site.devices),
            alarms=self.alarms, actions=self.actions,
            encoder=LineEncoder(cfg.site.id, site.devices), sinks=self.sinks,
            queue_size=cfg.pipeline.queue_size, language=cfg.site.language)
        self.runners = [self._make_runner(d) for d in cfg.devices]
        self.mqtt = None
        if cfg.mqtt is not None:
            password = _reveal(cfg.mqtt.password, "mqtt.password", site)
            self.mqtt = MqttLink(config=cfg.mqtt, site_id=cfg.site.id, alarms=self.alarms,
                                 password=password)

    def _make_driver(self, device_id: str):
        spec = self.site.devices[device_id]
        return DRIVER_FACTORIES[type(spec.config)](spec, self)

    def _make_runner(self, dev) -> DeviceRunner | StreamRunner:
        driver = self.drivers[dev.id]
        if hasattr(driver, "stream"):
            return StreamRunner(device_id=dev.id, driver=driver,
                                silence_timeout=getattr(dev, "silence_timeout", None),
                                emit=self.pipeline.put, on_offline=self._offline,
                                on_online=self._online, clock=self.clock)
        return DeviceRunner(device_id=dev.id, driver=driver, interval=dev.poll_interval,
                            offline_after=dev.offline_after, emit=self.pipeline.put,
                            on_offline=self._offline, on_online=self._online, clock=self.clock)

    def _make_sinks(self) -> list[SinkRunner]:
        cfg = self.site.config
        runners = []
        if cfg.influxdb is not None:
            token = _reveal(cfg.influxdb.token, "influxdb.token", self.site)
            runners.append(SinkRunner(InfluxSink(cfg.influxdb, token),
                                      batch_size=cfg.influxdb.batch_size,
                                      flush_interval=cfg.influxdb.flush_interval,
                                      max_buffered=cfg.pipeline.upstream_buffer, clock=self.clock))
        if cfg.local_series is not None:
            runners.append(SinkRunner(LocalFileSink(cfg.local_series.path, cfg.local_series.max_mb),
                                      batch_size=5000, flush_interval=1.0,
                                      max_buffered=cfg.pipeline.upstream_buffer, clock=self.clock))
        return runners

    async def run(self) -> None:
        """Run until cancelled, then stop cleanly."""
        log.info("gateway %s starting: %d devices, %d rules, %d sinks", self.site.config.site.id,
                 len(self.runners), len(self.site.config.rules), len(self.sinks))
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.pipeline.run(), name="pipeline")
                for sink in self.sinks:
                    tg.create_task(sink.run(), name=f"sink[{sink.sink.name}]")
                if self.mqtt is not None:
                    tg.create_task(self.mqtt.run(), name="mqtt")
                for runner in self.runners:
                    tg.create_task(runner.run(), name=f"driver[{runner.device_id}]")
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        self.pipeline.drain()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_FLUSH_SECONDS):
                await self.actions.wait_idle()
                for sink in self.sinks:
                    with contextlib.suppress(Exception):
                        await sink.flush()
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                await sink.sink.close()
        for bus in self.buses.values():
            await bus.close()
        log.info("gateway %s stopped", self.site.config.site.id)

    def _offline(self, device: str, detail: str) -> None:
        spec = self.site.devices.get(device)
        self.alarms.activate(rule=DEVICE_OFFLINE, severity=3, device=device,
                             kind=spec.kind if spec else "unknown", channel=None,
                             location=alarm_location(spec, None),
                             message=f"{device} offline: {detail}", value=None,
                             ts=self.clock.time())

    def _online(self, device: str) -> None:
        self.alarms.deactivate(rule=DEVICE_OFFLINE, device=device, channel=None, value=None,
                               ts=self.clock.time())

    def _actuation_failed(self, device: str, channel: int | None, field: str, error: str) -> None:
        spec = self.site.devices.get(device)
        self.alarms.activate(rule=ACTUATION_FAILED, severity=1, device=device,
                             kind=spec.kind if spec else "unknown", channel=channel,
                             location=alarm_location(spec, channel),
                             message=f"{device}: writing {field} failed: {error}", value=None,
                             ts=self.clock.time())


def _modbus_driver(spec: DeviceSpec, gateway: Gateway) -> ModbusDevice:
    dev = spec.config
    return ModbusDevice(device_id=dev.id, bus=gateway.buses[dev.bus], points=list(spec.points),
                        limits=spec.limits, clock=gateway.clock)


def _synthetic_driver(spec: DeviceSpec, gateway: Gateway) -> SyntheticDevice:
    dev = spec.config
    return SyntheticDevice(device_id=dev.id, fields=dev.fields, channels=dev.channels,
                           clock=gateway.clock)


# One entry per device config type: how to build its driver. A new device type
# adds its factory here (and its spec builder in gateway.config.loader).
DRIVER_FACTORIES: dict[type, Callable[[DeviceSpec, Gateway], object]] = {
    ModbusDeviceConfig: _modbus_driver,
    SyntheticDeviceConfig: _synthetic_driver,
}


def _make_bus(bus: ModbusTcpBus | ModbusRtuBus) -> ModbusBus:
    if isinstance(bus, ModbusTcpBus):
        return ModbusBus.tcp(name=bus.id, host=bus.host, port=bus.port, timeout=bus.timeout,
                             retries=bus.retries, frame_gap=bus.frame_gap)
    return ModbusBus.rtu(name=bus.id, port=bus.port, baudrate=bus.baudrate, parity=bus.parity,
                         stopbits=bus.stopbits, bytesize=bus.bytesize, timeout=bus.timeout,
                         retries=bus.retries, frame_gap=bus.frame_gap)


def _reveal(secret, key: str, site: Site) -> str | None:
    if secret is None:
        return None
    try:
        return secret.reveal()
    except ValueError as exc:
        raise ConfigError(str(site.path), [(key, str(exc))]) from None


_LEVELS = {"raised": logging.WARNING, "repeated": logging.WARNING}


def _log_transition(t: Transition) -> None:
    a = t.alarm
    by = f" by {t.by}" if t.by else ""
    log.log(_LEVELS.get(t.event, logging.INFO), "alarm %s %s%s: [L%s] %s (device %s, count %s)",
            a["id"], t.event, by, a["severity"], a["message"], a["device"], a["count"])
