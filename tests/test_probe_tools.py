"""``probe modbus`` and ``probe serial`` against the simulators (Modbus TCP, RTU on a pty, radar)."""

from __future__ import annotations

import asyncio
import sys

from simulators.charging_cabinet import DEFAULT_ALARM_THRESHOLD_W, CabinetModel
from simulators.modbus_server import CabinetServer
from simulators.ptypair import PtyPair
from simulators.radar import Faults, radar_on_pty


async def probe(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "probe", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(20):
        out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


def decoded(out: str) -> list[float]:
    """The values under 'decoded as ...'."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("decoded as"))
    return [float(line.split()[1]) for line in lines[start + 1:]]


async def test_probe_modbus_tcp_reads_and_decodes() -> None:
    model = CabinetModel(ports=2, scenario="normal", scenario_port=1, seed=3)
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv:
        where = ["--tcp", f"127.0.0.1:{srv.port}"]
        rc, out, _ = await probe("modbus", *where, "--slave", "2", "--table", "holding",
                                 "--address", "1", "--count", "2")
        assert rc == 0, out
        assert "slave 2, holding 1..2 (2)" in out
        assert f"0x{DEFAULT_ALARM_THRESHOLD_W:04X}" in out
        assert decoded(out) == [DEFAULT_ALARM_THRESHOLD_W, 2.0]  # threshold, then its own address

        # the meter's voltage (input 0, x0.1) and power (input 3..4, u32 low word first, x0.1)
        rc, out, _ = await probe("modbus", *where, "--slave", "1", "--table", "input",
                                 "--address", "0", "--count", "1", "--scale", "0.1")
        assert rc == 0 and 220 <= decoded(out)[0] <= 235
        rc, out, _ = await probe("modbus", *where, "--slave", "1", "--table", "input",
                                 "--address", "3", "--count", "2", "--type", "u32",
                                 "--word-order", "little", "--scale", "0.1")
        assert rc == 0 and "u32, word order little, x 0.1" in out
        assert abs(decoded(out)[0] - model.port_power_w(1)) < 400

        rc, out, _ = await probe("modbus", *where, "--slave", "100", "--table", "coil",
                                 "--address", "0", "--count", "2")
        assert rc == 0 and out.splitlines()[1:] == ["      0  1", "      1  1"]  # relays on

        rc, _, err = await probe("modbus", *where, "--slave", "1", "--table", "input",
                                 "--address", "500", "--count", "2")
        assert rc == 1 and "exception 2: illegal data address" in err
        rc, _, err = await probe("modbus", *where, "--slave", "9", "--table", "input",
                                 "--count", "1", "--timeout", "0.3")
        assert rc == 1 and "no answer from slave 9" in err
    rc, _, err = await probe("modbus", *where, "--slave", "1", "--count", "1")
    assert rc == 1 and f"cannot connect to 127.0.0.1:{srv.port}" in err
    rc, _, err = await probe("modbus", *where, "--count", "1", "--type", "u32")
    assert rc == 2 and "--count 2" in err


async def test_probe_modbus_rtu_on_a_serial_line() -> None:
    model = CabinetModel(ports=2, scenario="normal", scenario_port=1, seed=4)
    async with PtyPair() as pair, CabinetServer(model, serial=pair.b, baudrate=9600):
        rc, out, err = await probe("modbus", "--serial", pair.link_a, "--baudrate", "9600",
                                   "--slave", "1", "--table", "holding", "--address", "1",
                                   "--count", "2")
        assert rc == 0, err
        assert f"Modbus RTU {pair.link_a} 9600 8N1, slave 1" in out
        assert decoded(out) == [DEFAULT_ALARM_THRESHOLD_W, 1.0]


async def probe_serial_during_fall(sim, *args: str) -> tuple[int, list[str]]:
    """Run ``probe serial``; once it listens, the simulated person falls (the radar reports it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "probe", "serial", *args, "--seconds", "1.5",
        stdout=asyncio.subprocess.PIPE)
    async with asyncio.timeout(20):
        first = await proc.stdout.readline()
        assert first.startswith(b"listening on ")
        sim.model.trigger_fall()
        rest, _ = await proc.communicate()
    return proc.returncode, (first + rest).decode().splitlines()


async def test_probe_serial_dumps_and_decodes_radar_frames() -> None:
    async with radar_on_pty(protocol="mr60fda1", scenario="normal", interval=0.05,
                            seed=1) as (sim, pair):
        rc, lines = await probe_serial_during_fall(sim, "--port", pair.link_a, "--codec", "mr60fda1")
    assert rc == 0
    assert any(" bytes  53 59 " in line for line in lines)  # the hex dump of what arrived
    frames = [line for line in lines if line.lstrip().startswith("frame 53 59")]
    assert frames and any("fall=1" in f and "event fall" in f for f in frames)
    summary = lines[-1]
    assert f"frames_ok {len(frames)}" in summary and "bad_checksum 0" in summary


async def test_probe_serial_counts_bad_bytes() -> None:
    faults = Faults(garbage=True, bad_checksum=True, every=1)
    async with radar_on_pty(protocol="ld6002c", scenario="normal", interval=0.05, faults=faults,
                            seed=2) as (sim, pair):
        rc, lines = await probe_serial_during_fall(sim, "--port", pair.link_a, "--codec", "ld6002c",
                                                   "--no-hex")
    assert rc == 0
    counters = dict(part.rsplit(" ", 1) for part in lines[-1].split("; ")[1].split(", "))
    assert int(counters["garbage_bytes"]) > 0 and int(counters["bad_checksum"]) > 0
    assert not any(" bytes  " in line for line in lines)


async def test_probe_serial_missing_port(tmp_path) -> None:
    rc, _, err = await probe("serial", "--port", str(tmp_path / "ttyUSB9"), "--codec", "mr60fda1",
                             "--seconds", "1")
    assert rc == 1 and "cannot open" in err
