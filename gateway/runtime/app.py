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
import logging
from pathlib import Path

from gateway.alarms.manager import AlarmManager, Transition
from gateway.alarms.digest import DeviceDigest
from gateway.alarms.protection import Protections, Schedule
from gateway.alarms.store import AlarmStore, StateFileError
from gateway.outbox.recovery import SALVAGE_LOST
from gateway.alarms.signing import CommandVerifier, check_secret
from gateway.clock import SystemClock
from gateway.config.loader import Site
from gateway.device_health import DeviceHealth
from gateway.runtime.faults import DEVICE_FAULT, FaultWatch
from gateway.errors import ConfigError, SinkError
from gateway.operations.liveness import PipelineWatch, health_report, status_line, watchdog_problem
from gateway.operations.systemd import SystemdNotifier, keep_alive
from gateway.rules.engine import RuleEngine
from gateway.runtime.actions import ACTUATION_FAILED, ActionRunner
from gateway.runtime.device_runner import DeviceRunner
from gateway.runtime.display import SiteDisplay
from gateway.runtime.device_types import DriverContext, build_bus, build_driver
from gateway.runtime.messages import alarm_location
from gateway.runtime.mqtt_link import MqttLink
from gateway.runtime.site_status import SiteStatusPublisher
from gateway.runtime.pipeline import Pipeline
from gateway.runtime.privacy import upstream_identities, upstream_mode
from gateway.runtime.reload import ReloadPlan, hand_over_alarms, reload_config
from gateway.runtime.stream_runner import StreamRunner
from gateway.runtime.views import SiteAlarms, SiteDevices, SiteDigest
from gateway.operations.process_probe import ProcessProbe
from gateway.upstream.factory import build_upstream
from gateway.upstream.line_protocol import LineEncoder
from gateway.views import Views

log = logging.getLogger(__name__)
ALARM_LOGGER = "gateway.alarm"  # one line per alarm transition (the demo prints its own)

DEVICE_OFFLINE = "device_offline"
SHUTDOWN_FLUSH_SECONDS = 3.0
OUTBOX_DEVICE = "outbox"  # the "device" of the outbox's own alarms
ALARM_STORE_DEVICE = "alarm-store"  # ... and of the alarm state file's
HISTORY_LOST = "alarm_history_lost"


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
                                      clock=self.clock, on_alarm=self._state_alarm)
        self.alarms.add_listener(self.alarm_store.on_transition)
        # Deliveries still owed to a webhook are journalled in the state file (the same
        # URL twice gets its place in the list in its key).
        urls = [w.url for w in cfg.webhooks]
        if cfg.webhooks:  # imported only when configured: aiohttp's client is ~10 MB
            from gateway.alarms.webhook import WebhookSender, endpoint_key
        self.webhooks = [WebhookSender(config=w, token=_reveal(w.token, f"webhooks[{i}].token", site),
                                       journal=self.alarm_store,
                                       key=endpoint_key(w.url) + (f"#{i}" if urls.count(w.url) > 1
                                                                  else ""))
                         for i, w in enumerate(cfg.webhooks)]
        for webhook in self.webhooks:
            self.alarms.add_listener(webhook.on_transition)
        # The morning handover: devices offline or faulty since the last digest.
        self.digest = DeviceDigest(alarms=self.alarms, clock=self.clock, site=cfg.site.id,
                                   on_digest=self._send_digest)
        self.alarms.add_listener(self.digest.on_transition)
        self.buses = {b.id: build_bus(b) for b in cfg.buses}
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
                                 password=password, commands=self._command_verifier())
        # Retained info and health for the hub above (gateway.runtime.site_status).
        self.site_status = SiteStatusPublisher(self, self.mqtt) if self.mqtt is not None else None
        self.fire_centre = None  # the city fire remote-monitoring centre, imported only when used
        if cfg.fire_centre is not None:
            from gateway.upstream.fire_centre.service import FireCentreService
            self.fire_centre = FireCentreService(config=cfg.fire_centre, state_dir=cfg.state_dir,
                                                 clock=self.clock, alarms=self.alarms,
                                                 latest=self.pipeline.latest)
            self.alarms.add_listener(self.fire_centre.on_transition)
        # What the HTTP API and the console see: views, not this object (gateway.views).
        self.views = Views(
            site=cfg.site, config_dir=Path(site.path).resolve().parent, console=cfg.console,
            alarms=SiteAlarms(self.alarms, self.alarm_store),
            devices=SiteDevices(specs=lambda: self.site.devices,
                                health=lambda: {r.device_id: r.health for r in self.runners},
                                latest=lambda: self.pipeline.latest),
            clock=self.clock, http=cfg.http, display=SiteDisplay(lambda: self.site),
            zones=self.protections, digest=SiteDigest(self.digest))
        self.http = None
        if cfg.http is not None:
            # Bound at start, loaded at its first connection (the server, metrics, console)
            from gateway.operations.http_on_demand import OnDemandHttpServer

            watch = PipelineWatch(self.pipeline)
            token = _reveal(cfg.http.token, "http.token", site)

            def build(http_api):
                from gateway.operations.metrics import metrics_registry

                return http_api.HttpServer(config=cfg.http, views=self.views, token=token,
                                           health=lambda: health_report(self, watch),
                                           metrics=metrics_registry(self),
                                           extend=self._more_routes)

            self.http = OnDemandHttpServer(config=cfg.http, build=build)

    def _more_routes(self, app, actor_of) -> None:
        """What the HTTP server serves besides the API: zone arming and the device
        digest, and the security room's console when configured."""
        from gateway.operations.protection_api import protection_routes

        app.add_routes(protection_routes(self.protections, self.site.devices, self.clock,
                                         actor_of=actor_of, digest=self.digest))
        if self.views.console is not None:
            from gateway.console import add_console_routes

            add_console_routes(app, self.views)  # /console, session-guarded

    def _command_verifier(self) -> CommandVerifier | None:
        """Checks signed MQTT commands with the keys in ``mqtt.commands``; None when off."""
        commands = self.site.config.mqtt.commands
        if commands is None or not commands.enabled:
            return None
        keys = {}
        for i, key in enumerate(commands.keys):
            path = f"mqtt.commands.keys[{i}].secret"
            try:
                keys[key.name] = check_secret(_reveal(key.secret, path, self.site))
            except ValueError as exc:
                raise ConfigError(str(self.site.path), [(path, str(exc))]) from None
        return CommandVerifier(keys, clock=self.clock,
                               per_alarm_per_minute=commands.max_per_alarm_per_minute)

    def _make_driver(self, device_id: str):
        return build_driver(self.site.devices[device_id],
                            DriverContext(site=self.site, buses=self.buses, clock=self.clock,
                                          receivers=self.receivers))

    def _make_runner(self, dev, health: DeviceHealth | None = None) -> DeviceRunner | StreamRunner:
        driver = self.drivers[dev.id]
        if hasattr(driver, "stream"):
            return StreamRunner(device_id=dev.id, driver=driver,
                                silence_timeout=getattr(dev, "silence_timeout", None),
                                emit=self.pipeline.put, on_offline=self._offline,
                                on_online=self._online, clock=self.clock, health=health)
        return DeviceRunner(device_id=dev.id, driver=driver, interval=dev.poll_interval,
                            offline_after=dev.offline_after, emit=self.pipeline.put,
                            on_offline=self._offline, on_online=self._online, clock=self.clock,
                            health=health)

    @property
    def started(self) -> bool:
        """Open alarms restored, the outbox open and every task created."""
        return self._tg is not None

    async def run(self) -> None:
        """Run until cancelled, then stop cleanly."""
        log.info("gateway %s starting: %d devices, %d rules, %d sinks; state in %s",
                 self.site.config.site.id, len(self.runners), len(self.site.config.rules),
                 len(self.sinks), self.alarm_store.path.parent)
        try:
            await self._restore_alarms()  # before anything raises or publishes an alarm
            if self.outbox is not None:
                await self.outbox.open()
                self._report_salvage(getattr(self.outbox.store, "salvage", None))
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
                if self.site_status is not None:
                    tg.create_task(self.site_status.run(), name="site-status")
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

    def start_device(self, device_id: str,
                     health: DeviceHealth | None = None) -> DeviceRunner | StreamRunner:
        """Build a configured device's driver and runner and, if running, start it (reload);
        ``health``: the record of the device's previous runner, carried on."""
        self.drivers[device_id] = self._make_driver(device_id)
        runner = self._make_runner(self.site.devices[device_id].config, health)
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
            try:
                await driver.close()  # type: ignore[attr-defined]
            except Exception:  # the device is gone from the config either way; say what failed
                log.exception("%s: closing its driver failed", device_id)
        return runner

    async def apply_reload(self, site: Site, plan: ReloadPlan) -> None:
        """Stop, swap and start what a reload's plan says (gateway.runtime.reload); the
        rest keeps running. A restarted device keeps its health record."""
        carried = {}
        for device in plan.removed + plan.restarted:
            runner = await self.stop_device(device)
            if runner is not None:
                carried[device] = runner.health
        for bus_id in plan.buses_closed:
            bus = self.buses.pop(bus_id, None)
            if bus is not None:
                await bus.close()
        self.site = site
        for bus_config in site.config.buses:
            if bus_config.id not in self.buses:
                self.buses[bus_config.id] = build_bus(bus_config)
        rules = None
        if plan.rules_changed:  # rule state starts afresh; open alarms are handed over
            rules = RuleEngine(list(site.config.rules), site.devices, clock=self.clock)
            hand_over_alarms(self.alarms, rules, site, plan, self.clock.time())
        private = upstream_identities(site.devices, _pseudonymiser(site))
        self.pipeline.reconfigure(site.devices, rules=rules, removed=plan.removed,
                                  upstream_ids=private.aliases, alias_specs=private.alias_specs,
                                  faults=self.pipeline.faults.with_devices(site.devices))
        for device in plan.added + plan.restarted:
            try:
                self.start_device(device, carried.get(device))
            except Exception:  # checked before; whatever is left must not stop the gateway
                log.exception("reload: device %s could not be started", device)
        # Alarm-host receivers of addresses no panel listens on any more (their last panel
        # stopped above, which closed the socket): the new address got its own receiver.
        listening = {getattr(spec.config, "listen", None) for spec in site.devices.values()}
        for listen in [a for a in self.receivers if a not in listening]:
            del self.receivers[listen]

    def reload_finished(self) -> None:
        """Tell systemd the reload is over (applied or not)."""
        if self.notifier is not None:
            self.notifier.ready(status_line(self))

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
        store = self.alarm_store
        for webhook in self.webhooks:  # owed from before, ahead of anything new
            webhook.restore(store.webhook_backlog.pop(webhook.key, []))
        if store.webhook_backlog:
            log.warning("%d webhook deliveries owed to endpoints no longer configured are "
                        "dropped", sum(map(len, store.webhook_backlog.values())))
            store.forget_webhooks(list(store.webhook_backlog))
        if store.moved_aside is not None:
            self.alarms.activate(
                rule=HISTORY_LOST, severity=2, device=ALARM_STORE_DEVICE, kind="gateway",
                channel=None, location={}, value=None, ts=self.clock.time(), momentary=True,
                message=f"alarm state file was damaged ({store.damage}); moved to "
                        f"{store.moved_aside.name}: the alarms open before this start and "
                        "their history are lost", details={"moved_to": str(store.moved_aside)})
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
        try:
            async with asyncio.timeout(SHUTDOWN_FLUSH_SECONDS):
                await self.actions.wait_idle(timed=False)
                for sink in self.sinks:
                    try:
                        await sink.flush()
                    except SinkError as exc:  # the upstream is away: the next start sends them
                        log.warning("stopping: sending the last rows to %s failed (%s); they "
                                    "stay in the outbox", sink.name, exc.detail)
                    except Exception:  # a bug: its traceback, and the rows still stay
                        log.exception("stopping: sending the last rows to %s failed; they stay "
                                      "in the outbox", sink.name)
        except TimeoutError:
            log.warning("stopping: device writes and the last upstream rows not done within "
                        "%g s; unsent rows stay in the outbox", SHUTDOWN_FLUSH_SECONDS)
        await self.actions.cancel()  # a write still hanging must not outlive its bus
        for sink in self.sinks:
            try:
                await sink.close()  # the runner's: also ends a write still in flight
            except Exception:
                log.exception("stopping: closing the %s sink failed", sink.name)
        if self.outbox is not None:
            await self.outbox.close()
        for bus in self.buses.values():
            await bus.close()
        log.info("gateway %s stopped", self.site.config.site.id)

    def _send_digest(self, digest: dict) -> None:
        for webhook in self.webhooks:
            webhook.on_document("device_digest", digest)

    def _outbox_alarm(self, rule: str, active: bool, message: str) -> None:
        # buffer_overflow (readings dropped) and outbox_write_failed (disk trouble)
        if active:
            self.alarms.activate(rule=rule, severity=2, device=OUTBOX_DEVICE, kind="gateway",
                                 channel=None, location={}, message=message, value=None,
                                 ts=self.clock.time())
        else:
            self.alarms.deactivate(rule=rule, device=OUTBOX_DEVICE, channel=None, value=None,
                                   ts=self.clock.time())

    def _state_alarm(self, rule: str, active: bool, message: str) -> None:
        # alarm_store_write_failed: alarm history kept in memory only
        if active:
            self.alarms.activate(rule=rule, severity=2, device=ALARM_STORE_DEVICE, kind="gateway",
                                 channel=None, location={}, message=message, value=None,
                                 ts=self.clock.time())
        else:
            self.alarms.deactivate(rule=rule, device=ALARM_STORE_DEVICE, channel=None, value=None,
                                   ts=self.clock.time())

    def _report_salvage(self, salvage) -> None:
        # A damaged outbox was moved aside and what could be read copied into a new one.
        if salvage is None:
            return
        self.alarms.activate(rule=SALVAGE_LOST, severity=2, device=OUTBOX_DEVICE, kind="gateway",
                             channel=None, location={}, value=float(salvage.unreadable),
                             ts=self.clock.time(), momentary=True, message=salvage.summary(),
                             details=salvage.details())

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
    logging.getLogger(ALARM_LOGGER).log(
        _LEVELS.get(t.event, logging.INFO), "alarm %s %s%s: [L%s] %s (device %s, count %s)",
        a["id"], t.event, by, a["severity"], a["message"], a["device"], a["count"])
