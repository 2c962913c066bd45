"""The benchmark command: runs each benchmark in a fresh interpreter and prints the table.

    python -m bench                  # every benchmark, full length (a few minutes)
    python -m bench --quick          # every benchmark, seconds each (the smoke test)
    python -m bench --only latency   # one benchmark (repeatable)
    python bench/run.py ...          # the same

Each benchmark runs in its own child process (``--worker NAME``), pinned to one
core, so one benchmark's servers, caches and memory never colour the next
one's figures. The exit status is 0 whether or not targets are met (the table
says so); it is 1 only when a benchmark itself failed to run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # ``python bench/run.py``: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, STUCK_STOPS, Figure, pin_gateway, pinning  # noqa: E402

#: Benchmark name -> module with ``async def run(opts) -> list[Figure]``.
BENCHMARKS: dict[str, str] = {
    "throughput": "bench.throughput",
    "latency": "bench.latency",
    "modbus": "bench.modbus",
    "memory": "bench.memory",
    "protocols": "bench.protocols",
    "drain": "bench.drain",
    "fire_centre": "bench.fire_centre",
    "reconnect": "bench.reconnect",
    "hub": "bench.hub",
    "hub_console": "bench.hub_console",
    "pi": "bench.pi",
    "powercut": "bench.powercut",
}
RESULT_MARK = "BENCH-RESULT "
# A benchmark that has not finished by then is stuck: its tasks are dumped, it is ended.
CHILD_TIMEOUT = {True: 120.0, False: 900.0}  # by quick


@dataclass(slots=True)
class Options:
    """What a benchmark may be told; durations depend on ``quick``."""

    quick: bool
    warmup: float
    window: float
    outbox: str = "default"
    memory_seconds: float = 60.0


def options(args: argparse.Namespace) -> Options:
    """Durations for quick (smoke) and full runs, with the command line's overrides."""
    quick = args.quick
    opts = Options(quick=quick, warmup=0.5 if quick else 2.0, window=1.0 if quick else 5.0,
                   outbox=args.outbox, memory_seconds=5.0 if quick else 60.0)
    if args.window is not None:
        opts.window = args.window
    if args.memory_seconds is not None:
        opts.memory_seconds = args.memory_seconds
    return opts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="seconds per benchmark, not minutes")
    ap.add_argument("--only", action="append", choices=sorted(BENCHMARKS), metavar="NAME",
                    help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    ap.add_argument("--window", type=float, help="measuring window in seconds (throughput, modbus)")
    ap.add_argument("--memory-seconds", type=float, help="length of the memory run")
    ap.add_argument("--outbox", choices=("default", "sqlite", "memory", "both"), default="default",
                    help="outbox store for the throughput runs (default: as the gateway ships, "
                         "sqlite; both: sqlite and memory side by side)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    ap.add_argument("--profile", type=Path, metavar="DIR",
                    help="write a cProfile of each benchmark's process to DIR/NAME.prof")
    ap.add_argument("--worker", choices=sorted(BENCHMARKS), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


# -- the child: one benchmark -------------------------------------------------------------


def worker(name: str, args: argparse.Namespace) -> None:
    """Run one benchmark in this process and print its figures as one JSON line."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pin_gateway()
    module = importlib.import_module(BENCHMARKS[name])
    opts = options(args)
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    figures: list[Figure] = asyncio.run(_with_watchdog(module.run(opts),
                                                        CHILD_TIMEOUT[opts.quick] - 10))
    if STUCK_STOPS:
        figures.append(Figure(name, "gateway stops that swallowed the cancellation",
                              len(STUCK_STOPS), "stops", "= 0", False,
                              "; ".join(STUCK_STOPS[:3])))
    if profiler:
        profiler.disable()
        args.profile.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(args.profile / f"{name}.prof")
    print(RESULT_MARK + json.dumps([f.to_json() for f in figures]), flush=True)


async def _with_watchdog(coro, seconds: float):
    """Run ``coro``; if it is still running after ``seconds``, print every task's stack
    to stderr (where it is stuck) and cancel it."""
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait([task], timeout=seconds)
    if not done:
        print(f"benchmark still running after {seconds:.0f}s; its tasks:", file=sys.stderr)
        for t in asyncio.all_tasks():
            if t is not asyncio.current_task():
                t.print_stack(file=sys.stderr)
        task.cancel()
    return await task


# -- the parent: run children, print the table ----------------------------------------------


def run_child(name: str, args: argparse.Namespace) -> tuple[list[Figure], str | None]:
    """Run benchmark ``name`` in a child interpreter; its figures, or an error text."""
    cmd = [sys.executable, "-m", "bench.run", "--worker", name, "--outbox", args.outbox]
    if args.quick:
        cmd.append("--quick")
    if args.window is not None:
        cmd += ["--window", str(args.window)]
    if args.memory_seconds is not None:
        cmd += ["--memory-seconds", str(args.memory_seconds)]
    if args.profile:
        cmd += ["--profile", str(args.profile.resolve())]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # Its own session, so a stuck child and whatever it started can be ended together.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=CHILD_TIMEOUT[args.quick] + 30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        stderr += f"\nkilled after {CHILD_TIMEOUT[args.quick] + 30:.0f}s"
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return [Figure(**f) for f in json.loads(line[len(RESULT_MARK):])], None
    tail = "\n".join((stderr or stdout).strip().splitlines()[-40:])
    return [], f"exit code {proc.returncode}:\n{tail}"


def machine_facts() -> dict[str, str]:
    """CPU model, cores, memory, OS and Python, for the report."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            info = {}
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip().lower(), value.strip())
        # x86: "model name"; Raspberry Pi: "Model" (the board), "Hardware" on older kernels
        model = info.get("model name") or info.get("model") or info.get("hardware") or model
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
        mem = f"{kib / 1024 / 1024:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": model,
        "cores": f"{os.cpu_count()} ({len(os.sched_getaffinity(0))} usable)",
        "memory": mem,
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "pinning": pinning(),
        # other work on the machine skews every figure: say how busy it was
        "load": "load average {:.2f} {:.2f} {:.2f} (1, 5, 15 min) at start".format(*os.getloadavg()),
    }


def _value(f: Figure) -> str:
    if f.value is None:
        return "n/a"
    v = f.value
    if abs(v) >= 1000 or float(v).is_integer():
        text = f"{v:,.0f}"
    elif abs(v) >= 10:
        text = f"{v:,.1f}"
    else:
        text = f"{v:.3g}"
    return f"{text} {f.unit}"


def table(figures: list[Figure]) -> str:
    """The figures as an aligned text table, notes on the line below each."""
    rows = [("benchmark", "figure", "value", "target", "result")]
    notes = []
    for f in figures:
        result = "" if f.ok is None else ("PASS" if f.ok else "MISS")
        rows.append((f.bench, f.name, _value(f), f.target or "-", result))
        notes.append(f.note)
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if k != 2 else c.rjust(w)
                               for k, (c, w) in enumerate(zip(row, widths))).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
        elif notes[i - 1]:
            lines.append(" " * (widths[0] + 2) + "  " + notes[i - 1])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m bench``."""
    args = parse_args(argv)
    if args.worker:
        worker(args.worker, args)
        return
    names = args.only or list(BENCHMARKS)
    facts = machine_facts()
    print(f"community-gateway benchmarks ({'quick' if args.quick else 'full'} run, "
          f"{time.strftime('%Y-%m-%d %H:%M')})")
    for key, value in facts.items():
        print(f"  {key:8} {value}")
    print(flush=True)
    figures: list[Figure] = []
    errors: dict[str, str] = {}
    for name in names:
        started = time.monotonic()
        print(f"running {name} ...", end=" ", flush=True)
        got, error = run_child(name, args)
        print(f"{time.monotonic() - started:.1f}s" + (" FAILED" if error else ""), flush=True)
        figures += got
        if error:
            errors[name] = error
    print()
    print(table(figures))
    missed = [f for f in figures if f.ok is False]
    print()
    print(f"{sum(f.ok is True for f in figures)} targets met, {len(missed)} missed"
          + "".join(f"\n  missed: {f.bench} / {f.name}" for f in missed))
    for name, error in errors.items():
        print(f"\nbenchmark {name} failed to run ({error})")
    if args.json:
        args.json.write_text(json.dumps({"machine": facts, "quick": args.quick,
                                         "figures": [f.to_json() for f in figures],
                                         "errors": errors}, indent=2))
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
