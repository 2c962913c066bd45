"""The gateway as a user information transmission device: what it reports, and when.

- Alarm transitions (an AlarmManager listener) become component states (type 2),
  system states (type 1), the device's own state (type 21) when a word changes,
  and operation records (type 4) for an operator's acknowledgement or reset; each
  is queued durably before the listener returns.
- At every start: the words the open alarms give now, compared with the words
  last reported (kept in the queue's file), so a change made while the gateway
  was down is reported too; then the device's state and software version.
- Analog values (type 3) for components with ``analog``, from the pipeline's
  latest readings, every ``analog.interval`` seconds when a newer reading exists.
- The centre's requests: read device state (81), version (85), time (88), system
  states (61), component states (62) and analog values (63); its commands: set
  time (90, only with ``allow_set_time``), inspection (91, confirmed and logged).
  Anything else is denied.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from importlib import metadata
from pathlib import Path
from typing import Any

from gateway.config.fire_centre import FireCentreConfig
from drivers import gb26875 as codec
from drivers.gb26875 import Command, Frame, FrameError, TypeFlag
from gateway.upstream.fire_centre.link import FireCentreLink
from gateway.upstream.fire_centre.mapping import (FireMapping, Unit, view_of_transition,
                                                  views_of_alarms)
from gateway.upstream.fire_centre.queue import FILE_NAME, FrameQueue

log = logging.getLogger(__name__)

_WORDS_KEY = "reported_words"
RETRY_WRITE_SECONDS = 5.0  # after the queue's file failed a write (disk full, read-only)
_KINDS = {TypeFlag.COMPONENT_STATE: "component_state", TypeFlag.SYSTEM_STATE: "system_state",
          TypeFlag.DEVICE_STATE: "device_state", TypeFlag.OPERATION: "operation",
          TypeFlag.COMPONENT_ANALOG: "analog", TypeFlag.DEVICE_VERSION: "version"}


def software_version() -> tuple[int, int]:
    """The gateway's version as the (major, minor) the protocol carries."""
    try:
        parts = metadata.version("community-gateway").split(".")
        return int(parts[0]) % 256, int(parts[1]) % 256
    except (metadata.PackageNotFoundError, ValueError, IndexError):
        return 0, 0


class FireCentreService:
    """The mapping, the durable queue and the link, for one site."""

    def __init__(self, *, config: FireCentreConfig, state_dir: Path, clock, alarms,
                 latest: dict | None = None):
        self.config = config
        self.clock = clock
        self.alarms = alarms  # the AlarmManager: open alarms at start
        self.latest = latest if latest is not None else {}  # pipeline.latest: (device, ch) -> Reading
        self.mapping = FireMapping(config)
        self.queue = FrameQueue(path=Path(state_dir) / FILE_NAME)
        self.link = FireCentreLink(config=config, queue=self.queue, answer=self.answer, clock=clock)
        self._offset = config.utc_offset_hours * 3600
        self._analog_sent: dict[int, float] = {}  # component index -> reading ts last sent
        self._started = False
        self._unwritten: list[tuple[str, bytes]] = []  # (kind, data unit) a failed write left
        self.write_errors = 0
        self.time_syncs = 0
        self.inspections = 0

    # -- from the alarm manager ------------------------------------------------------------

    def on_transition(self, t) -> None:
        """Alarm manager listener: queue what this transition changes at the centre."""
        self._report_start()  # a transition may come before run() (the pipeline starts first)
        view = view_of_transition(t.alarm, t.record)
        before = self.mapping.snapshot()
        if not self.mapping.apply(view, closed=t.event == "closed"):
            return
        units = self.mapping.operation(view, t.event, t.by, t.ts)
        units += self.mapping.changes(before, t.ts)
        self._enqueue(units)

    def _enqueue(self, units: list[Unit], *, save_words: bool = True) -> None:
        new = [(_KINDS.get(flag, str(flag)), codec.encode_unit(flag, objects)) for flag, objects in units]
        if not new and not self._unwritten:
            return
        # Units a failed write left behind go first, so the centre still sees them in order.
        pending = self._unwritten + new
        try:
            self.queue.append([(kind, self._maker(data)) for kind, data in pending],
                              self.clock.time())
            if save_words:
                self.queue.save(_WORDS_KEY, self.mapping.snapshot())
        except (sqlite3.Error, OSError) as exc:
            self.write_errors += 1
            if not self._unwritten:
                log.error("fire centre queue %s: cannot write (%s); %d units held in memory and "
                          "retried", self.queue.path, exc, len(pending))
            self._unwritten = pending
            return
        if self._unwritten:
            log.info("fire centre queue %s: written again (%d units held meanwhile)",
                     self.queue.path, len(self._unwritten))
            self._unwritten = []
        self.link.wake()

    async def _retry_writes(self) -> None:
        while True:
            await asyncio.sleep(RETRY_WRITE_SECONDS)
            if self._unwritten:
                self._enqueue([])

    def _maker(self, data: bytes):
        return lambda seq: self.link.frame(seq, Command.SEND, data)

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Report the state at start, then keep the link and the analog values going."""
        self._report_start()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.link.run(), name="fire-centre.link")
            tg.create_task(self._retry_writes(), name="fire-centre.retry-writes")
            if any(c.analog is not None for c in self.mapping.components):
                tg.create_task(self._analog_loop(), name="fire-centre.analog")

    def _report_start(self) -> None:
        """Once per start, before anything else is reported: take the open alarms (restored
        from the state file), report every word that differs from the last reported, then
        the device's state and version."""
        if self._started:
            return
        self._started = True
        now = self.clock.time()
        for view in views_of_alarms(self.alarms.open_alarms()):
            self.mapping.apply(view)
        try:
            saved = self.queue.load(_WORDS_KEY)
        except (sqlite3.Error, OSError) as exc:  # report every word rather than none
            log.error("fire centre queue %s: cannot read the words last reported: %s",
                      self.queue.path, exc)
            saved = None
        units = self.mapping.changes(saved if isinstance(saved, dict) else {}, now)
        if not any(flag == TypeFlag.DEVICE_STATE for flag, _ in units):
            units.append((TypeFlag.DEVICE_STATE,
                          [codec.DeviceState(self.mapping.device_word(), self.mapping.tag(now))]))
        units.append((TypeFlag.DEVICE_VERSION, [codec.Version(*software_version())]))
        self._enqueue(units)

    def close(self) -> None:
        """Close the queue's file (after the last alarm transitions of a stop)."""
        self.queue.close()

    async def _analog_loop(self) -> None:
        comps = [(i, c) for i, c in enumerate(self.mapping.components) if c.analog is not None]
        tick = min(c.analog.interval for _, c in comps)  # type: ignore[union-attr]
        due = dict.fromkeys(range(len(self.mapping.components)), 0.0)
        while True:
            now = self.clock.time()
            objects = []
            for i, c in comps:
                if now < due[i]:
                    continue
                reading = self.latest.get((c.device, c.channel))
                value = reading.values.get(c.analog.field) if reading is not None else None  # type: ignore[union-attr]
                if value is None or reading.ts <= self._analog_sent.get(i, 0.0):
                    continue
                objects.append(self.mapping.analog(i, float(value), reading.ts))
                self._analog_sent[i] = reading.ts
                due[i] = now + c.analog.interval  # type: ignore[union-attr]
            if objects:
                self._enqueue([(TypeFlag.COMPONENT_ANALOG, objects)], save_words=False)
            await asyncio.sleep(tick)

    # -- the centre's requests -------------------------------------------------------------

    def answer(self, frame: Frame) -> Frame | None:
        """Our answer to a frame the centre started (None: deny it)."""
        now = self.clock.time()
        tag = self.mapping.tag(now)
        if frame.command == Command.SEND:  # the centre sending data: take it, confirm
            return frame.answer(Command.CONFIRM, time=tag)
        try:
            flag, objects = codec.decode_unit(frame.data)
        except FrameError as exc:
            log.warning("fire centre: request seq %d does not parse (%s); denied", frame.seq, exc)
            return None
        if frame.command == Command.REQUEST:
            unit = self._read(flag, objects, now)
            if unit is None:
                log.info("fire centre: request type %d not answered; denied", flag)
                return None
            return frame.answer(Command.RESPONSE, time=tag, data=codec.encode_unit(*unit))
        if frame.command == Command.CONTROL:
            return self._control(frame, flag, objects, now)
        return None

    def _read(self, flag: int, objects: list, now: float) -> Unit | None:
        m = self.mapping
        tag = m.tag(now)
        if flag == TypeFlag.READ_DEVICE_STATE:
            return TypeFlag.DEVICE_STATE, [codec.DeviceState(m.device_word(), tag)]
        if flag == TypeFlag.READ_DEVICE_VERSION:
            return TypeFlag.DEVICE_VERSION, [codec.Version(*software_version())]
        if flag == TypeFlag.READ_DEVICE_TIME:
            return TypeFlag.DEVICE_TIME, [codec.DeviceTime(tag)]
        if flag == TypeFlag.READ_SYSTEM_STATE:
            words = m.system_words()
            found = [codec.SystemState(o.system_type, o.system_address,
                                       words[(o.system_type, o.system_address)], tag)
                     for o in objects if (o.system_type, o.system_address) in words]
            return (TypeFlag.SYSTEM_STATE, found) if found else None
        if flag in (TypeFlag.READ_COMPONENT_STATE, TypeFlag.READ_COMPONENT_ANALOG):
            found = []
            for o in objects:
                for i, c in enumerate(m.components):
                    if (c.system_type, c.system_address, c.component_address) != \
                            (o.system_type, o.system_address, o.component_address):
                        continue
                    if flag == TypeFlag.READ_COMPONENT_STATE:
                        found.append(m.component_state(i, now))
                    elif c.analog is not None:
                        reading = self.latest.get((c.device, c.channel))
                        value = reading.values.get(c.analog.field) if reading else None
                        if value is not None:
                            found.append(m.analog(i, float(value), reading.ts))
            out_flag = (TypeFlag.COMPONENT_STATE if flag == TypeFlag.READ_COMPONENT_STATE
                        else TypeFlag.COMPONENT_ANALOG)
            return (out_flag, found) if found else None
        return None

    def _control(self, frame: Frame, flag: int, objects: list, now: float) -> Frame | None:
        tag = self.mapping.tag(now)
        if flag == TypeFlag.SET_DEVICE_TIME and objects:
            if not self.config.allow_set_time:
                log.info("fire centre: time sync refused (allow_set_time is off)")
                return None
            try:
                theirs = codec.tag_time(objects[0].time, self._offset)
            except FrameError:
                return None
            self.time_syncs += 1
            log.info("fire centre: time sync to %s confirmed; our clock differs by %.0f s "
                     "(NTP keeps the gateway's clock)", codec.tag_text(objects[0].time), now - theirs)
            return frame.answer(Command.CONFIRM, time=tag)
        if flag == TypeFlag.INSPECTION:
            self.inspections += 1
            log.warning("fire centre: inspection call (查岗) received and confirmed")
            return frame.answer(Command.CONFIRM, time=tag)
        return None

    def stats(self) -> dict[str, Any]:
        """The link's counters plus the service's own."""
        out = self.link.stats()
        out.update(write_errors_total=self.write_errors, time_syncs_total=self.time_syncs,
                   inspections_total=self.inspections, unmapped_transitions_total=self.mapping.unmapped)
        return out
