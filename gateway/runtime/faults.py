"""Device faults as one thing: what profiles declare becomes ``device_fault`` alarms.

A profile's ``faults`` (gateway.device_faults) say which field bits, codes, flags or
events mean that the device itself is faulty. This watch sees every reading and
event of such devices and keeps one alarm per (device, channel, fault), rule
``device_fault:<fault>`` at level 3, raised while the fault is reported and
cleared when it is not, whatever transport the device speaks.
"""

from __future__ import annotations

import re

from gateway.alarms.manager import AlarmManager
from gateway.config.loader import DeviceSpec
from gateway.readings import DeviceEvent, Reading
from gateway.runtime.messages import alarm_location, place_text

DEVICE_FAULT = "device_fault"
SEVERITY = 3
_MESSAGES = {"en": "Device fault at {place} ({device}): {fault}",
             "zh": "{place}（{device}）设备故障：{fault}"}


def fault_rule(fault: str) -> str:
    """The alarm rule id of a fault: ``device_fault:low_battery``."""
    return f"{DEVICE_FAULT}:{re.sub(r'[^a-z0-9]+', '_', fault.lower()).strip('_') or 'unknown'}"


class FaultWatch:
    """Raises and clears device_fault alarms from readings and events."""

    def __init__(self, devices: dict[str, DeviceSpec], alarms: AlarmManager, language: str = "en"):
        self._devices = devices
        self._alarms = alarms
        self._language = language if language in _MESSAGES else "en"
        self.watched = frozenset(d for d, spec in devices.items() if spec.faults)
        self._active: dict[tuple[str, int | None], set[str]] = {}

    def with_devices(self, devices: dict[str, DeviceSpec]) -> "FaultWatch":
        """The watch for a reloaded config: the faults still reported are carried over."""
        watch = FaultWatch(devices, self._alarms, self._language)
        watch._active = {k: v for k, v in self._active.items() if k[0] in devices}
        return watch

    def reading(self, reading: Reading) -> None:
        """The faults a reading's fields show, against those shown before."""
        spec = self._devices[reading.device]
        values = reading.values
        for source in spec.faults:
            if source.field is None or source.field not in values:
                continue
            if source.channel is not None and source.channel != reading.channel:
                continue
            now = set(source.active(values[source.field]))
            for fault in source.names():
                self._set(spec, reading.channel, fault, fault in now, reading.ts,
                          values[source.field])

    def event(self, event: DeviceEvent) -> None:
        """An event that raises or clears a declared fault."""
        spec = self._devices[event.device]
        for source in spec.faults:
            if source.event is None or source.fault is None:
                continue
            if event.name == source.event:
                self._set(spec, event.channel, source.fault, True, event.ts, None)
            elif event.name == source.clear_on:
                self._set(spec, event.channel, source.fault, False, event.ts, None)

    def restore(self, device: str, channel: int | None, rule: str) -> bool:
        """A fault alarm open at the last stop: the next report that lacks it clears it."""
        spec = self._devices.get(device)
        if spec is None:
            return False
        for source in spec.faults:
            for fault in source.names():
                if fault_rule(fault) == rule:
                    self._active.setdefault((device, channel), set()).add(fault)
                    return True
        return False

    def _set(self, spec: DeviceSpec, channel: int | None, fault: str, on: bool, ts: float,
             value: float | None) -> None:
        key = (spec.id, channel)
        active = self._active.setdefault(key, set())
        if on == (fault in active):
            return
        rule = fault_rule(fault)
        if on:
            active.add(fault)
            location = alarm_location(spec, channel)
            place = place_text(location, self._language, spec.channel_name) or spec.id
            message = _MESSAGES[self._language].format(place=place, device=spec.id, fault=fault)
            self._alarms.activate(rule=rule, severity=SEVERITY, device=spec.id, kind=spec.kind,
                                  channel=channel, location=location, message=message,
                                  value=value, ts=ts, details={"fault": fault})
        else:
            active.discard(fault)
            self._alarms.deactivate(rule=rule, device=spec.id, channel=channel, value=value, ts=ts)
