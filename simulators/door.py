"""A simulated door-access system: a Modbus door I/O module plus an access terminal on MQTT.

The I/O module is what the gateway polls (profile ``door-io``): per door a contact
(discrete input 2(d-1), 1 = open), an exit button (input 2(d-1)+1) and a lock
relay (coil d-1, 1 = locked). It is served by ``simulators.modbus_server``'s
server, like the charging cabinet. The terminal is the door's controller as the
gateway hears it (profile ``access-terminal``): JSON events on
``access/<terminal id>/events`` with the controller codes of shared/devices.md
(1 granted, 20 exit button, 6/7/8/15 denied, 23/24 door opened/closed,
34 duress, ``tamper``) and a heartbeat with ``uptime``.

Both halves act together, as one installation would: a granted card or the exit
button releases the lock for a few seconds and the terminal reports it; the
person opens the door (contact) and the terminal reports the door opening and
closing. A forced door opens the contact with the lock still locked and no grant.

Scenarios (``SCENARIOS``) run in the background; tests and the demo can also
drive single actions (``swipe``, ``press_exit``, ``walk_through``, ``force_open``,
``hold_open``, ``deny``, ``duress``, ``tamper``). Faults: ``silence`` (the module
stops answering and the terminal stops publishing) and ``malformed`` (the
terminal also sends a truncated JSON copy and a message with no content after
each real one).

By hand: ``community-gateway simulate door --scenario forced --broker 127.0.0.1:1883``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Callable

from gateway.clock import SystemClock
from simulators.background import cancel_and_wait
from simulators.modbus_server import CabinetServer as ModbusSimServer
from simulators.mqtt_publisher import MqttPublisher, check_fault, iso_ms

SCENARIOS: dict[str, str] = {
    "normal": "a normal day: cards granted, exit button, an occasional wrong card",
    "forced": "at the incident time the incident door is forced open (no grant) for 5 s",
    "held": "at the incident time a granted door is held open for held_s (default 150 s)",
    "denials": "at the incident time one card is denied five times in a row at the incident door",
    "duress": "at the incident time a resident enters under duress (duress PIN)",
    "tamper": "at the incident time the terminal reports reader tamper",
    "tour": "forced door, five denials, duress and tamper, 30 s apart from the incident time",
    "idle": "nothing but heartbeats (drive it from code)",
}
TOUR_GAP_S = 30.0

# code -> reason, as shared/devices.md lists them
DENIAL_CODES = {6: "no permission", 7: "wrong PIN", 8: "anti-passback", 15: "outside schedule"}
GRANTED, EXIT_BUTTON, DOOR_OPENED, DOOR_CLOSED, DURESS = 1, 20, 23, 24, 34
# Residents' cards (fake): card number -> person id.
RESIDENTS = {f"{10_000_000 + 7919 * i:08d}": f"P{i:04d}" for i in range(1, 41)}
STRANGER_CARD = "87654321"


class DoorModel:
    """The I/O module's state as its Modbus tables show it; pure, no I/O.

    Speaks the table interface ``simulators.modbus_server`` serves (``slave_ids``,
    ``read_table``, ``write_coil``, ``write_holding``, ``silent``).
    """

    def __init__(self, doors: int = 2, *, slave: int = 1):
        if not 1 <= doors <= 64:
            raise ValueError("doors must be 1..64")
        self.doors = doors
        self.slave = slave
        self._open = [False] * doors
        self._exit = [False] * doors
        self._locked = [True] * doors
        self.silent = False

    def is_open(self, door: int) -> bool:
        """Whether the door's contact reports it open."""
        return self._open[door - 1]

    def set_open(self, door: int, is_open: bool) -> None:
        """Open or close the door (its contact)."""
        self._open[door - 1] = is_open

    def set_exit_button(self, door: int, pressed: bool) -> None:
        """Press or let go of the exit button."""
        self._exit[door - 1] = pressed

    def set_locked(self, door: int, locked: bool) -> None:
        """Drive the lock relay (what the controller does on a grant)."""
        self._locked[door - 1] = locked

    def slave_ids(self) -> list[int]:
        """The module's one slave id."""
        return [self.slave]

    def read_table(self, slave: int, table: str) -> tuple[int, list]:
        """(first address, values) of one table."""
        if table == "discrete_inputs":
            bits: list[bool] = []
            for d in range(self.doors):
                bits += [self._open[d], self._exit[d]]
            return 0, bits
        if table == "coils":
            return 0, list(self._locked)
        return 0, []

    def write_coil(self, slave: int, address: int, value: bool) -> bool:
        """A lock relay written over Modbus (a rule locking or releasing a door)."""
        if not 0 <= address < self.doors:
            return False
        self._locked[address] = bool(value)
        return True

    def write_holding(self, slave: int, address: int, value: int) -> bool:
        """The module has no holding registers."""
        return False

    def status_line(self) -> str:
        """One line: each door open/closed, locked/released."""
        return " | ".join(
            f"door {d + 1} {'OPEN' if self._open[d] else 'closed':<6} "
            f"{'locked' if self._locked[d] else 'RELEASED':<8} {'[exit]' if self._exit[d] else '':<6}"
            for d in range(self.doors)) + (" [SILENT]" if self.silent else "")


class DoorSimulator:
    """The door module on Modbus TCP plus the terminal on MQTT, and a scenario driving both.

    ``async with DoorSimulator(broker=("127.0.0.1", 1883)) as sim:`` then
    ``sim.modbus_port`` is the module's bound port. Durations are seconds;
    ``walk_s`` is how long a person keeps the door open, ``release_s`` how long
    a grant releases the lock.
    """

    def __init__(self, *, broker: tuple[str, int], modbus: tuple[str, int] | None = ("127.0.0.1", 0),
                 serial: str | None = None, baudrate: int = 9600, terminal_id: str = "T3E-01",
                 doors: int = 2, slave: int = 1, scenario: str = "idle",
                 incident_after: float = 10.0, incident_door: int = 1, held_s: float = 150.0,
                 traffic_every: float = 12.0, walk_s: float = 3.0, release_s: float = 5.0,
                 heartbeat_s: float = 10.0, fault: str | None = None, seed: int | None = None,
                 out: Callable[[str], object] | None = None, clock=None):
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; scenarios: {sorted(SCENARIOS)}")
        if not 1 <= incident_door <= doors:
            raise ValueError(f"incident door {incident_door} is not one of the {doors} doors")
        self.model = DoorModel(doors, slave=slave)
        # The terminal's event times; a test shares its clock with the gateway to let
        # scenario time pass without waiting for it.
        self._clock = clock or SystemClock()
        self.broker = broker
        self.terminal_id = terminal_id
        self.topic = f"access/{terminal_id}/events"
        self.scenario = scenario
        self.incident_after = incident_after
        self.incident_door = incident_door
        self.held_s = held_s
        self.traffic_every = traffic_every
        self.walk_s = walk_s
        self.release_s = release_s
        self.heartbeat_s = heartbeat_s
        self.fault: str | None = None
        self.set_fault(fault)
        self._rng = random.Random(seed)
        self._out = out
        self._seq = 0
        self._started = time.monotonic()
        self._servers = [ModbusSimServer(self.model, tcp=modbus)] if modbus else []
        if serial:
            self._servers.append(ModbusSimServer(self.model, serial=serial, baudrate=baudrate))
        self.publisher = MqttPublisher(host=broker[0], port=broker[1],
                                       client_id=f"sim-terminal-{terminal_id}")
        self._stack: contextlib.AsyncExitStack | None = None
        self._tasks: list[asyncio.Task] = []
        self._timers: list[asyncio.TimerHandle] = []
        self.published: list[dict] = []  # every real message, for tests and the console

    @property
    def modbus_port(self) -> int | None:
        """The TCP port the door module listens on (after start)."""
        return self._servers[0].port if self._servers and self._servers[0].host else None

    def set_fault(self, fault: str | None) -> None:
        """Switch a fault on (``silence``, ``malformed``) or off (None)."""
        self.fault = check_fault(fault)
        self.model.silent = fault == "silence"

    async def __aenter__(self) -> "DoorSimulator":
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            for server in self._servers:
                await stack.enter_async_context(server)
            await stack.enter_async_context(self.publisher)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        self._started = time.monotonic()
        self._tasks = [asyncio.create_task(self._heartbeats(), name=f"sim-door[{self.terminal_id}].heartbeat")]
        if self.scenario != "idle":
            self._tasks.append(asyncio.create_task(self._run_scenario(),
                                                   name=f"sim-door[{self.terminal_id}].scenario"))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []
        for timer in self._timers:
            timer.cancel()
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None

    # -- what the terminal says ------------------------------------------------

    def _say(self, doc: dict) -> None:
        doc = {"terminal": self.terminal_id, "time": iso_ms(self._clock.time()), **doc}
        if not self.publisher.publish_doc(self.topic, doc, fault=self.fault,
                                          bare={"terminal": self.terminal_id}):
            return
        self.published.append(doc)
        if self._out is not None and "code" in doc:
            self._out(f"terminal {self.terminal_id}: door {doc.get('door', '-')} code {doc['code']}"
                      + (f" ({doc['reason']})" if "reason" in doc else "")
                      + (" card " + doc["card_no"][:2] + "******" if "card_no" in doc else ""))

    def event(self, code: int | str, door: int | None = None, **extra: object) -> None:
        """Publish one terminal event (controller code) now."""
        self._seq += 1
        doc: dict = {"seq": self._seq, "code": code}
        if door is not None:
            doc["door"] = door
        doc.update(extra)
        self._say(doc)

    async def _heartbeats(self) -> None:
        while True:
            self._say({"type": "heartbeat", "uptime": round(time.monotonic() - self._started)})
            await asyncio.sleep(self.heartbeat_s)

    # -- actions -----------------------------------------------------------------

    def _person(self, card: str | None) -> tuple[str, str | None]:
        if card is None:
            card = self._rng.choice(sorted(RESIDENTS))
        return card, RESIDENTS.get(card)

    def swipe(self, door: int, card: str | None = None) -> str:
        """A resident's card is granted: the terminal reports it and the lock releases.

        Returns the card number. The lock relocks after ``release_s`` unless the
        door is then open (see ``walk_through``).
        """
        card, person = self._person(card)
        self.event(GRANTED, door, card_no=card, person_id=person, verify="card")
        self.model.set_locked(door, False)
        self._later(self.release_s, self._relock, door)
        return card

    def deny(self, door: int, card: str | None = None, code: int = 6) -> str:
        """A card is refused (code 6/7/8/15); the lock stays locked."""
        card = card or STRANGER_CARD
        extra = {"card_no": card, "verify": "pin" if code == 7 else "card"}
        if card in RESIDENTS:
            extra["person_id"] = RESIDENTS[card]
        self.event(code, door, **extra)
        return card

    async def press_exit(self, door: int) -> None:
        """The exit button: the module's input is pressed for a moment, the lock releases."""
        self.model.set_exit_button(door, True)
        self.event(EXIT_BUTTON, door)
        self.model.set_locked(door, False)
        self._later(self.release_s, self._relock, door)
        await asyncio.sleep(min(1.0, self.walk_s))
        self.model.set_exit_button(door, False)

    async def walk_through(self, door: int, open_s: float | None = None) -> None:
        """Someone opens the door, goes through, and it closes behind them."""
        await self._open_for(door, self.walk_s if open_s is None else open_s)

    async def force_open(self, door: int, open_s: float = 5.0) -> None:
        """The door is opened with no grant and the lock still locked."""
        await self._open_for(door, open_s)

    async def hold_open(self, door: int, open_s: float | None = None) -> None:
        """A granted door kept open (propped) for ``open_s`` (default ``held_s``)."""
        self.swipe(door)
        await self._open_for(door, self.held_s if open_s is None else open_s)

    def duress(self, door: int, card: str | None = None) -> str:
        """A resident enters with the duress PIN: granted, and a duress alarm."""
        card = self.swipe(door, card)
        self.event(DURESS, door, card_no=card, person_id=RESIDENTS.get(card), verify="pin")
        return card

    def tamper(self) -> None:
        """The reader is pried off the wall."""
        self.event("tamper")

    async def _open_for(self, door: int, seconds: float) -> None:
        self.model.set_open(door, True)
        self.event(DOOR_OPENED, door)
        await asyncio.sleep(seconds)
        self.model.set_open(door, False)
        self.event(DOOR_CLOSED, door)
        self.model.set_locked(door, True)

    def _relock(self, door: int) -> None:
        if not self.model.is_open(door):
            self.model.set_locked(door, True)

    def _later(self, delay: float, fn: Callable, *args: object) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._timers = [t for t in self._timers if t.when() > now]  # forget the ones that ran
        self._timers.append(loop.call_later(delay, fn, *args))

    # -- scenarios -----------------------------------------------------------------

    def _plan(self) -> list[tuple[float, str, int]]:
        """(seconds from start, incident, door) of the scenario."""
        if self.scenario == "normal":
            return []
        if self.scenario == "tour":
            other = 2 if self.model.doors > 1 and self.incident_door == 1 else 1
            return [(self.incident_after + TOUR_GAP_S * i, name, door) for i, (name, door) in
                    enumerate([("forced", self.incident_door), ("denials", other),
                               ("duress", self.incident_door), ("tamper", other)])]
        return [(self.incident_after, self.scenario, self.incident_door)]

    async def _run_scenario(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for after, name, door in self._plan():
            at = start + after
            # no background traffic on any door for a while before an incident, so
            # the incident is what it says (no grant just before a forced door)
            await self._traffic(until=at - self.walk_s - self.release_s - 2)
            await asyncio.sleep(max(0.0, at - loop.time()))
            if self._out is not None:
                self._out(f"terminal {self.terminal_id}: INCIDENT {name} at door {door}")
            await self.incident(name, door)
        await self._traffic(until=None)

    async def incident(self, name: str, door: int) -> None:
        """Play one incident now (``forced``, ``held``, ``denials``, ``duress``, ``tamper``)."""
        if name == "forced":
            await self.force_open(door)
        elif name == "held":
            await self.hold_open(door)
        elif name == "denials":
            for i in range(5):
                self.deny(door, STRANGER_CARD, code=7 if i % 2 else 6)
                await asyncio.sleep(min(2.0, self.walk_s))
        elif name == "duress":
            self.duress(door)
            await self.walk_through(door)
        elif name == "tamper":
            self.tamper()
        else:
            raise ValueError(f"unknown incident {name!r}")

    async def _traffic(self, until: float | None) -> None:
        """Residents coming and going until loop time ``until`` (None: forever)."""
        loop = asyncio.get_running_loop()
        rng = self._rng
        while True:
            wait = rng.uniform(0.5, 1.5) * self.traffic_every
            if until is not None and loop.time() + wait + self.walk_s + 1 > until:
                return
            await asyncio.sleep(wait)
            door = rng.randint(1, self.model.doors)
            roll = rng.random()
            if roll < 0.6:
                self.swipe(door)
            elif roll < 0.85:
                await self.press_exit(door)
            else:
                self.deny(door, code=rng.choice(sorted(DENIAL_CODES)))
                await asyncio.sleep(1.0)
                self.swipe(door)
            await asyncio.sleep(0.5)
            await self.walk_through(door)


async def run_door(*, broker: str = "127.0.0.1:1883", tcp: str | None = "127.0.0.1:5021",
                   serial: str | None = None, baudrate: int = 9600, scenario: str = "normal",
                   terminal_id: str = "T3E-01", doors: int = 2, incident_door: int = 1,
                   incident_after: float = 10.0, held_s: float = 150.0, fault: str | None = None,
                   seed: int | None = None, status_every: float = 5.0,
                   out: Callable[[str], object] = functools.partial(print, flush=True)) -> None:
    """Run the door simulator until cancelled, printing events and a status line."""
    host, _, port = broker.rpartition(":")
    modbus = None
    if tcp:
        mhost, _, mport = tcp.rpartition(":")
        modbus = (mhost or "0.0.0.0", int(mport))
    async with DoorSimulator(broker=(host or "127.0.0.1", int(port)), modbus=modbus, serial=serial,
                             baudrate=baudrate, terminal_id=terminal_id, doors=doors,
                             scenario=scenario, incident_after=incident_after,
                             incident_door=incident_door, held_s=held_s, fault=fault, seed=seed,
                             out=out) as sim:
        where = [f"terminal {terminal_id} publishing to {broker} on {sim.topic}"]
        if modbus:
            where.append(f"door module on Modbus TCP {modbus[0]}:{sim.modbus_port} slave 1")
        if serial:
            where.append(f"door module on Modbus RTU {serial} {baudrate} 8N1")
        out(f"door: {doors} doors, scenario {scenario!r}"
            + (f" at door {incident_door} after {incident_after:g}s" if scenario not in ("normal", "idle") else "")
            + (f", fault {fault}" if fault else "") + "; " + "; ".join(where))
        while True:
            out(sim.model.status_line() + ("" if sim.publisher.connected.is_set() else " [broker down]"))
            await asyncio.sleep(status_every)
