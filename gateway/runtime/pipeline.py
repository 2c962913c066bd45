"""The hot path: readings in, rules first, then alarms, actions and the upstream.

Drivers hand over a list of readings per poll. The bounded ingest queue pushes
back on drivers when full (a poll waits; counted in ``queue_full``): readings
are delayed, never silently lost. Rules run before any disk or network wait, so
an alarm never queues behind a slow uplink.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.runtime.actions import ActionRunner
from gateway.alarms.manager import AlarmManager
from gateway.config.loader import DeviceSpec
from gateway.config.rule_checks import targeted
from gateway.alarms.protection import Protections
from gateway.runtime.faults import FaultWatch
from gateway.log_limit import LogLimit, held_note
from gateway.runtime.messages import alarm_location, rule_message
from gateway.readings import DeviceEvent, Reading
from gateway.rules.engine import RuleChange, RuleEngine
from gateway.outbox.store import EVENT, READING
from gateway.outbox.writer import OutboxWriter
from gateway.upstream.line_protocol import LineEncoder
from gateway.upstream.telemetry_json import TelemetryEncoder

log = logging.getLogger(__name__)

# Readings processed between two yields to the event loop: ~1.5 ms of work on an idle
# x86 core (1,000 took ~5 ms, and a loaded core twice that: with a sink's step and a
# round of polls due in the same loop turn that broke the loop-lag target of issue 16).
BATCH_READINGS = 300


def _no_line(reading: Reading) -> str:
    return ""  # no sink reads line protocol: the outbox row carries the JSON only


class Pipeline:
    """Consumes the ingest queue; owns nothing that blocks."""

    def __init__(self, *, devices: dict[str, DeviceSpec], rules: RuleEngine,
                 alarms: AlarmManager, actions: ActionRunner, encoder: LineEncoder,
                 outbox: OutboxWriter | None, queue_size: int, language: str = "en",
                 telemetry: TelemetryEncoder | None = None,
                 upstream_ids: dict[str, str | None] | None = None,
                 faults: FaultWatch | None = None, protections: Protections | None = None,
                 lines: bool = True):
        self.devices = devices
        self.rules = rules
        self.alarms = alarms
        self.actions = actions
        self.encoder = encoder
        self.outbox = outbox
        self.telemetry = telemetry  # JSON per row, when a sink (MQTT telemetry) wants it
        # Line protocol per row only when a sink reads it (InfluxDB, local series):
        # encoding is most of the pipeline's time, wasted if nobody reads the lines.
        self.lines = lines
        self.language = language
        # Personal data: device -> the id it goes upstream as, None to keep it here
        # (gateway.runtime.privacy). Empty for most sites: one falsy check per reading.
        self.upstream_ids = upstream_ids or {}
        self._target_cache: dict[tuple[int, str], list[str]] = {}  # action targets by place
        self.faults = faults  # device_fault alarms from what profiles declare
        self.protections = protections  # arming groups (rules with armed_by)
        self.disarmed = 0  # rule conditions that raised nothing: their group was disarmed
        self.queue: asyncio.Queue[list[Reading | DeviceEvent]] = asyncio.Queue(maxsize=queue_size)
        self.latest: dict[tuple[str, int | None], Reading] = {}
        self.readings = 0
        self.events = 0
        self.queue_full = 0
        self.failed = 0  # items skipped because processing them raised
        self._failure_log = LogLimit()  # per device: the first traceback, then one a period

    def reconfigure(self, devices: dict[str, DeviceSpec], *, rules: RuleEngine | None,
                    removed: list[str], upstream_ids: dict[str, str | None] | None = None,
                    alias_specs: dict[str, DeviceSpec] | None = None,
                    faults: FaultWatch | None = None) -> None:
        """Take a reloaded config's devices and, when rules changed, its new rule engine
        (and what goes upstream as whom, and the fault watch for the new devices).

        Readings of a removed device may still be queued: its spec is kept for
        encoding them; its latest readings are forgotten.
        """
        gone = {d: self.devices[d] for d in removed if d in self.devices}
        self.devices = devices
        if rules is not None:
            self.rules = rules
        if upstream_ids is not None:
            self.upstream_ids = upstream_ids
        if faults is not None:
            self.faults = faults
        self._target_cache.clear()
        self.encoder.use_devices({**gone, **devices, **(alias_specs or {})})
        for key in [k for k in self.latest if k[0] in removed]:
            del self.latest[key]

    async def put(self, readings: list[Reading | DeviceEvent]) -> None:
        """Hand over one poll's readings and events (waits while the queue is full)."""
        if self.queue.full():
            self.queue_full += 1
        await self.queue.put(readings)

    async def run(self) -> None:
        """Process readings until cancelled."""
        queue = self.queue
        while True:
            batch = [await queue.get()]
            size = len(batch[0])
            while size < BATCH_READINGS and not queue.empty():
                item = queue.get_nowait()
                batch.append(item)
                size += len(item)
            self.process(batch)
            # A full queue never suspends ``get``: yield, so polls, timers and sinks run
            # between batches instead of waiting for the whole queue (no loop stalls).
            await asyncio.sleep(0)

    def drain(self) -> None:
        """Process whatever is queued now (at shutdown)."""
        batch = []
        while not self.queue.empty():
            batch.append(self.queue.get_nowait())
        self.process(batch)

    def process(self, batch: list[list[Reading | DeviceEvent]]) -> None:
        """Rules, then alarms and actions, then the outbox (staged, committed by its writer)."""
        rows = []  # (kind, device, ts, line, doc) for the outbox
        latest = self.latest
        evaluate = self.rules.evaluate
        encode = self.encoder.encode if self.lines else _no_line
        doc = self.telemetry.reading if self.telemetry is not None else None
        private = self.upstream_ids
        faults = self.faults
        fault_devices = faults.watched if faults is not None else frozenset()
        for readings in batch:
            for reading in readings:
                # One bad item (or a bug it hits) costs that item's step only: a rule
                # that raises must not keep the reading from the upstream, nor stop us.
                if type(reading) is not Reading:
                    try:
                        row = self._event(reading)  # type: ignore[arg-type]
                    except Exception:
                        self._failed(reading)
                        continue
                    if row is not None:
                        rows.append(row)
                    continue
                broken = False
                try:
                    changes = evaluate(reading)
                    if changes:
                        for change in changes:
                            self._apply(change)
                    if fault_devices and reading.device in fault_devices:
                        faults.reading(reading)  # type: ignore[union-attr]
                except Exception:
                    broken = True
                try:
                    latest[(reading.device, reading.channel)] = reading
                    out: Reading | None = reading
                    if private and reading.device in private:  # personal data
                        alias = private[reading.device]
                        out = None if alias is None else Reading(alias, reading.channel,
                                                                 reading.values, reading.ts)
                    if out is not None:
                        line = encode(out)
                        if line is not None:
                            rows.append((READING, out.device, out.ts, line,
                                         doc(out) if doc is not None else None))
                    self.readings += 1
                except Exception:
                    broken = True
                if broken:
                    self._failed(reading)
        if rows and self.outbox is not None:
            self.outbox.add(rows)

    def _failed(self, item: Reading | DeviceEvent) -> None:
        self.failed += 1
        device = getattr(item, "device", "?")
        held = self._failure_log.allow(device)
        if held is not None:
            log.exception("pipeline: %r from %s skipped%s", item, device, held_note(held))

    def _event(self, event: DeviceEvent) -> tuple | None:
        self.events += 1
        try:
            for change in self.rules.evaluate_event(event):
                self._apply(change)
            if self.faults is not None and event.device in self.faults.watched:
                self.faults.event(event)
        except Exception:  # the event still goes upstream: it may be evidence
            self._failed(event)
        if self.upstream_ids and event.device in self.upstream_ids:
            alias = self.upstream_ids[event.device]
            if alias is None:
                return None
            event = DeviceEvent(alias, event.channel, event.name, event.ts, event.attrs)
        line = self.encoder.encode_event(event) if self.lines else ""
        if line is None:
            return None
        doc = self.telemetry.event(event) if self.telemetry is not None else None
        return (EVENT, event.device, event.ts, line, doc)

    def tick(self, now: float) -> None:
        """The timer: rules due by time alone (held, absence, confirm, grace), then the
        alarms' shelving and escalation. Called every ``alarms.tick_interval``."""
        for change in self.rules.tick(now):
            self._apply(change)
        self.alarms.tick(now)

    def _apply(self, change: RuleChange) -> None:
        rule = change.rule
        if (change.active and rule.armed_by is not None and self.protections is not None
                and not self.protections.armed(rule.armed_by, change.ts)):
            self.disarmed += 1  # an intrusion zone while disarmed: no alarm, no siren
            return
        spec = self.devices.get(change.device)
        if rule.alarm:
            if change.active:
                message = rule_message(rule, language=self.language, spec=spec,
                                       device=change.device, channel=change.channel,
                                       field=change.field, value=change.value,
                                       details=change.details)
                self.alarms.activate(
                    rule=rule.id, severity=change.severity or rule.severity, device=change.device,
                    kind=spec.kind if spec else "unknown", channel=change.channel,
                    location=alarm_location(spec, change.channel), message=message,
                    value=change.value, ts=change.ts, latch=rule.latch,
                    momentary=change.momentary, details=change.details,
                    escalate_after=rule.escalate_after, reset_needs_note=rule.reset_needs_note)
            else:
                self.alarms.deactivate(rule=rule.id, device=change.device,
                                       channel=change.channel, value=change.value, ts=change.ts)
        elif change.active:
            log.info("rule %s on %s channel %s: %s = %s", rule.id, change.device,
                     change.channel, change.field, change.value)
        if not change.active:
            return
        for action in rule.actions:
            for target in self._targets(action, change.device):
                target_spec = self.devices.get(target)
                if action.channels == "all" and target_spec is not None:
                    channels: list[int | None] = (list(range(1, target_spec.channel_count + 1))
                                                  or [None])
                elif isinstance(action.channels, int):
                    channels = [action.channels]
                else:
                    channels = [change.channel]
                for channel in channels:
                    self.actions.submit(target, channel, action.write, action.value,
                                        revert_after=action.for_, revert_value=action.revert_value)

    def _targets(self, action, source: str) -> list[str]:
        """The devices an action writes to, for an alarm of ``source``."""
        if action.targets is None:
            return [action.device or source]
        key = (id(action), source)
        found = self._target_cache.get(key)
        if found is None:
            spec = self.devices.get(source)
            found = self._target_cache[key] = [
                d.id for d in self.devices.values()
                if action.write in d.writable and targeted(action.targets, d, spec)]
        return found
