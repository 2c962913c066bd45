"""The gateway process: builds every part from a checked config and runs them.

One supervising TaskGroup, tasks named after what they serve
(``driver[charger-b3]``, ``sink[influxdb]``). Stopping is cancellation: polls end,
queued readings go through the rules and are committed to the outbox, sinks send
what they can of it (bounded in time; the rest goes at the next start),
connections close.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable

from drivers.modbus.bus import ModbusBus
from drivers.modbus.device import ModbusDevice
from drivers.mqtt.factory import build_mqtt_device
from drivers.serial_frames.driver import SerialFrameDevice
from drivers.synthetic import SyntheticDevice
from gateway.runtime.actions import ACTUATION_FAILED, ActionRunner
from gateway.alarms.manager import AlarmManager, Transition
from gateway.alarms.digest import DeviceDigest
from gateway.alarms.protection import Protections, Schedule
from gateway.alarms.store import AlarmStore, StateFileError
from gateway.clock import SystemClock
from gateway.config.devices import AlarmHostDevice as AlarmHostDeviceConfig
from gateway.config.devices import ModbusDevice as ModbusDeviceConfig
from gateway.config.devices import ModbusRtuBus, ModbusTcpBus
from gateway.config.devices import MqttDevice as MqttDeviceConfig
from gateway.config.devices import SerialFramesDevice as SerialFramesDeviceConfig
from gateway.config.devices import SyntheticDevice as SyntheticDeviceConfig
from gateway.config.loader import DeviceSpec, Site
from gateway.runtime.device_runner import DeviceRunner
from gateway.runtime.faults import DEVICE_FAULT, FaultWatch
from gateway.errors import ConfigError
from gateway.operations.liveness import PipelineWatch, status_line, watchdog_problem
from gateway.runtime.reload import reload_config
from gateway.runtime.messages import alarm_location
from gateway.runtime.mqtt_link import MqttLink
from gateway.runtime.pipeline import Pipeline
from gateway.runtime.privacy import upstream_identities, upstream_mode
from gateway.rules.engine import RuleEngine
from gateway.runtime.stream_runner import StreamRunner
from gateway.operations.systemd import SystemdNotifier, keep_alive
from gateway.upstream.line_protocol import LineEncoder
from gateway.operations.process_probe import ProcessProbe
from gateway.upstream.factory import build_upstream

log = logging.getLogger(__name__)

DEVICE_OFFLINE = "device_offline"
SHUTDOWN_FLUSH_SECONDS = 3.0
OUTBOX_DEVICE = "outbox"  # the "device" of the outbox's own alarms


class Gateway:
    """Everything one site runs; ``await run()`` until cancelled."""

    def __init__(self, site: Site, *, clock=None, notifier: SystemdNotifier | None = None):
        self.site = site
        cfg = site.config
        self.clock = clock or SystemClock()
        self.notifier = notifier if notifier is not None and notifier.enabled else None
        # Device runner tasks by device id, each cancellable alone (config reload).
        self.device_tasks: dict[str, asyncio.Task] = {}
        self.reloads: collections.Counter[str] = collections.Counter()
        self.reload_lock = asyncio.Lock()  # one SIGHUP at a time
        self._tg: asyncio.TaskGroup | None = None
        self.process_probe = ProcessProbe()  # loop lag and disk writes, for /metrics
        self.alarms = AlarmManager(clock=self.clock, listeners=[_log_transition],
                                   escalate_after=cfg.alarms.escalate_after,
                                   max_shelve=cfg.alarms.max_shelve_minutes * 60)
        # Open alarms and their history survive a restart (loaded in run()).
        self.alarm_store = AlarmStore(state_dir=cfg.state_dir, history_days=cfg.alarms.history_days,
                                      clock=self.clock)
        self.alarms.add_listener(self.alarm_store.on_transition)
        if cfg.webhooks:  # imported only when configured: aiohttp's client is ~10 MB
            from gateway.alarms.webhook import WebhookSender
        self.webhooks = [WebhookSender(config=w, token=_reveal(w.token, f"webhooks[{i}].token", site))
                         for i, w in enumerate(cfg.webhooks)]
        for webhook in self.webhooks:
            self.alarms.add_listener(webhook.on_transition)
        # The morning handover: devices offline or faulty since the last digest.
        self.digest = DeviceDigest(alarms=self.alarms, clock=self.clock, site=cfg.site.id)
        self.alarms.add_listener(self.digest.on_transition)
        self.buses = {b.id: _make_bus(b) for b in cfg.buses}
        self.receivers: dict[str, object] = {}  # alarm-host receivers by listen address
        self.drivers = {d.id: self._make_driver(d.id) for d in cfg.devices}
        self.actions = ActionRunner(drivers=self.drivers, on_failure=self._actuation_failed)
        # The durable outbox (None without sinks) and a runner per upstream sink.
        upstream = build_upstream(site, clock=self.clock, reveal=_reveal,
                                  on_alarm=self._outbox_alarm)
        self.outbox, self.sinks = upstream.outbox, upstream.sinks
        # Arming groups, bypassed inputs, devices out of service (kept in the state dir).
        self.protections = Protections(
            groups={g.id: (g.name or g.id, Schedule(g.schedule)) for g in cfg.arming},
            state_dir=cfg.state_dir, clock=self.clock)
        self.alarms.hold_back = self.protections.hold_back
        private = upstream_identities(site.devices, _pseudonymiser(site))
        self.pipeline = Pipeline(
            devices=site.devices, rules=RuleEngine(list(cfg.rules), site.devices, clock=self.clock),
            alarms=self.alarms, actions=self.actions,
            encoder=LineEncoder(cfg.site.id, {**site.devices, **private.alias_specs}),
            outbox=self.outbox, telemetry=upstream.telemetry, queue_size=cfg.pipeline.queue_size,
            language=cfg.site.language, upstream_ids=private.aliases,
            faults=FaultWatch(site.devices, self.alarms, cfg.site.language),
            protections=self.protections, lines=upstream.lines)
        self.runners = [self._make_runner(d) for d in cfg.devices]
        self.mqtt = None
        if cfg.mqtt is not None:
            password = _reveal(cfg.mqtt.password, "mqtt.password", site)
            self.mqtt = MqttLink(config=cfg.mqtt, site_id=cfg.site.id, alarms=self.alarms,
                                 password=password)
        self.fire_centre = None  # the city fire remote-monitoring centre, imported only when used
        if cfg.fire_centre is not None:
            from gateway.upstream.fire_centre.service import FireCentreService
            self.fire_centre = FireCentreService(config=cfg.fire_centre, state_dir=cfg.state_dir,
                                                 clock=self.clock, alarms=self.alarms,
                                                 latest=self.pipeline.latest)
            self.alarms.add_listener(self.fire_centre.on_transition)
        self.http = None
        if cfg.http is not None:  # imported only when configured (aiohttp, prometheus)
            from gateway.operations.http_api import HttpServer
            self.http = HttpServer(config=cfg.http, gateway=self,
                                   token=_reveal(cfg.http.token, "http.token", site))

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

    @property
    def started(self) -> bool:
        """Open alarms restored, the outbox open and every task created."""
        return self._tg is not None

    async def run(self) -> None:
        """Run until cancelled, then stop cleanly."""
        log.info("gateway %s starting: %d devices, %d rules, %d sinks", self.site.config.site.id,
                 len(self.runners), len(self.site.config.rules), len(self.sinks))
        try:
            await self._restore_alarms()  # before anything raises or publishes an alarm
            if self.outbox is not None:
                await self.outbox.open()
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self.pipeline.run(), name="pipeline")
                tg.create_task(self.alarm_store.run(), name="alarm-store")
                tg.create_task(self._timers(), name="timers")
                tg.create_task(self.process_probe.run(), name="process-probe")
                if self.site.config.alarms.digest_at is not None:
                    tg.create_task(self.digest.run(self.site.config.alarms.digest_at),
                                   name="digest")
                for i, webhook in enumerate(self.webhooks):
                    tg.create_task(webhook.run(), name=f"webhook[{i}]")
                if self.outbox is not None:
                    tg.create_task(self.outbox.run(), name="outbox")
                for sink in self.sinks:
                    tg.create_task(sink.run(), name=f"sink[{sink.sink.name}]")
                if self.mqtt is not None:
                    tg.create_task(self.mqtt.run(), name="mqtt")
                if self.fire_centre is not None:
                    tg.create_task(self.fire_centre.run(), name="fire-centre")
                for runner in self.runners:
                    self._start_runner(runner)
                if self.http is not None:
                    tg.create_task(self.http.run(), name="http")
                if self.notifier is not None:
                    tg.create_task(self._systemd(), name="systemd")
        finally:
            self._tg = None
            if self.notifier is not None:
                self.notifier.stopping()
            await self._shutdown()

    def _start_runner(self, runner: DeviceRunner | StreamRunner) -> None:
        assert self._tg is not None
        self.device_tasks[runner.device_id] = self._tg.create_task(
            runner.run(), name=f"driver[{runner.device_id}]")

    def start_device(self, device_id: str) -> DeviceRunner | StreamRunner:
        """Build a configured device's driver and runner and, if running, start it (reload)."""
        self.drivers[device_id] = self._make_driver(device_id)
        runner = self._make_runner(self.site.devices[device_id].config)
        self.runners.append(runner)
        if self._tg is not None:
            self._start_runner(runner)
        return runner

    async def stop_device(self, device_id: str) -> DeviceRunner | StreamRunner | None:
        """Stop a device's task and close its driver (reload); return its runner."""
        task = self.device_tasks.pop(device_id, None)
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise  # we are being stopped ourselves, not just the device
        runner = next((r for r in self.runners if r.device_id == device_id), None)
        if runner is not None:
            self.runners.remove(runner)
        driver = self.drivers.pop(device_id, None)
        if driver is not None:
            with contextlib.suppress(Exception):
                await driver.close()  # type: ignore[attr-defined]
        return runner

    def request_reload(self) -> None:
        """Re-read the config file in the background (SIGHUP); see gateway.runtime.reload."""
        if self._tg is None:
            log.warning("reload ignored: the gateway is not running")
            return
        if self.notifier is not None:
            self.notifier.reloading()
        try:
            self._tg.create_task(reload_config(self), name="reload")
        except RuntimeError:  # the group is shutting down
            log.warning("reload ignored: the gateway is stopping")

    async def _systemd(self) -> None:
        assert self.notifier is not None
        await asyncio.sleep(0)  # every task has started
        self.notifier.ready(status_line(self))
        watch = PipelineWatch(self.pipeline)
        await keep_alive(self.notifier, problem=lambda: watchdog_problem(self, watch),
                         status=lambda: status_line(self))

    async def _restore_alarms(self) -> None:
        """Take back the alarms open at the last stop; rules whose condition they
        record learn it, so the next normal reading clears them."""
        try:
            records = await self.alarm_store.open()
        except StateFileError as exc:
            raise ConfigError(str(self.site.path), [("state_dir", str(exc))]) from None
        restored = self.alarms.restore(records)
        runners = {r.device_id: r for r in self.runners}
        for alarm in restored:
            if not alarm.condition:
                continue
            if alarm.rule == DEVICE_OFFLINE and alarm.device in runners:
                runners[alarm.device].health.online = False  # its first good poll clears it
            elif alarm.rule.startswith(DEVICE_FAULT + ":"):
                if not self.pipeline.faults.restore(alarm.device, alarm.channel, alarm.rule):
                    self.alarms.condition_unknown(alarm)
            elif not self.pipeline.rules.restore_active(alarm.rule, alarm.device, alarm.channel):
                self.alarms.condition_unknown(alarm)
        if restored:
            log.info("restored %d open alarms from %s", len(restored), self.alarm_store.path)
        if self.mqtt is not None:
            # Closed while the broker was away, just before a stop: clear their retained state.
            closed = await self.alarm_store.recently_closed(since=self.clock.time() - 86400)
            self.mqtt.forget([i for i in closed if i not in {a.id for a in restored}])

    async def _timers(self) -> None:
        """Timed rules (held, absence, confirmation), shelving expiry and escalation."""
        interval = self.site.config.alarms.tick_interval
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                self.pipeline.tick(self.clock.time())
            except Exception:  # a bug in one timed rule must not stop the gateway
                if not failing:
                    log.exception("timed rules failed; retrying every tick")
                failing = True
            else:
                failing = False

    async def _shutdown(self) -> None:
        self.pipeline.drain()
        await self.alarm_store.close()  # every alarm transition so far is in the state file
        if self.fire_centre is not None:
            self.fire_centre.close()  # its frames were committed as they were made
        if self.outbox is not None:
            await self.outbox.flush()  # what the pipeline took is committed: accepted
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_FLUSH_SECONDS):
                await self.actions.wait_idle()
                for sink in self.sinks:
                    with contextlib.suppress(Exception):
                        await sink.flush()
        await self.actions.cancel()  # a write still hanging must not outlive its bus
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                await sink.sink.close()
        if self.outbox is not None:
            await self.outbox.close()
        for bus in self.buses.values():
            await bus.close()
        log.info("gateway %s stopped", self.site.config.site.id)

    def _outbox_alarm(self, rule: str, active: bool, message: str) -> None:
        # buffer_overflow (readings dropped) and outbox_write_failed (disk trouble)
        if active:
            self.alarms.activate(rule=rule, severity=2, device=OUTBOX_DEVICE, kind="gateway",
                                 channel=None, location={}, message=message, value=None,
                                 ts=self.clock.time())
        else:
            self.alarms.deactivate(rule=rule, device=OUTBOX_DEVICE, channel=None, value=None,
                                   ts=self.clock.time())

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
                             ts=self.clock.time(), momentary=True)


def _modbus_driver(spec: DeviceSpec, gateway: Gateway) -> ModbusDevice:
    dev = spec.config
    return ModbusDevice(device_id=dev.id, bus=gateway.buses[dev.bus], points=list(spec.points),
                        limits=spec.limits, clock=gateway.clock)


def _synthetic_driver(spec: DeviceSpec, gateway: Gateway) -> SyntheticDevice:
    dev = spec.config
    return SyntheticDevice(device_id=dev.id, fields=dev.fields, channels=dev.channels,
                           clock=gateway.clock)


def _serial_frames_driver(spec: DeviceSpec, gateway: Gateway) -> SerialFrameDevice:
    dev = spec.config
    return SerialFrameDevice(device_id=dev.id, port=dev.port, protocol=dev.codec,
                             baudrate=dev.baudrate, quiet_gap=dev.quiet_gap,
                             command_timeout=dev.command_timeout, setup=dev.setup.values(),
                             clock=gateway.clock)


def _alarm_host_driver(spec: DeviceSpec, gateway: Gateway):
    from drivers.sia_dc09.receiver import AlarmHostDevice, Dc09Receiver  # only when configured

    dev = spec.config
    receiver = gateway.receivers.get(dev.listen)
    if receiver is None:  # panels on one address share its socket
        host, port = dev.address
        receiver = gateway.receivers[dev.listen] = Dc09Receiver(
            name=dev.listen, host=host, port=port, clock=gateway.clock)
    return AlarmHostDevice(device_id=dev.id, receiver=receiver, account=dev.account,
                           time_window=dev.time_window)


# One entry per device config type: how to build its driver. A new device type
# adds its factory here (and its spec builder in gateway.config.loader).
DRIVER_FACTORIES: dict[type, Callable[[DeviceSpec, Gateway], object]] = {
    ModbusDeviceConfig: _modbus_driver,
    SyntheticDeviceConfig: _synthetic_driver,
    MqttDeviceConfig: build_mqtt_device,
    SerialFramesDeviceConfig: _serial_frames_driver,
    AlarmHostDeviceConfig: _alarm_host_driver,
}


def _make_bus(bus: ModbusTcpBus | ModbusRtuBus) -> ModbusBus:
    if isinstance(bus, ModbusTcpBus):
        return ModbusBus.tcp(name=bus.id, host=bus.host, port=bus.port, timeout=bus.timeout,
                             retries=bus.retries, frame_gap=bus.frame_gap)
    return ModbusBus.rtu(name=bus.id, port=bus.port, baudrate=bus.baudrate, parity=bus.parity,
                         stopbits=bus.stopbits, bytesize=bus.bytesize, timeout=bus.timeout,
                         retries=bus.retries, frame_gap=bus.gap_seconds)


def _pseudonymiser(site: Site):
    """The site's keyed hash for pseudonymised devices (None when none is)."""
    if site.config.privacy is None or not any(
            upstream_mode(s) == "pseudonymised" for s in site.devices.values()):
        return None
    from drivers.mqtt.pseudonym import Pseudonymiser

    try:
        return Pseudonymiser(key=site.config.privacy.key.reveal())
    except ValueError as exc:
        raise ConfigError(str(site.path), [("privacy.key", str(exc))]) from None


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
