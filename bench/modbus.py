"""Modbus: requests per poll cycle, readings/s over TCP, and RTU over a pty pair.

- Requests per poll cycle of the ``ev-cabinet`` profile with 4 and 10 ports, counted
  on the bus (``ModbusBus.requests``) over several polls of the real simulator. The
  target is the fewest requests the register map allows: one per (slave, table)
  whose span fits in one request, i.e. adjacent registers read together.
- Readings/s from several cabinets over Modbus TCP (one simulator server per
  cabinet, all in one process on the servers' core), polled back to back through
  the gateway (runners, pipeline, rules, a null sink). Both sides' CPU shares are
  given, so it is clear which one limits.
- RTU over a pty pair at 9600 and 115200 baud. A pty moves bytes at once, whatever
  the baud rate, so the measured cycle is the software's share (gateway, pymodbus,
  the simulator, the bus's frame gap); the wire time the same frames need at that
  baud (10 bits a character for 8N1, plus 3.5 characters of silence after each
  frame) is computed, and their sum estimates a cycle on a real RS-485 line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.common import (
    at_least,
    ROOT,
    SITE_ID,
    Figure,
    info,
    load_site,
    measure,
    null_series,
    on_server_cpus,
    running,
    wait_until,
)

NAME = "modbus"
PROFILE = "ev-cabinet"
BIT_TABLES = ("coil", "discrete")


def cabinet_site(buses: list[dict[str, Any]], *, ports: int, poll_interval: float) -> dict[str, Any]:
    """One ev-cabinet device per bus, one over-power rule, a null sink."""
    return {
        "site": {"id": SITE_ID},
        "local_series": null_series(),
        "buses": [{"id": f"line-{i}", **bus} for i, bus in enumerate(buses)],
        "devices": [
            {"id": f"cabinet-{i}", "type": "modbus", "bus": f"line-{i}", "profile": PROFILE,
             "channels": ports, "poll_interval": poll_interval, "offline_after": 3}
            for i in range(len(buses))
        ],
        "rules": [{"id": "over-power", "type": "threshold", "select": {"kinds": ["ev_charging"]},
                   "field": "power", "above": 2000, "hysteresis": 100}],
    }


def fewest_requests(points, limits) -> int:
    """Lower bound: one request per (slave, table), more only where a span exceeds the limit."""
    spans: dict[tuple[int, str], list[int]] = {}
    for p in points:
        lo_hi = spans.setdefault((p.slave, p.table), [p.address, p.address + p.width])
        lo_hi[0] = min(lo_hi[0], p.address)
        lo_hi[1] = max(lo_hi[1], p.address + p.width)
    total = 0
    for (_, table), (lo, hi) in spans.items():
        limit = limits.max_bits if table in BIT_TABLES else limits.max_registers
        total += math.ceil((hi - lo) / limit)
    return total


async def requests_per_cycle(ports: int, polls: int, tmp: Path) -> Figure:
    """Poll one cabinet ``polls`` times over TCP and count the requests on its bus."""
    from gateway.runtime.app import Gateway
    from simulators.charging_cabinet import CabinetModel
    from simulators.modbus_server import CabinetServer

    async with CabinetServer(CabinetModel(ports, seed=1), tcp=("127.0.0.1", 0)) as server:
        site = load_site(cabinet_site([{"type": "modbus_tcp", "host": "127.0.0.1",
                                        "port": server.port}], ports=ports, poll_interval=1), tmp)
        gateway = Gateway(site)
        driver = gateway.drivers["cabinet-0"]
        bus = gateway.buses["line-0"]
        try:
            readings = 0
            for _ in range(polls):
                readings += len(await driver.poll())
        finally:
            await bus.close()
    spec = site.devices["cabinet-0"]
    per_cycle = bus.requests / polls
    best = fewest_requests(spec.points, spec.limits)
    return Figure(NAME, f"{PROFILE}, {ports} ports: requests per poll cycle", per_cycle, "requests",
                  f"= {best} (fewest possible)", per_cycle <= best,
                  f"{len(spec.points)} fields on {ports + 1} slaves, {readings // polls} readings "
                  f"per poll; one request per field would be {len(spec.points)}")


@contextlib.asynccontextmanager
async def sim_host(*args: str) -> AsyncIterator[tuple[dict[str, Any], int]]:
    """``bench.sim_host`` in a child process on the servers' core: (where it listens, pid)."""
    with on_server_cpus():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.sim_host", *args, cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            line = await proc.stdout.readline()
        if not line:
            raise RuntimeError(f"simulator host {' '.join(args)} exited before listening")
        yield json.loads(line), proc.pid
    finally:
        if proc.returncode is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                async with asyncio.timeout(5):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _poll_flat_out(site, *, warmup: float, window: float, sim_pid: int):
    """Run the gateway with back-to-back polls; the window's counts and CPU shares."""
    from gateway.runtime.app import Gateway

    gateway = Gateway(site)
    async with running(gateway):
        await wait_until(lambda: all(r.health.polls for r in gateway.runners), 10, "first polls")
        result = await measure(
            {"readings": lambda: gateway.pipeline.readings,
             "requests": lambda: sum(b.requests for b in gateway.buses.values()),
             "polls": lambda: sum(r.health.polls for r in gateway.runners),
             "errors": lambda: sum(r.health.errors for r in gateway.runners)},
            warmup=warmup, window=window, pids=(sim_pid,))
    return result, gateway


async def tcp_cabinets(cabinets: int, opts, tmp: Path) -> list[Figure]:
    """Several 4-port cabinets over Modbus TCP, polled as fast as they answer."""
    async with sim_host("--tcp", str(cabinets), "--ports", "4") as (where, pid):
        buses = [{"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 2}
                 for port in where["tcp"]]
        site = load_site(cabinet_site(buses, ports=4, poll_interval=0.001), tmp)
        w, _ = await _poll_flat_out(site, warmup=opts.warmup, window=opts.window, sim_pid=pid)
    note = (f"{w.rate('requests'):,.0f} requests/s, {w.rate('polls'):,.0f} polls/s, "
            f"{w.counts['errors']} errors; gateway CPU {w.cpu_share:.0%}, "
            f"simulator CPU {w.share_of(pid):.0%}")
    return [info(NAME, f"TCP, {cabinets} cabinets x 4 ports, polled flat out",
                 w.rate("readings"), "readings/s", note)]


def wire_seconds(plan, baudrate: int, bits_per_char: int = 10) -> float:
    """Time the frames of one poll cycle take on an RTU line at ``baudrate`` (8N1).

    Request: slave, function, address (2), count (2), CRC (2) = 8 characters.
    Response: slave, function, byte count, data, CRC (2) = 5 + data characters.
    Each frame is followed by at least 3.5 characters of silence.
    """
    chars = 0.0
    for req in plan:
        data = math.ceil(req.count / 8) if req.table in BIT_TABLES else 2 * req.count
        chars += 8 + 3.5 + 5 + data + 3.5
    return chars * bits_per_char / baudrate


async def rtu(baudrate: int, opts, tmp: Path) -> list[Figure]:
    """One 4-port cabinet on RTU over a pty pair, polled back to back."""
    async with sim_host("--rtu", "--baudrate", str(baudrate), "--ports", "4") as (where, pid):
        bus = {"type": "modbus_rtu", "port": where["rtu"], "baudrate": baudrate}
        site = load_site(cabinet_site([bus], ports=4, poll_interval=0.001), tmp)
        w, gateway = await _poll_flat_out(site, warmup=opts.warmup, window=opts.window,
                                          sim_pid=pid)
    plan = gateway.drivers["cabinet-0"].plan
    polls = w.rate("polls")
    cycle = 1 / polls if polls else math.nan
    wire = wire_seconds(plan, baudrate)
    gap = site.config.buses[0].gap_seconds
    estimate = cycle + wire
    per_poll = w.counts["readings"] / w.counts["polls"] if w.counts["polls"] else math.nan
    # On a real line: the frames and their silences (wire), plus the part of each frame
    # gap beyond the 3.5-character silence already counted, plus the software's time
    # (the pty cycle less its gaps). The share of the wire's own ceiling that leaves:
    silence = 3.5 * 10 / baudrate
    software = max(0.0, cycle - len(plan) * gap)
    real = wire + len(plan) * max(0.0, gap - silence) + software
    cpu_cycle = w.cpu_share * cycle  # the gateway's CPU time per cycle
    figures = []
    if baudrate == 9600:
        figures.append(at_least(
            NAME, "RTU 9600 baud: share of the wire-time ceiling", wire / real * 100, 95, "%",
            f"wire {wire * 1000:.0f} ms of a ~{real * 1000:.0f} ms cycle on a real line "
            f"(frame gap {gap * 1000:.2f} ms; software {software * 1000:.1f} ms a cycle by the "
            f"wall clock: gateway, simulator, pty and the machine's load; counting the gateway's "
            f"CPU alone, {cpu_cycle * 1000:.1f} ms: {wire / (wire + cpu_cycle) * 100:.1f} %); "
            f"today 89 % (flat 10 ms gap)"))
    return figures + [
        info(NAME, f"RTU {baudrate} baud: poll cycle over the pty", cycle * 1000, "ms",
             f"{len(plan)} requests, incl. {len(plan)} x {gap * 1000:.2f} ms frame gap; "
             f"gateway CPU {w.cpu_share:.0%}, simulator CPU {w.share_of(pid):.0%}, "
             f"{w.counts['errors']} errors"),
        info(NAME, f"RTU {baudrate} baud: wire time per cycle (computed)", wire * 1000, "ms",
             "8N1, 3.5 characters of silence after each frame"),
        info(NAME, f"RTU {baudrate} baud: readings/s on a real line (estimate)",
             per_poll / estimate, "readings/s",
             f"cycle ~{estimate * 1000:.0f} ms = pty cycle + wire time; "
             f"~{int(1 / estimate)} such cabinets per line at a 1 s poll"),
    ]


async def rtu_buses_together(baudrate: int, opts, tmp: Path, single_cycle: float) -> Figure:
    """Two RTU lines (two pty pairs, a cabinet each) polled back to back at once: each
    line's cycle against one line alone. Concurrent buses keep their own pace."""
    async with sim_host("--rtu", "--baudrate", str(baudrate), "--ports", "4") as (a, pid), \
            sim_host("--rtu", "--baudrate", str(baudrate), "--ports", "4") as (b, _):
        buses = [{"type": "modbus_rtu", "port": where["rtu"], "baudrate": baudrate}
                 for where in (a, b)]
        site = load_site(cabinet_site(buses, ports=4, poll_interval=0.001), tmp)
        w, _ = await _poll_flat_out(site, warmup=opts.warmup, window=opts.window, sim_pid=pid)
    per_bus = w.rate("polls") / 2
    cycle = 1 / per_bus if per_bus else math.nan
    return info(NAME, f"RTU {baudrate} baud: 2 lines polled at once, cycle per line", cycle * 1000,
                "ms", f"one line alone: {single_cycle * 1000:.0f} ms (serialised lines would "
                      f"take twice that); gateway CPU {w.cpu_share:.0%}")


async def run(opts) -> list[Figure]:
    """Requests per cycle (4 and 10 ports), TCP readings/s, RTU at 9600 and 115200."""
    figures = []
    polls = 3 if opts.quick else 20
    with tempfile.TemporaryDirectory(prefix="bench-modbus-") as d:
        tmp = Path(d)
        for ports in (4, 10):
            figures.append(await requests_per_cycle(ports, polls, tmp))
        figures += await tcp_cabinets(2 if opts.quick else 8, opts, tmp)
        for baudrate in (9600, 115200):
            figures += await rtu(baudrate, opts, tmp)
        single = next(f.value for f in figures if f.name == "RTU 9600 baud: poll cycle over the pty")
        figures.append(await rtu_buses_together(9600, opts, tmp, single / 1000))
    return figures
