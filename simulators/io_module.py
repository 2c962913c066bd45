"""A Modbus RTU/TCP I/O module as perimeters, one-key buttons and water supply use them.

One slave (id 1 by default) with 8 digital inputs (FC02, dry contacts, normally
closed: True = loop closed = quiet), 8 relay outputs (coils, FC05: sirens,
floodlights) and 4 analog inputs (input registers, 4-20 mA as microamps,
4000..20000) - the 8 DI / 8 DO / 4 AI class of module from shared/devices.md
section 6. ``simulators.modbus_server.CabinetServer`` serves it like a cabinet.

Wiring the scenarios assume (the example site uses the same):
DI1 fence beam alarm, DI2 fence tamper, DI3 detector fault contact,
DI5 one-key emergency button (latching), DI6 pump-room door;
AI1 hydrant pressure (0..1.6 MPa over 4..20 mA), AI2 tank level (0..5 m).

Scenarios (``incident_after`` seconds in): ``normal``; ``night-intrusion`` (DI1 opens
for 1.5 s, as a beam holds its contact open per break); ``cut-wire`` (DI1 opens for
good); ``tamper`` (DI2 opens); ``one-key`` (DI5 opens and stays: the button
latches); ``detector-fault`` (DI3 opens); ``pressure-drop`` (AI1 falls from
0.35 MPa to 0.05 MPa); ``sensor-loop-open`` (AI1 reads 0 mA).
"""

from __future__ import annotations

import time

SCENARIOS: dict[str, str] = {
    "normal": "every loop closed, hydrant at 0.35 MPa, tank at 3.2 m",
    "night-intrusion": "the fence beam on DI1 is broken for 1.5 s",
    "cut-wire": "the fence beam's wire on DI1 is cut (the loop stays open)",
    "tamper": "the fence detector's cover (DI2) is opened",
    "one-key": "a resident presses the one-key button on DI5 (it latches)",
    "detector-fault": "a detector's fault contact (DI3) opens",
    "pressure-drop": "the hydrant pressure (AI1) falls to 0.05 MPa",
    "sensor-loop-open": "the pressure transmitter's loop (AI1) opens: 0 mA",
}
INPUTS = 8
OUTPUTS = 8
ANALOG = 4


def microamps(value: float, full_scale: float) -> int:
    """A 4-20 mA transmitter's current for ``value`` on a 0..full_scale range."""
    return round(4000 + 16000 * max(0.0, min(value, full_scale)) / full_scale)


class IoModuleModel:
    """The module's inputs, outputs and analog values over time (or set by hand)."""

    def __init__(self, *, scenario: str = "normal", incident_after: float = 10.0,
                 slave: int = 1, clock=time.monotonic):
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; scenarios: {sorted(SCENARIOS)}")
        self.scenario = scenario
        self.incident_after = incident_after
        self.slave = slave
        self._clock = clock
        self._started = clock()
        self.inputs = [True] * INPUTS  # NC loops, closed
        self.outputs = [False] * OUTPUTS
        self.analog = [microamps(0.35, 1.6), microamps(3.2, 5.0), 4000, 4000]
        self.writes: list[tuple[int, bool]] = []
        self.silent = False  # the server answers nothing while set (fault injection)

    def _update(self) -> None:
        elapsed = self._clock() - self._started - self.incident_after
        if elapsed < 0:
            return
        s = self.scenario
        if s == "night-intrusion":
            self.inputs[0] = elapsed > 1.5
        elif s == "cut-wire":
            self.inputs[0] = False
        elif s == "tamper":
            self.inputs[1] = False
        elif s == "one-key":
            self.inputs[4] = False
        elif s == "detector-fault":
            self.inputs[2] = False
        elif s == "pressure-drop":
            self.analog[0] = microamps(0.05, 1.6)
        elif s == "sensor-loop-open":
            self.analog[0] = 0

    # what simulators.modbus_server asks of a model
    def slave_ids(self) -> list[int]:
        return [self.slave]

    def read_table(self, slave: int, table: str) -> tuple[int, list[int] | list[bool]]:
        if slave != self.slave:
            raise KeyError(f"no slave {slave}")
        self._update()
        if table == "discrete_inputs":
            return 0, list(self.inputs)
        if table == "coils":
            return 0, list(self.outputs)
        if table == "input_registers":
            return 0, list(self.analog)
        return 0, []

    def write_coil(self, slave: int, address: int, value: bool) -> bool:
        if slave != self.slave or not 0 <= address < OUTPUTS:
            return False
        self.outputs[address] = bool(value)
        self.writes.append((address + 1, bool(value)))
        return True

    def write_holding(self, slave: int, address: int, value: int) -> bool:
        return False


async def run_io_module(*, scenario: str, tcp: str | None, serial: str | None, baudrate: int,
                        incident_after: float) -> None:
    """``simulate io-module``: serve until cancelled, printing the inputs as they change."""
    import asyncio
    import contextlib

    from simulators.modbus_server import CabinetServer
    from simulators.ptypair import PtyPair

    model = IoModuleModel(scenario=scenario, incident_after=incident_after)
    async with contextlib.AsyncExitStack() as stack:
        if tcp:
            host, _, port = tcp.rpartition(":")
            srv = await stack.enter_async_context(
                CabinetServer(model, tcp=(host or "127.0.0.1", int(port))))
            print(f"I/O module on Modbus TCP {srv.address} (slave {model.slave})", flush=True)
        if serial:
            path = serial
            if serial == "pty":
                pair = await stack.enter_async_context(PtyPair())
                path, serial = pair.b, pair.link_a
            await stack.enter_async_context(CabinetServer(model, serial=path, baudrate=baudrate))
            print(f"I/O module on Modbus RTU {serial} ({baudrate} 8N1)", flush=True)
        print(f"scenario {scenario}: {SCENARIOS[scenario]}", flush=True)
        last = None
        while True:
            _, inputs = model.read_table(model.slave, "discrete_inputs")
            state = "".join("1" if v else "0" for v in inputs)
            if state != last:
                print(f"inputs DI1..DI8 {state}  outputs {model.outputs.count(True)} on", flush=True)
                last = state
            await asyncio.sleep(0.2)
