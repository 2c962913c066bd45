"""What every benchmark shares: figures, CPU pinning, process facts, a gateway in the loop.

Each benchmark runs in its own interpreter (see ``bench.run``), pinned to one
core when the machine has two: the gateway is one asyncio loop, so one core is
what it gets on a Pi under load; the servers it talks to (VictoriaMetrics,
Mosquitto, the Modbus simulators, the MQTT probe) get the other core, so they
do not steal the gateway's CPU and their cost is not counted as the gateway's.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
if str(TESTS) not in sys.path:  # tests/servers.py: stdlib-only server helpers, shared with tests
    sys.path.insert(0, str(TESTS))

SITE_ID = "bench"
TOKEN_ENV = "BENCH_INFLUX_TOKEN"
os.environ.setdefault(TOKEN_ENV, "bench-token")  # VictoriaMetrics ignores it; the config needs one


@dataclass(slots=True)
class Figure:
    """One measured number, with its target when the design sets one.

    ``ok`` is True/False against ``target``; None when there is no target
    (a figure reported for information).
    """

    bench: str
    name: str
    value: float | None
    unit: str
    target: str = ""
    ok: bool | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """Plain dict for the parent process (NaN-free)."""
        out = asdict(self)
        if isinstance(self.value, float) and not math.isfinite(self.value):
            out["value"] = None
        return out


def at_least(bench: str, name: str, value: float, target: float, unit: str, note: str = "") -> Figure:
    """A figure that must reach ``target``."""
    return Figure(bench, name, value, unit, f">= {target:,g} {unit}", value >= target, note)


def at_most(bench: str, name: str, value: float, target: float, unit: str, note: str = "") -> Figure:
    """A figure that must stay under ``target``."""
    return Figure(bench, name, value, unit, f"<= {target:,g} {unit}", value <= target, note)


def info(bench: str, name: str, value: float | None, unit: str, note: str = "") -> Figure:
    """A figure reported without a target."""
    return Figure(bench, name, value, unit, "", None, note)


# -- CPU pinning -----------------------------------------------------------------------


def _cpus() -> tuple[set[int], set[int]] | None:
    if os.environ.get("BENCH_NO_PIN"):
        return None
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    if len(allowed) < 2:
        return None
    return {allowed[0]}, set(allowed[1:])


CPUS = _cpus()  # (gateway cpus, server cpus), or None when not pinning


def pinning() -> str:
    """How this run is pinned, for the report."""
    if CPUS is None:
        return "not pinned"
    gw, srv = CPUS
    return f"gateway on CPU {min(gw)}, servers on CPU {','.join(map(str, sorted(srv)))}"


def pin_gateway() -> None:
    """Pin this process (the gateway under test) to its core."""
    if CPUS is not None:
        os.sched_setaffinity(0, CPUS[0])


@contextlib.contextmanager
def on_server_cpus() -> Iterator[None]:
    """Processes started inside this block inherit the servers' cores (fork keeps affinity)."""
    if CPUS is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, CPUS[1])
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# -- process facts -----------------------------------------------------------------------


def rss_kib(pid: int | str = "self") -> int:
    """Resident set size (VmRSS) of a process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN when empty."""
    if not values:
        return math.nan
    data = sorted(values)
    pos = (len(data) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


async def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` every 10 ms until it is truthy; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass(slots=True)
class Window:
    """Counters' increments and this process's CPU use over a measured window."""

    counts: dict[str, int]
    seconds: float
    cpu: float  # CPU seconds used by this process (every thread) in the window
    others: dict[int, float]  # CPU seconds used by other processes (by pid) in the window

    def rate(self, name: str) -> float:
        """Increments of counter ``name`` per second."""
        return self.counts[name] / self.seconds if self.seconds > 0 else math.nan

    @property
    def cpu_share(self) -> float:
        """Fraction of one core this process used."""
        return self.cpu / self.seconds if self.seconds > 0 else math.nan

    def share_of(self, pid: int) -> float:
        """Fraction of one core process ``pid`` used."""
        return self.others[pid] / self.seconds if self.seconds > 0 else math.nan


async def measure(counters: dict[str, Callable[[], int]], *, warmup: float, window: float,
                  pids: tuple[int, ...] = ()) -> Window:
    """Wait ``warmup`` seconds, then read ``counters`` over ``window`` seconds."""
    await asyncio.sleep(warmup)
    c0 = {name: read() for name, read in counters.items()}
    t0, cpu0 = time.perf_counter(), time.process_time()
    others0 = {pid: cpu_seconds(pid) for pid in pids}
    await asyncio.sleep(window)
    c1 = {name: read() for name, read in counters.items()}
    t1, cpu1 = time.perf_counter(), time.process_time()
    others = {pid: cpu_seconds(pid) - others0[pid] for pid in pids}
    return Window({n: c1[n] - c0[n] for n in counters}, t1 - t0, cpu1 - cpu0, others)


# -- a gateway in this process -------------------------------------------------------------


def load_site(raw: dict[str, Any], directory: Path):
    """Write ``raw`` as a site file in a fresh folder under ``directory`` and load it the
    way ``run`` does. The gateway's state (outbox, alarm state file) goes in that folder
    too, never in the system's state directory."""
    from gateway.runtime import site as site_file

    global _sites
    _sites += 1
    folder = directory / f"site-{_sites}"
    folder.mkdir(parents=True)
    raw = {**raw, "state_dir": str(folder / "state")}
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return site_file.load_site(path)


_sites = 0


#: Gateway stops that needed a second cancellation (see ``running``), as text.
STUCK_STOPS: list[str] = []
STOP_WAIT = 5.0


@contextlib.asynccontextmanager
async def running(gateway) -> AsyncIterator[asyncio.Task]:
    """Run ``gateway.run()`` as a task; cancel it (a clean stop) on exit.

    If the gateway has not stopped ``STOP_WAIT`` s after the cancellation, some
    task swallowed it (Python 3.11's ``asyncio.wait_for`` does, when its inner
    future completes in the same instant; pymodbus awaits every reply through it).
    That is recorded in ``STUCK_STOPS`` (the report shows it) and the tasks still
    running are cancelled again, so the benchmark goes on.
    """
    task = asyncio.create_task(gateway.run(), name="bench-gateway")
    try:
        yield task
    finally:
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=STOP_WAIT)
        rounds = 0
        while not done:
            rounds += 1
            stuck = [t for t in asyncio.all_tasks()
                     if t is not asyncio.current_task() and t is not task and not t.done()
                     and t.cancelling()]
            if rounds == 1:
                names = ", ".join(sorted(t.get_name() for t in stuck)) or "none cancelling"
                STUCK_STOPS.append(f"still running {STOP_WAIT:g}s after cancel: {names}")
                print(f"bench: gateway did not stop; cancelling again: {names}", file=sys.stderr)
            if rounds > 6:
                raise RuntimeError("the gateway does not stop: " + STUCK_STOPS[-1])
            for t in stuck:
                t.cancel()
            done, _ = await asyncio.wait([task], timeout=STOP_WAIT)
        with contextlib.suppress(asyncio.CancelledError):
            await task


def ev_cabinet_fields() -> list[str]:
    """Per-port fields of a synthetic cabinet port, like the ev-cabinet profile's."""
    return ["voltage", "current", "power", "energy", "power_factor", "temperature"]


def null_series() -> dict[str, Any]:
    """The ``local_series`` section of a sink that writes to /dev/null (costs ~nothing).

    ``max_mb`` is huge so the sink never tries to rotate (rename) /dev/null.
    """
    return {"path": os.devnull, "max_mb": 1_000_000}
