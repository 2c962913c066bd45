"""The EV-bike charging cabinet simulator: model physics, Modbus wire contract, pty pair.

Wire contract (devices.md section 2): meters at slave 1..N (PZEM-004T v3, u32
low word first), controller at slave 100 (coils = relays, DI 0 = smoke, IR 0 =
cabinet temperature, IR p = port p temperature, i16 0.1 °C).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

from gateway.clock import FakeClock
from simulators.charging_cabinet import SCENARIOS, CabinetModel
from simulators.modbus_server import CabinetServer, run_cabinet
from simulators.ptypair import PtyPair

CONTROLLER = 100
TIMEOUT = 0.3  # client timeout for reads that are meant to go unanswered


@pytest.fixture(autouse=True)
async def no_leaked_tasks():
    """Fail a test that leaves tasks running (servers, clients, relays)."""
    yield
    me = asyncio.current_task()
    for _ in range(5):  # let cancelled tasks and connection_lost callbacks finish
        await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    assert not leaked, leaked


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


def make_model(clock: FakeClock, scenario: str = "normal", **kw) -> CabinetModel:
    return CabinetModel(ports=4, scenario=scenario, seed=7, clock=clock, **kw)


def u32(lo: int, hi: int) -> int:
    """PZEM word order: low word first."""
    return lo | hi << 16


def i16(word: int) -> int:
    return word - 0x10000 if word & 0x8000 else word


def decode_meter(regs: list[int]) -> dict[str, float]:
    assert len(regs) == 10
    return {
        "V": regs[0] / 10,
        "A": u32(regs[1], regs[2]) / 1000,
        "W": u32(regs[3], regs[4]) / 10,
        "Wh": u32(regs[5], regs[6]),
        "Hz": regs[7] / 10,
        "pf": regs[8] / 100,
        "alarm": regs[9],
    }


@contextlib.asynccontextmanager
async def tcp_client(port: int, **kw):
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=TIMEOUT, retries=0, **kw)
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


async def read_meter(client, p: int) -> dict[str, float]:
    rr = await client.read_input_registers(0, count=10, device_id=p)
    assert not rr.isError(), rr
    return decode_meter(rr.registers)


# --------------------------------------------------------------- model physics


def test_charge_tapers_to_floating_floor(clock):
    model = make_model(clock)
    start_energy = [model.port_energy_wh(p) for p in range(1, 5)]
    last = [model.port_power_w(p) for p in range(1, 5)]
    assert all(5.0 <= w <= 350.0 for w in last)
    assert any(w >= 150.0 for w in last), "some bike should still be in constant power"
    for _ in range(15 * 12):  # 15 minutes in 5 s steps
        clock.advance(5.0)
        now = [model.port_power_w(p) for p in range(1, 5)]
        assert all(n <= w + 1e-9 for n, w in zip(now, last)), "draw never rises while charging"
        last = now
    for p in range(1, 5):
        assert model.port_soc(p) == 1.0
        assert 5.0 <= model.port_floor_w(p) <= 20.0
        assert model.port_power_w(p) == model.port_floor_w(p)
        assert model.port_energy_wh(p) > start_energy[p - 1]
        assert model.port_temp_c(p) < 27.0  # ~25 °C ambient plus a floor's warmth


def test_speed_multiplies_physics_time():
    slow_clock, fast_clock = FakeClock(0.0), FakeClock(0.0)
    slow = make_model(slow_clock)
    fast = make_model(fast_clock, speed=10.0)
    slow_clock.advance(90.0)
    fast_clock.advance(90.0)
    assert all(fast.port_soc(p) == 1.0 for p in range(1, 5))
    assert not all(slow.port_soc(p) == 1.0 for p in range(1, 5))


def test_cut_relay_drops_to_zero_and_port_cools(clock):
    model = make_model(clock)
    assert model.port_power_w(2) > 0
    model.set_relay(2, False)
    assert model.relay(2) is False
    assert model.port_power_w(2) == 0.0
    regs = model.read_table(2, "input_registers")[1]
    meter = decode_meter(regs)
    assert (meter["A"], meter["W"], meter["pf"]) == (0, 0, 0)
    assert 220 <= meter["V"] <= 235  # the meter still sees the mains
    energy = model.port_energy_wh(2)
    clock.advance(600.0)
    assert model.port_energy_wh(2) == energy
    assert abs(model.port_temp_c(2) - 25.0) < 0.5


def test_overpower_scenario(clock):
    model = make_model(clock, "overpower", scenario_port=3, incident_after=5.0)
    clock.advance(4.9)
    assert model.port_power_w(3) < 400
    clock.advance(0.2)
    assert 1200 <= model.port_power_w(3) <= 1500
    assert all(model.port_power_w(p) < 400 for p in (1, 2, 4))
    model.set_relay(3, False)
    assert model.port_power_w(3) == 0.0
    model.set_relay(3, True)  # the faulty charger is still faulty
    assert model.port_power_w(3) > 1000


def test_overheat_scenario_heats_while_on_and_cools_when_cut(clock):
    model = make_model(clock, "overheat", scenario_port=2, incident_after=5.0)
    assert model.port_temp_c(2) < 40
    clock.advance(5.0 + 300.0)
    assert model.port_temp_c(2) > 80
    assert all(model.port_temp_c(p) < 40 for p in (1, 3, 4))
    assert model.cabinet_temp_c > 40  # follows the hottest port loosely
    model.set_relay(2, False)
    clock.advance(600.0)
    assert model.port_temp_c(2) < 30


def test_smoke_scenario(clock):
    model = make_model(clock, "smoke", incident_after=5.0)
    before = model.cabinet_temp_c
    clock.advance(4.0)
    assert model.smoke is False
    clock.advance(2.0)
    assert model.smoke is True
    clock.advance(300.0)
    assert model.cabinet_temp_c > before + 30


def test_register_tables_and_writes(clock):
    model = make_model(clock, meter_base=11, controller_id=50)
    assert model.slave_ids() == [11, 12, 13, 14, 50]
    assert model.read_table(11, "holding_registers") == (1, [2300, 11])
    assert model.read_table(50, "coils") == (0, [True] * 4)
    assert model.read_table(50, "discrete_inputs") == (0, [False])
    start, temps = model.read_table(50, "input_registers")
    assert start == 0 and len(temps) == 5
    assert model.read_table(11, "coils") == (0, [])
    with pytest.raises(KeyError):
        model.read_table(1, "input_registers")
    assert model.write_coil(50, 3, False) and not model.relay(4)
    assert not model.write_coil(50, 4, False)  # no port 5
    assert not model.write_coil(11, 0, False)  # meters have no coils
    assert model.write_holding(12, 1, 1000)
    assert model.read_table(12, "holding_registers")[1][0] == 1000
    assert not model.write_holding(12, 0, 1)
    assert not model.write_holding(12, 2, 0)  # not a valid Modbus address


def test_scenarios_are_listed_and_checked(clock):
    assert set(SCENARIOS) == {"normal", "overpower", "overheat", "smoke"}
    assert all(isinstance(v, str) and v for v in SCENARIOS.values())
    with pytest.raises(ValueError):
        make_model(clock, "meltdown")
    with pytest.raises(ValueError):
        make_model(clock, controller_id=2)  # collides with a meter


# ------------------------------------------------------------ Modbus over TCP


async def test_tcp_registers_decode_to_plausible_values(clock):
    model = make_model(clock)
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv, tcp_client(srv.port) as client:
        assert srv.port and srv.port > 0
        for p in range(1, 5):
            m = await read_meter(client, p)
            assert 220 <= m["V"] <= 235
            assert 49.8 <= m["Hz"] <= 50.2
            assert 0.9 <= m["pf"] <= 0.99
            assert 5 <= m["W"] <= 360
            assert m["W"] == pytest.approx(m["V"] * m["A"] * m["pf"], rel=0.02)
            assert m["alarm"] == 0
            hr = await client.read_holding_registers(1, count=2, device_id=p)
            assert hr.registers == [2300, p]
        coils = await client.read_coils(0, count=4, device_id=CONTROLLER)
        assert coils.bits[:4] == [True] * 4
        smoke = await client.read_discrete_inputs(0, count=1, device_id=CONTROLLER)
        assert smoke.bits[0] is False
        temps = await client.read_input_registers(0, count=5, device_id=CONTROLLER)
        assert all(20.0 <= i16(w) / 10 <= 40.0 for w in temps.registers)
        # energy accumulates in whole Wh
        clock.advance(120.0)
        assert (await read_meter(client, 1))["Wh"] >= 1


async def test_tcp_cut_relay_reads_zero_next_read(clock):
    model = make_model(clock)
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv, tcp_client(srv.port) as client:
        assert (await read_meter(client, 3))["W"] > 0
        wr = await client.write_coil(2, False, device_id=CONTROLLER)  # coil p-1
        assert not wr.isError()
        m = await read_meter(client, 3)
        assert (m["W"], m["A"]) == (0, 0)
        assert (await read_meter(client, 2))["W"] > 0
        coils = await client.read_coils(0, count=4, device_id=CONTROLLER)
        assert coils.bits[:4] == [True, True, False, True]
        assert model.relay(3) is False
        # multiple-coil write switches it back on
        await client.write_coils(2, [True, False], device_id=CONTROLLER)
        assert model.relay(3) and not model.relay(4)
        assert (await read_meter(client, 3))["W"] > 0


async def test_tcp_alarm_threshold_holding_register(clock):
    model = make_model(clock)
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv, tcp_client(srv.port) as client:
        watts = (await read_meter(client, 1))["W"]
        wr = await client.write_register(1, int(watts) - 2, device_id=1)
        assert not wr.isError()
        assert (await client.read_holding_registers(1, count=1, device_id=1)).registers == [
            int(watts) - 2
        ]
        assert (await read_meter(client, 1))["alarm"] == 0xFFFF
        assert (await read_meter(client, 2))["alarm"] == 0


async def test_tcp_overpower_after_incident(clock):
    model = make_model(clock, "overpower", scenario_port=3, incident_after=5.0)
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv, tcp_client(srv.port) as client:
        assert (await read_meter(client, 3))["W"] < 400
        clock.advance(6.0)
        m = await read_meter(client, 3)
        assert m["W"] > 1000
        assert m["A"] > 4.5
        await client.write_register(1, 1000, device_id=3)
        assert (await read_meter(client, 3))["alarm"] == 0xFFFF
        await client.write_coil(2, False, device_id=CONTROLLER)
        assert (await read_meter(client, 3))["W"] == 0


async def test_tcp_smoke_sets_discrete_input(clock):
    model = make_model(clock, "smoke", incident_after=5.0)
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv, tcp_client(srv.port) as client:
        di = await client.read_discrete_inputs(0, count=1, device_id=CONTROLLER)
        assert di.bits[0] is False
        clock.advance(5.0)
        di = await client.read_discrete_inputs(0, count=1, device_id=CONTROLLER)
        assert di.bits[0] is True
        clock.advance(300.0)
        temp = await client.read_input_registers(0, count=1, device_id=CONTROLLER)
        assert i16(temp.registers[0]) / 10 > 50


async def test_tcp_illegal_addresses_and_unknown_slave(clock):
    model = make_model(clock)
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv, tcp_client(srv.port) as client:
        assert (await client.read_coils(4, count=1, device_id=CONTROLLER)).exception_code == 2
        assert (await client.write_coil(4, False, device_id=CONTROLLER)).exception_code == 2
        assert (await client.read_holding_registers(0, count=1, device_id=1)).exception_code == 2
        assert (await client.read_input_registers(0, count=11, device_id=1)).exception_code == 2
        assert (await client.read_coils(0, count=1, device_id=1)).exception_code == 2
        assert (await client.write_register(2, 0, device_id=1)).exception_code == 3
        # no such slave on the bus: silence, as on RS-485
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(0, count=10, device_id=7)
        assert (await read_meter(client, 1))["V"] > 200


async def test_tcp_silent_times_out_then_recovers(clock):
    model = make_model(clock)
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv, tcp_client(srv.port) as client:
        await read_meter(client, 1)
        await srv.set_silent(True)
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(0, count=10, device_id=1)
        with pytest.raises(ModbusIOException):  # writes are ignored too
            await client.write_coil(0, False, device_id=CONTROLLER)
        assert model.relay(1)
        await srv.set_silent(False)
        assert (await read_meter(client, 1))["W"] > 0


async def test_tcp_silent_disconnect_restarts_on_same_port(clock):
    model = make_model(clock)
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv:
        port = srv.port
        async with tcp_client(port, reconnect_delay=0.05, reconnect_delay_max=0.1) as client:
            await read_meter(client, 1)
            await srv.set_silent(True, disconnect=True)
            assert not srv.running
            with pytest.raises((ModbusIOException, ConnectionException)):
                await client.read_input_registers(0, count=10, device_id=1)
            await srv.set_silent(False)
            assert srv.running and srv.port == port
            # the client reconnects on its own schedule; poll with a deadline
            deadline = time.monotonic() + 5.0
            while True:
                try:
                    rr = await client.read_input_registers(0, count=10, device_id=1)
                    break
                except (ModbusIOException, ConnectionException):
                    assert time.monotonic() < deadline, "client never reconnected"
                    await asyncio.sleep(0.05)
            assert decode_meter(rr.registers)["V"] > 200


# ------------------------------------------------------- Modbus RTU over a pty


@contextlib.asynccontextmanager
async def rtu_client(path: str):
    client = AsyncModbusSerialClient(path, baudrate=19200, timeout=TIMEOUT, retries=0)
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


async def test_rtu_over_pty_pair(clock):
    model = make_model(clock, "smoke", incident_after=5.0)
    async with (
        PtyPair() as pair,
        CabinetServer(model, serial=pair.a, baudrate=19200) as srv,
        rtu_client(pair.b) as client,
    ):
        m = await read_meter(client, 4)
        assert 220 <= m["V"] <= 235 and m["W"] > 0
        assert not (await client.write_coil(3, False, device_id=CONTROLLER)).isError()
        assert (await read_meter(client, 4))["W"] == 0
        clock.advance(5.0)
        di = await client.read_discrete_inputs(0, count=1, device_id=CONTROLLER)
        assert di.bits[0] is True
        # silent: the bus goes quiet, then answers again
        await srv.set_silent(True)
        with pytest.raises(ModbusIOException):
            await client.read_coils(0, count=4, device_id=CONTROLLER)
        await srv.set_silent(False)
        coils = await client.read_coils(0, count=4, device_id=CONTROLLER)
        assert coils.bits[:4] == [True, True, True, False]
        # silent with the port released, then reopened on the same path
        await srv.set_silent(True, disconnect=True)
        with pytest.raises(ModbusIOException):
            await client.read_coils(0, count=4, device_id=CONTROLLER)
        await srv.set_silent(False)
        assert (await read_meter(client, 1))["W"] > 0


# -------------------------------------------------------------------- pty pair


async def read_some(fd: int, n: int, timeout: float = 2.0) -> bytes:
    """Read exactly n bytes from a non-blocking fd, waiting on the event loop."""
    loop = asyncio.get_running_loop()
    got = bytearray()
    ready = asyncio.Event()
    loop.add_reader(fd, ready.set)
    try:
        async with asyncio.timeout(timeout):
            while len(got) < n:
                await ready.wait()
                ready.clear()
                with contextlib.suppress(BlockingIOError):
                    got += os.read(fd, n - len(got))
    finally:
        loop.remove_reader(fd)
    return bytes(got)


def open_raw(path: str) -> int:
    return os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)


async def test_ptypair_relays_raw_bytes_both_ways():
    # bytes a cooked tty would eat or translate: CR, LF, NUL, XON/XOFF, ^C, ^D
    payload = bytes([0x0D, 0x0A, 0x00, 0x11, 0x13, 0x03, 0x04, 0x7F, 0xFF]) + bytes(range(256))
    async with PtyPair() as pair:
        fa, fb = open_raw(pair.a), open_raw(pair.b)
        try:
            os.write(fa, payload)
            assert await read_some(fb, len(payload)) == payload
            os.write(fb, b"\x01\x03\x00\x00\x00\x0a\xc5\xcd")
            assert await read_some(fa, 8) == b"\x01\x03\x00\x00\x00\x0a\xc5\xcd"
        finally:
            os.close(fa)
            os.close(fb)
        assert os.path.realpath(pair.link_a) == pair.a
        assert os.path.realpath(pair.link_b) == pair.b


async def test_ptypair_unplug_and_replug():
    async with PtyPair() as pair:
        old = pair.a
        fa, fb = open_raw(pair.link_a), open_raw(pair.b)
        try:
            pair.unplug()
            assert not pair.plugged
            with pytest.raises(OSError) as err:
                os.write(fa, b"x")
            assert err.value.errno == errno.EIO
            with pytest.raises(OSError):
                os.close(os.open(old, os.O_RDWR | os.O_NOCTTY))
            os.write(fb, b"into the void")  # dropped, must not break the relay
            pair.replug()
            assert pair.plugged
            assert os.path.realpath(pair.link_a) == pair.a  # re-pointed
            fa2 = open_raw(pair.link_a)
            try:
                os.write(fb, b"back")
                assert await read_some(fa2, 4) == b"back"
                os.write(fa2, b"again")
                assert await read_some(fb, 5) == b"again"
            finally:
                os.close(fa2)
        finally:
            os.close(fa)
            os.close(fb)


async def test_ptypair_cleans_up():
    async with PtyPair() as pair:
        paths = (pair.a, pair.b)
        link_dir = os.path.dirname(pair.link_a)
    assert not any(os.path.exists(p) for p in paths)
    assert not os.path.exists(link_dir)


# ------------------------------------------------------------------ run_cabinet


async def test_run_cabinet_prints_status_until_stopped():
    lines: list[str] = []
    stop = asyncio.Event()

    def out(line: str) -> None:
        lines.append(line)
        if len(lines) >= 3:
            stop.set()

    await asyncio.wait_for(
        run_cabinet(
            ports=2, scenario="overpower", tcp="127.0.0.1:0", serial="pty",
            scenario_port=2, seed=1, status_every=0.01, stop_event=stop, out=out,
        ),
        timeout=5.0,
    )
    assert "scenario 'overpower'" in lines[0] and "TCP 127.0.0.1:" in lines[0]
    assert "RTU via pty" in lines[0]
    assert "p1 ON" in lines[1] and "p2 ON" in lines[1] and "no smoke" in lines[1]


async def test_run_cabinet_stops_on_cancel():
    started = asyncio.Event()
    task = asyncio.create_task(
        run_cabinet(tcp="127.0.0.1:0", status_every=10.0, out=lambda _line: started.set())
    )
    await asyncio.wait_for(started.wait(), 5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
