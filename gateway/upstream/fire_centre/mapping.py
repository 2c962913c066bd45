"""From the gateway's alarms and readings to GB/T 26875.3 information objects.

Each configured component has a state word (bit 0 "normal running" always set, as
the gateway never puts a component in test mode). A mapped alarm sets its bit while
it is open and ``active`` (a latched smoke alarm stays a fire alarm until an operator
resets it, as on a fire panel); a shelved alarm also sets ``shielded``. A component's
system state is the OR of its components' words; the transmission device's own
state says fire or fault when any component does.

Only changes are reported: a transition that leaves every word as it was sends
nothing, except the operators' acknowledgements and resets, which are operation
records (type 4) of the component's system.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.config.fire_centre import FireCentreConfig, FireComponent
from drivers import gb26875 as codec
from drivers.gb26875 import (ComponentAnalog, ComponentState, DeviceState,
                                                Operation, SystemState, TypeFlag)

NORMAL = 1 << codec.STATE_BITS["normal"]
FIRE = 1 << codec.STATE_BITS["fire_alarm"]
FAULT = 1 << codec.STATE_BITS["fault"]
SHIELDED = 1 << codec.STATE_BITS["shielded"]
_OPERATIONS = {"reset": 1 << codec.OPERATION_BITS["reset"],
               "acked": 1 << codec.OPERATION_BITS["confirm"]}

Unit = tuple[int, list]  # (type flag, objects) of one application data unit


@dataclass(frozen=True, slots=True)
class AlarmView:
    """The parts of an alarm the mapping reads, from a transition or a restored alarm."""

    id: str
    rule: str
    device: str
    channel: int | None
    active: bool
    shelved: bool


def component_key(c: FireComponent) -> str:
    """How a component is named in the state kept across restarts."""
    return f"{c.system_type}.{c.system_address}.{c.component_address}"


class FireMapping:
    """The state words of the configured components, and the objects that report them."""

    def __init__(self, config: FireCentreConfig):
        self.config = config
        self.components = list(config.components)
        self._offset = config.utc_offset_hours * 3600
        self._alarms: dict[int, dict[str, int]] = {i: {} for i in range(len(self.components))}
        self._by_device: dict[str, list[int]] = {}
        for i, c in enumerate(self.components):
            self._by_device.setdefault(c.device, []).append(i)
        self.unmapped = 0  # transitions of alarms no component takes

    def tag(self, ts: float) -> bytes:
        """The time tag of ``ts`` in the site's local time."""
        return codec.time_tag(ts, self._offset)

    # -- state words ---------------------------------------------------------------------

    def word(self, i: int) -> int:
        """Component ``i``'s state word now."""
        word = NORMAL
        for bits in self._alarms[i].values():
            word |= bits
        return word

    def words(self) -> dict[str, int]:
        """Every component's state word, by ``component_key``."""
        return {component_key(c): self.word(i) for i, c in enumerate(self.components)}

    def system_words(self) -> dict[tuple[int, int], int]:
        """Each configured system's state word (OR of its components')."""
        out: dict[tuple[int, int], int] = {}
        for i, c in enumerate(self.components):
            key = (c.system_type, c.system_address)
            out[key] = out.get(key, NORMAL) | self.word(i)
        return out

    def device_word(self) -> int:
        """The transmission device's running state (type 21)."""
        word = 1 << codec.DEVICE_STATE_BITS["normal"]
        any_word = 0
        for i in range(len(self.components)):
            any_word |= self.word(i)
        if any_word & FIRE:
            word |= 1 << codec.DEVICE_STATE_BITS["fire_alarm"]
        if any_word & FAULT:
            word |= 1 << codec.DEVICE_STATE_BITS["fault"]
        return word

    def apply(self, alarm: AlarmView, closed: bool = False) -> list[int]:
        """Record an alarm's state; return the components whose word it may change."""
        touched = []
        for i in self._by_device.get(alarm.device, ()):
            c = self.components[i]
            bit_name = c.alarms.get(alarm.rule)
            if bit_name is None or (c.channel is not None and c.channel != alarm.channel):
                continue
            touched.append(i)
            bits = 0
            if not closed:
                if alarm.active:
                    bits |= 1 << codec.STATE_BITS[bit_name]
                if alarm.shelved:
                    bits |= SHIELDED
            if bits:
                self._alarms[i][alarm.id] = bits
            else:
                self._alarms[i].pop(alarm.id, None)
        if not touched:
            self.unmapped += 1
        return touched

    # -- information objects -------------------------------------------------------------

    def component_state(self, i: int, ts: float) -> ComponentState:
        c = self.components[i]
        return ComponentState(c.system_type, c.system_address, c.component_type,
                              c.component_address, self.word(i), c.description, self.tag(ts))

    def changes(self, before: dict[str, int], ts: float) -> list[Unit]:
        """Units reporting what differs from the words in ``before`` (component, system,
        device), oldest-first order the centre should see them in."""
        units: list[Unit] = []
        comps = [self.component_state(i, ts) for i, c in enumerate(self.components)
                 if before.get(component_key(c)) != self.word(i)]
        units += _chunks(TypeFlag.COMPONENT_STATE, comps)
        systems = [SystemState(st, sa, w, self.tag(ts))
                   for (st, sa), w in sorted(self.system_words().items())
                   if before.get(f"system.{st}.{sa}") != w]
        units += _chunks(TypeFlag.SYSTEM_STATE, systems)
        if before.get("device") != self.device_word():
            units.append((TypeFlag.DEVICE_STATE, [DeviceState(self.device_word(), self.tag(ts))]))
        return units

    def snapshot(self) -> dict[str, int]:
        """Every word (components, systems, device), as ``changes`` compares them."""
        out = self.words()
        out.update({f"system.{st}.{sa}": w for (st, sa), w in self.system_words().items()})
        out["device"] = self.device_word()
        return out

    def operation(self, alarm: AlarmView, event: str, by: str | None, ts: float) -> list[Unit]:
        """An operator's acknowledgement or reset of a mapped alarm, as an operation record."""
        flags = _OPERATIONS.get(event)
        if flags is None:
            return []
        systems = {(self.components[i].system_type, self.components[i].system_address)
                   for i in self._by_device.get(alarm.device, ())
                   if alarm.rule in self.components[i].alarms}
        operator = self.config.operators.get(by or "", 0)
        ops = [Operation(st, sa, flags, operator, self.tag(ts)) for st, sa in sorted(systems)]
        return _chunks(TypeFlag.OPERATION, ops)

    def analog(self, i: int, value: float, ts: float) -> ComponentAnalog:
        """Component ``i``'s analog value in counts of its type's resolution (int16)."""
        c = self.components[i]
        assert c.analog is not None
        code, _unit, resolution = codec.ANALOG_TYPES[c.analog.type]
        counts = max(-32768, min(32767, round(value / resolution)))
        return ComponentAnalog(c.system_type, c.system_address, c.component_type,
                               c.component_address, code, counts, self.tag(ts))


def _chunks(flag: int, objects: list) -> list[Unit]:
    limit = min(255, codec.MAX_OBJECTS[flag])
    return [(flag, objects[k:k + limit]) for k in range(0, len(objects), limit)]


def view_of_transition(alarm: dict, record: dict | None) -> AlarmView:
    """An AlarmView from a transition's alarm JSON (and its record, which has the channel)."""
    channel = record.get("channel") if record else None
    return AlarmView(id=str(alarm["id"]), rule=str(alarm["rule"]), device=str(alarm["device"]),
                     channel=channel if isinstance(channel, int) else None,
                     active=alarm.get("state") == "active",
                     shelved=bool(alarm.get("shelved_until")))


def views_of_alarms(alarms: Iterable) -> list[AlarmView]:
    """AlarmViews of open Alarm objects (restored at start)."""
    return [AlarmView(a.id, a.rule, a.device, a.channel, a.state == "active",
                      a.shelved_until is not None) for a in alarms]
