"""Serve a ``CabinetModel`` over Modbus TCP or RTU (pymodbus 3.16 SimDevice API).

Every slave of the model (one meter per port plus the cabinet controller) is a
``SimDevice`` with four separate tables (coils, discrete inputs, holding,
input registers), so bit tables are addressed per bit like a real device. The
registers pymodbus keeps are only a cache: the ``action=`` callback refreshes
them from the model on every request and forwards writes to the model.

By hand::

    python -m simulators.modbus_server --tcp 127.0.0.1:5020 --scenario overpower
    python -m simulators.modbus_server --serial pty --scenario smoke   # makes a pty pair
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import sys
from collections.abc import Callable

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.clock import SystemClock
from simulators.charging_cabinet import SCENARIOS, CabinetModel, Table
from simulators.ptypair import PtyPair

# SimDevice's 4-tuple order
TABLES: tuple[Table, ...] = ("coils", "discrete_inputs", "holding_registers", "input_registers")
_FC_TABLE: dict[int, Table] = {
    1: "coils", 5: "coils", 15: "coils",
    2: "discrete_inputs",
    3: "holding_registers", 6: "holding_registers", 16: "holding_registers",
    22: "holding_registers", 23: "holding_registers",
    4: "input_registers",
}
# SimDevice needs at least one BITS entry per bit table; a slave without that
# table gets one out of reach at the top of the address space, so every
# normal address answers ILLEGAL_ADDRESS.
_NO_BITS_AT = 0xFFF0


def build_devices(model: CabinetModel) -> list[SimDevice]:
    """One SimDevice per slave id of the model, wired to it through ``action``."""
    devices = []
    for slave in model.slave_ids():
        blocks = tuple([_simdata(model, slave, table)] for table in TABLES)
        devices.append(
            SimDevice(id=slave, simdata=blocks, action=functools.partial(_action, model, slave))
        )
    return devices


def _simdata(model: CabinetModel, slave: int, table: Table) -> SimData:
    start, values = model.read_table(slave, table)
    if table in ("coils", "discrete_inputs"):
        if not values:
            return SimData(address=_NO_BITS_AT, values=False, datatype=DataType.BITS)
        return SimData(address=start, values=list(values), datatype=DataType.BITS)
    if not values:
        return SimData(address=0, datatype=DataType.INVALID)
    return SimData(address=start, values=list(values), datatype=DataType.REGISTERS)


async def _action(
    model: CabinetModel,
    slave: int,
    function_code: int,
    start_address: int,
    address: int,
    count: int,
    registers: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    """Forward a write to the model, then refresh pymodbus' cache from it.

    For bit tables pymodbus passes ``start_address`` and ``count`` in 16-bit
    words but ``address`` in bits, and does not tell a read's bit count.
    """
    table = _FC_TABLE[function_code]
    start, values = model.read_table(slave, table)
    end = start + len(values)
    if set_values is not None:
        if not start <= address <= address + len(set_values) <= end:
            return ExcCodes.ILLEGAL_ADDRESS
        write = model.write_coil if table == "coils" else model.write_holding
        for i, value in enumerate(set_values):
            if not write(slave, address + i, value):
                return ExcCodes.ILLEGAL_VALUE
        start, values = model.read_table(slave, table)
    elif not start <= address < end:
        # a read starting inside the table but running past it still passes
        # for bit tables (pymodbus pads them to 16 bits): such bits read False
        return ExcCodes.ILLEGAL_ADDRESS
    if table in ("coils", "discrete_inputs"):
        _pack_bits(registers, start - start_address * 16, values)
    else:
        registers[start - start_address : end - start_address] = values
    return None


def _pack_bits(registers: list[int], offset: int, bits: list) -> None:
    """Store ``bits`` into 16-bit words, bit 0 first, starting at bit ``offset``."""
    for i, bit in enumerate(bits):
        word, mask = divmod(offset + i, 16)
        if bit:
            registers[word] |= 1 << mask
        else:
            registers[word] &= ~(1 << mask)


class CabinetServer:
    """Serve ``model`` on one Modbus bus: TCP (``tcp=(host, port)``) or RTU (``serial=path``).

    Use as ``async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv``;
    ``srv.port`` is then the bound TCP port. Requests for slave ids the cabinet
    does not have get no answer, as on a real RS-485 bus.
    """

    def __init__(
        self,
        model: CabinetModel,
        *,
        tcp: tuple[str, int] | None = None,
        serial: str | None = None,
        baudrate: int = 9600,
    ):
        if (tcp is None) == (serial is None):
            raise ValueError("give exactly one of tcp=(host, port) or serial=path")
        self.model = model
        self.host, self.port = tcp if tcp else ("", None)
        self.serial = serial
        self.baudrate = baudrate
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._ids = frozenset(model.slave_ids())

    @property
    def address(self) -> str:
        """Where it listens: ``host:port`` or the serial path."""
        return self.serial if self.serial else f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the listener (or serial port) is open."""
        return self._server is not None

    async def __aenter__(self) -> CabinetServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open the listener or serial port; raises OSError if it cannot."""
        if self._server is not None:
            return
        devices = build_devices(self.model)
        if self.serial:
            server = ModbusSerialServer(
                devices, port=self.serial, baudrate=self.baudrate, trace_pdu=self._trace_pdu
            )
        else:
            server = ModbusTcpServer(
                devices, address=(self.host, self.port or 0), trace_pdu=self._trace_pdu
            )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:  # pymodbus' only report of a failed listen
            await server.shutdown()
            raise OSError(f"cannot serve on {self.address}: {exc}") from exc
        self._server = server
        if not self.serial:
            # port 0 asks the OS for a free port; keep it so a restart reuses it
            self.port = server.transport.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close the listener / serial port and every client connection."""
        server, self._server = self._server, None
        if server is None:
            return
        listener = server.transport
        await server.shutdown()
        if isinstance(listener, asyncio.AbstractServer):
            await listener.wait_closed()
        # let the closed connections' connection_lost callbacks run now, not
        # after the caller has moved on (or closed the loop)
        await asyncio.sleep(0)

    async def set_silent(self, silent: bool, *, disconnect: bool = False) -> None:
        """Make the cabinet stop answering (``True``) or answer again (``False``).

        By default requests are swallowed with no reply and no effect, so
        clients time out as with a dead device on a live bus (TCP connections
        stay up). With ``disconnect=True`` the listener or serial port is also
        closed, so TCP clients see the connection drop and reconnects refused;
        ``set_silent(False)`` reopens it on the same port / path.
        """
        self.model.silent = silent
        if silent and disconnect:
            await self.stop()
        elif not silent:
            await self.start()

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        # pymodbus hook on every decoded request; returning None drops the
        # request before it reaches the datastore, so nothing is answered.
        if sending:
            return pdu
        if self.model.silent or pdu.dev_id not in self._ids:
            return None
        return pdu


def status_line(model: CabinetModel) -> str:
    """One human-readable line: per port relay, W, °C; cabinet °C and smoke."""
    ports = " | ".join(
        f"p{p} {'ON ' if model.relay(p) else 'OFF'} {model.port_power_w(p):6.1f}W "
        f"{model.port_temp_c(p):5.1f}°C"
        for p in range(1, model.ports + 1)
    )
    smoke = "SMOKE" if model.smoke else "no smoke"
    silent = " [SILENT]" if model.silent else ""
    return f"{ports} | cabinet {model.cabinet_temp_c:5.1f}°C {smoke}{silent}"


async def run_cabinet(
    ports: int = 4,
    scenario: str = "normal",
    tcp: str | None = None,
    serial: str | None = None,
    baudrate: int = 9600,
    meter_base: int = 1,
    controller_id: int = 100,
    speed: float = 1.0,
    *,
    scenario_port: int = 3,
    incident_after: float = 5.0,
    seed: int | None = None,
    status_every: float = 3.0,
    stop_event: asyncio.Event | None = None,
    out: Callable[[str], object] = functools.partial(print, flush=True),
) -> None:
    """Run a simulated cabinet until ``stop_event`` is set (or until cancelled).

    ``tcp`` is ``"host:port"``; ``serial`` is a device path, or ``"pty"`` to
    create a pty pair, serve on one side and print the other for the gateway.
    Both may be given: the two buses then serve the same cabinet. A status
    line goes to ``out`` every ``status_every`` seconds.
    """
    if not tcp and not serial:
        raise ValueError("give tcp='host:port' and/or serial=path")
    model = CabinetModel(
        ports, scenario, scenario_port, incident_after, speed, seed, SystemClock(),
        meter_base=meter_base, controller_id=controller_id,
    )
    stop = stop_event or asyncio.Event()  # never set: run until cancelled
    async with contextlib.AsyncExitStack() as stack:
        where = []
        if tcp:
            host, _, port = tcp.rpartition(":")
            srv = await stack.enter_async_context(
                CabinetServer(model, tcp=(host or "0.0.0.0", int(port)))
            )
            where.append(f"TCP {srv.address}")
        if serial:
            if serial == "pty":
                pair = await stack.enter_async_context(PtyPair())
                serial = pair.b
                where.append(f"RTU via pty, gateway side {pair.link_a} ({pair.a})")
            else:
                where.append(f"RTU {serial} {baudrate} 8N1")
            await stack.enter_async_context(CabinetServer(model, serial=serial, baudrate=baudrate))
        out(
            f"cabinet: {ports} ports, meters {meter_base}..{meter_base + ports - 1}, "
            f"controller {controller_id}, scenario {scenario!r}"
            + (f" on port {scenario_port} after {incident_after:g}s" if scenario != "normal" else "")
            + f", speed x{speed:g}; " + "; ".join(where)
        )
        while not stop.is_set():
            out(status_line(model))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(status_every):
                    await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Command line for running the simulator by hand."""
    ap = argparse.ArgumentParser(description="EV-bike charging cabinet Modbus simulator")
    ap.add_argument("--tcp", help="host:port to listen on (default 127.0.0.1:5020 without --serial)")
    ap.add_argument("--serial", help="serial device for RTU, or 'pty' to create a pty pair")
    ap.add_argument("--baudrate", type=int, default=9600)
    ap.add_argument("--ports", type=int, default=4)
    ap.add_argument("--scenario", choices=sorted(SCENARIOS), default="normal",
                    help="; ".join(f"{k}: {v}" for k, v in SCENARIOS.items()))
    ap.add_argument("--scenario-port", type=int, default=3)
    ap.add_argument("--incident-after", type=float, default=5.0, metavar="SECONDS")
    ap.add_argument("--speed", type=float, default=1.0, help="physics time multiplier")
    ap.add_argument("--meter-base", type=int, default=1)
    ap.add_argument("--controller-id", type=int, default=100)
    ap.add_argument("--seed", type=int)
    args = ap.parse_args(argv)
    tcp = args.tcp or (None if args.serial else "127.0.0.1:5020")
    try:
        asyncio.run(run_cabinet(
            args.ports, args.scenario, tcp, args.serial, args.baudrate, args.meter_base,
            args.controller_id, args.speed, scenario_port=args.scenario_port,
            incident_after=args.incident_after, seed=args.seed,
        ))
    except KeyboardInterrupt:
        pass
    except (OSError, ValueError) as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
