"""The hot path: readings in, rules first, then alarms, actions and the upstream.

Drivers hand over a list of readings per poll. The bounded ingest queue pushes
back on drivers when full (a poll waits; counted in ``queue_full``): readings
are delayed, never silently lost. Rules run before any disk or network wait, so
an alarm never queues behind a slow uplink.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.actions import ActionRunner
from gateway.alarms.manager import AlarmManager
from gateway.config.loader import DeviceSpec
from gateway.messages import alarm_location, render
from gateway.readings import DeviceEvent, Reading
from gateway.rules.engine import RuleChange, RuleEngine
from gateway.upstream.line_protocol import LineEncoder
from gateway.upstream.sink_runner import SinkRunner

log = logging.getLogger(__name__)


class Pipeline:
    """Consumes the ingest queue; owns nothing that blocks."""

    def __init__(self, *, devices: dict[str, DeviceSpec], rules: RuleEngine,
                 alarms: AlarmManager, actions: ActionRunner, encoder: LineEncoder,
                 sinks: list[SinkRunner], queue_size: int, language: str = "en"):
        self.devices = devices
        self.rules = rules
        self.alarms = alarms
        self.actions = actions
        self.encoder = encoder
        self.sinks = sinks
        self.language = language
        self.queue: asyncio.Queue[list[Reading | DeviceEvent]] = asyncio.Queue(maxsize=queue_size)
        self.latest: dict[tuple[str, int | None], Reading] = {}
        self.readings = 0
        self.events = 0
        self.queue_full = 0

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
            while not queue.empty() and len(batch) < 256:
                batch.append(queue.get_nowait())
            self.process(batch)

    def drain(self) -> None:
        """Process whatever is queued now (at shutdown)."""
        batch = []
        while not self.queue.empty():
            batch.append(self.queue.get_nowait())
        self.process(batch)

    def process(self, batch: list[list[Reading | DeviceEvent]]) -> None:
        """Rules, then alarms and actions, then the upstream buffers."""
        lines = []
        latest = self.latest
        evaluate = self.rules.evaluate
        encode = self.encoder.encode
        for readings in batch:
            for reading in readings:
                if type(reading) is not Reading:
                    line = self._event(reading)  # type: ignore[arg-type]
                    if line is not None:
                        lines.append(line)
                    continue
                changes = evaluate(reading)
                if changes:
                    for change in changes:
                        self._apply(change)
                latest[(reading.device, reading.channel)] = reading
                line = encode(reading)
                if line is not None:
                    lines.append(line)
                self.readings += 1
        if lines:
            for sink in self.sinks:
                sink.offer(lines)

    def _event(self, event: DeviceEvent) -> str | None:
        self.events += 1
        for change in self.rules.evaluate_event(event):
            self._apply(change)
        return self.encoder.encode_event(event)

    def _apply(self, change: RuleChange) -> None:
        rule = change.rule
        spec = self.devices.get(change.device)
        if rule.alarm:
            if change.active:
                message = render(rule.message, language=self.language, rule=rule.id, spec=spec,
                                 device=change.device, channel=change.channel,
                                 field=change.field, value=change.value)
                self.alarms.activate(
                    rule=rule.id, severity=rule.severity, device=change.device,
                    kind=spec.kind if spec else "unknown", channel=change.channel,
                    location=alarm_location(spec, change.channel), message=message,
                    value=change.value, ts=change.ts, latch=rule.latch)
            else:
                self.alarms.deactivate(rule=rule.id, device=change.device,
                                       channel=change.channel, value=change.value, ts=change.ts)
        elif change.active:
            log.info("rule %s on %s channel %s: %s = %s", rule.id, change.device,
                     change.channel, change.field, change.value)
        if not change.active:
            return
        for action in rule.actions:
            target = action.device or change.device
            target_spec = self.devices.get(target)
            if action.channels == "all" and target_spec is not None:
                channels: list[int | None] = list(range(1, target_spec.channel_count + 1)) or [None]
            else:
                channels = [change.channel]
            for channel in channels:
                self.actions.submit(target, channel, action.write, action.value)
