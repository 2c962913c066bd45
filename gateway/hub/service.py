"""The hub process: the live picture from the broker, the history, the hub's own alarms
(gateways offline or silent, sent by webhook) and the read-only HTTP API.

``community-gateway hub HUB.yaml`` runs ``Hub(config).run()`` until a signal.
It imports no gateway runtime and no driver: aiomqtt, microdot (the HTTP server),
aiohttp (the webhooks' client, when configured), pydantic, sqlite3, gateway.alarms
and the small shared modules.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.alarms.signing import check_secret
from gateway.alarms.manager import AlarmManager, Transition
from gateway.alarms.store import AlarmStore, StateFileError
from gateway.alarms.webhook import WebhookSender, endpoint_key
from gateway.clock import SystemClock
from gateway.errors import ConfigError
from gateway.hub.api import HubHttpServer, build_app, health_body
from gateway.config.advice import is_loopback
from gateway.config.models import ConsoleConfig, SiteInfo
from gateway.console.routes import add_console_routes
from gateway.hub.commands import MqttCommandSender
from gateway.hub.console_views import HubConsoleAlarms, HubConsoleDevices, HubConsoleSeam
from gateway.hub.config import HubConfig
from gateway.hub.alarm_sync import HubAlarmSync
from gateway.hub.history import HubHistory
from gateway.hub.link import HubLink
from gateway.hub.live import LivePicture
from gateway.hub.replicas import Replicas, delivery_key
from gateway.hub.view import HubAlarmsView
from gateway.hub.watch import GatewayWatch
from gateway.operations.systemd import SystemdNotifier, keep_alive
from gateway.views import Views

log = logging.getLogger(__name__)


class Hub:
    """Everything one hub runs; ``await run()`` until cancelled."""

    def __init__(self, config: HubConfig, *, clock=None, notifier: SystemdNotifier | None = None):
        self.config = config
        self.clock = clock or SystemClock()
        # Under systemd (deploy/community-gateway-hub.service, Type=notify): READY=1 once
        # the state is open, the watchdog pinged while the event loop runs.
        self.notifier = notifier if notifier is not None and notifier.enabled else None
        self.live = LivePicture(prefix=config.broker.prefix, scope=config.scope, clock=self.clock)
        self.history = HubHistory(path=config.history_path,
                                  retention_days=config.history.retention_days, clock=self.clock)
        self.alarms = AlarmManager(clock=self.clock, listeners=[_log_transition],
                                   escalate_after=config.alarms.escalate_after,
                                   max_shelve=config.alarms.max_shelve_minutes * 60)
        # The hub's own open alarms survive a restart, so a gateway still offline is not
        # raised (and sent by webhook) a second time.
        self.alarm_store = AlarmStore(state_dir=config.state_dir,
                                      history_days=config.history.retention_days,
                                      clock=self.clock)
        self.alarms.add_listener(self.alarm_store.on_transition)
        self.alarms.add_listener(self._record_own_transition)
        # Replicas of this hub (same hub id) agree on the broker which one sends webhooks;
        # each POST has an Idempotency-Key that is the same on every replica.
        self.replicas = Replicas(prefix=config.broker.prefix, hub_id=config.hub.id,
                                 client_id=config.client_id,
                                 heartbeat=config.broker.keepalive)
        # Operators' actions on the hub's own alarms, shared with the other replicas.
        self.alarm_sync = HubAlarmSync(prefix=config.broker.prefix, hub_id=config.hub.id,
                                       client_id=config.client_id, alarms=self.alarms,
                                       clock=self.clock)
        self.webhooks = []
        for i, w in enumerate(config.webhooks):
            webhook = WebhookSender(
                config=w, token=_reveal(w.token, f"webhooks[{i}].token"),
                delivery_key=lambda t, hub=config.hub.id: delivery_key(hub, t),
                on_done=self.replicas.done(endpoint_key(w.url)))
            self.replicas.attach(webhook)  # held until this replica knows it is the sender
            self.webhooks.append(webhook)
            # what another replica's operator did is that replica's to send
            self.alarms.add_listener(self.alarm_sync.local_only(webhook.on_transition))
        self.alarms.add_listener(self.replicas.on_transition)
        self.alarms.add_listener(self.alarm_sync.on_transition)  # after the webhooks'
        self.watch = GatewayWatch(live=self.live, alarms=self.alarms, config=config.alarms)
        self.view = HubAlarmsView(hub_id=config.hub.id, live=self.live, alarms=self.alarms,
                                  history=self.history,
                                  silent_after_intervals=config.alarms.silent_after_intervals,
                                  clock=self.clock)
        self.link = HubLink(config=config.broker, client_id=config.client_id,
                            password=_reveal(config.broker.password, "broker.password"),
                            on_message=self.on_message, begin_sync=self.live.begin_sync,
                            end_sync=self.live.end_sync, commands=config.commands is not None,
                            will=self.replicas.will(), on_connect=self._on_connect)
        self.commands = None
        if config.commands is not None:
            self.commands = MqttCommandSender(
                prefix=config.broker.prefix, key_id=config.commands.key_id,
                secret=_command_secret(config), publish=self.link.publish,
                confirm_timeout=config.commands.confirm_timeout)
            self.view.commands = self.commands
        self.http = None
        self.console_alarms: HubConsoleAlarms | None = None
        if config.http is not None:
            token = _reveal(config.http.token, "http.token")
            app = build_app(self.view, health=self.health, token=token,
                            reads_need_token=config.console is not None
                            or not is_loopback(config.http.host))
            if config.console is not None:
                self._add_console(app)
            self.http = HubHttpServer(config=config.http, app=app)

    def _add_console(self, app) -> None:
        """The gateway's console package, served over the hub's sites (gateway.views seams)."""
        config = self.config
        self.console_alarms = HubConsoleAlarms(
            self.view, max_shelve=config.alarms.max_shelve_minutes * 60)
        self.alarms.add_listener(self.console_alarms.on_own_transition)
        views = Views(site=SiteInfo(id=config.hub.id, name=config.hub.name or config.hub.id,
                                    language="zh" if config.hub.language == "zh" else "en"),
                      config_dir=config.console.users_file.parent,
                      console=ConsoleConfig(users_file=config.console.users_file),
                      alarms=self.console_alarms, devices=HubConsoleDevices(self.view),
                      clock=self.clock, http=config.http,
                      hub=HubConsoleSeam(self.view, name=config.hub.name))
        add_console_routes(app, views)

    async def _on_connect(self, client) -> None:
        """Before the sync marker: the replicas' presence, the shared hub alarm states."""
        await self.replicas.on_connect(client)
        await self.alarm_sync.on_connect(client)

    def on_message(self, topic: str, payload: bytes) -> None:
        """One message from the broker: the live picture, then the history."""
        if self.replicas.handles(topic):
            self.replicas.on_message(topic, payload)
            return
        if self.alarm_sync.handles(topic):
            self.alarm_sync.on_message(topic, payload)
            return
        for event in self.live.handle(topic, payload):
            self.history.add(site=event.site, place=event.place, body=event.body, raw=event.raw,
                             retained=event.retained)
            if self.console_alarms is not None and not event.retained:
                self.console_alarms.on_event(event)
        if self.commands is not None:
            self.commands.on_message(topic, payload)

    def health(self) -> tuple[bool, dict]:
        return health_body(hub=self.config.hub.id, connected=self.link.connected,
                           synced=self.link.synced.is_set(),
                           history_pending=self.history.pending,
                           extra={"sites": len(self.live.in_scope()),
                                  "messages": self.live.messages, "skipped": self.live.skipped,
                                  "history_written": self.history.written,
                                  "history_duplicates": self.history.duplicates,
                                  "webhook_sender": self.replicas.is_sender,
                                  "replicas_online": 1 + len(self.replicas.peers),
                                  "shared_alarm_states": self.alarm_sync.counts()})

    async def run(self) -> None:
        """Run until cancelled, then stop cleanly."""
        log.info("hub %s starting: scope %s, broker %s:%s", self.config.hub.id,
                 self.config.scope.describe(), self.config.broker.host, self.config.broker.port)
        try:
            await self.history.open()
            restored = self.alarms.restore(await self.alarm_store.open())
        except (OSError, StateFileError) as exc:
            raise ConfigError("hub", [("state_dir", f"{self.config.state_dir}: {exc}")]) from None
        except Exception as exc:  # sqlite3.Error from the history file
            raise ConfigError("hub", [("history.path", f"{self.config.history_path}: {exc}")]) from None
        if restored:
            log.info("hub: %d own alarms restored", len(restored))
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.history.run(), name="hub-history")
                tg.create_task(self.alarm_store.run(), name="hub-alarm-store")
                tg.create_task(self.link.run(), name="hub-mqtt")
                tg.create_task(self._timers(), name="hub-timers")
                tg.create_task(self.replicas.run(self.link.publish), name="hub-replicas")
                tg.create_task(self.alarm_sync.run(self.link.publish, self.link.synced.wait),
                               name="hub-alarm-sync")
                for i, webhook in enumerate(self.webhooks):
                    tg.create_task(webhook.run(), name=f"webhook[{i}]")
                if self.http is not None:
                    tg.create_task(self.http.run(), name="hub-http")
                if self.notifier is not None:
                    tg.create_task(self._systemd(), name="hub-systemd")
        finally:
            if self.notifier is not None:
                self.notifier.stopping()
            await self.alarm_store.close()
            await self.history.close()
            log.info("hub %s stopped", self.config.hub.id)

    async def _systemd(self) -> None:
        assert self.notifier is not None
        await asyncio.sleep(0)  # every task has started
        self.notifier.ready(self.status_line())
        await keep_alive(self.notifier, problem=lambda: None, status=self.status_line)

    def status_line(self) -> str:
        """What ``systemctl status`` shows."""
        role = "sends webhooks" if self.replicas.is_sender else "webhooks on standby"
        return (f"{len(self.live.in_scope())} sites, mqtt "
                f"{'connected' if self.link.connected else 'not connected'}, "
                f"{len(self.alarms.open_alarms())} hub alarms open, {role}")

    async def _timers(self) -> None:
        """Gateways offline or silent, then the hub alarms' shelving and escalation."""
        interval = self.config.alarms.tick_interval
        failing = False
        while True:
            await asyncio.sleep(interval)
            self.replicas.update(self.link.connected and self.link.synced.is_set())
            if not self.link.synced.is_set():
                continue  # the picture is being rebuilt: no state is known yet
            try:
                now = self.clock.time()
                self.watch.check(now)
                self.alarms.tick(now)
            except Exception:
                if not failing:
                    log.exception("hub: gateway watch failed; retrying every tick")
                failing = True
            else:
                failing = False

    def _record_own_transition(self, t: Transition) -> None:
        site = self.live.sites.get(t.alarm.get("device"))  # type: ignore[arg-type]
        place = site.place() if site is not None else {}
        self.history.add(site=str(t.alarm.get("device")), place=place, body=t.to_json(),
                         origin="hub")


def _reveal(secret, key: str) -> str | None:
    if secret is None:
        return None
    try:
        return secret.reveal()
    except ValueError as exc:
        raise ConfigError("hub", [(key, str(exc))]) from None


def _command_secret(config: HubConfig) -> str:
    secret = _reveal(config.commands.key, "commands.key")
    try:
        check_secret(secret or "")
    except ValueError as exc:
        raise ConfigError("hub", [("commands.key", str(exc))]) from None
    return secret


def _log_transition(t: Transition) -> None:
    alarm = t.alarm
    level = logging.WARNING if t.event in ("raised", "repeated", "escalated") else logging.INFO
    log.log(level, "hub alarm %s %s: %s", alarm.get("id"), t.event, alarm.get("message"))
