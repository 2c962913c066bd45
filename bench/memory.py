"""Resident memory with 1,000 configured devices, and its growth over a run.

The site: 1,000 synthetic devices (4 channels of 6 fields each, polled every
second: 4,000 readings/s), three threshold rules, a null upstream sink (the local
line-protocol file sink writing /dev/null) behind the default durable outbox.
VmRSS of the gateway's process is sampled once a second: before the config is
loaded (the interpreter and imports), once the gateway is built, after startup
(every device polled a few times), and to the end of the run (60 s, 5 s quick).
Growth is end minus after-startup, and the same over the run's second half, where
a leak would show as a steady climb while warm-up effects (caches, the outbox's
first pages, allocator arenas) have settled.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    SITE_ID,
    Figure,
    info,
    load_site,
    null_series,
    rss_kib,
    running,
    wait_until,
)

NAME = "memory"
DEVICES = 1000
CHANNELS = 4
FIELDS = ["voltage", "current", "power", "energy", "power_factor", "temperature"]
STARTUP_SECONDS = 3.0  # 1 s in a quick run


def site(devices: int = DEVICES) -> dict[str, Any]:
    """1,000 polled synthetic devices, three rules, a null sink."""
    return {
        "site": {"id": SITE_ID},
        "local_series": null_series(),
        "devices": [
            {"id": f"dev-{i:04d}", "type": "synthetic", "kind": "ev_charging", "fields": FIELDS,
             "channels": CHANNELS, "poll_interval": 1.0,
             "location": {"building": str(i // 100 + 1), "unit": str(i // 10 % 10 + 1),
                          "floor": str(i % 10 + 1)}}
            for i in range(devices)
        ],
        "rules": [
            {"id": "over-power", "type": "threshold", "select": {"kinds": ["ev_charging"]},
             "field": "power", "above": 99, "hysteresis": 5},
            {"id": "over-temperature", "type": "threshold", "select": {"kinds": ["ev_charging"]},
             "field": "temperature", "above": 99, "hysteresis": 5},
            {"id": "under-voltage", "type": "threshold", "select": {"kinds": ["ev_charging"]},
             "field": "voltage", "below": 1, "hysteresis": 1},
        ],
    }


def _mib(kib: float) -> float:
    return kib / 1024


async def run(opts) -> list[Figure]:
    """RSS at each stage and its growth over ``opts.memory_seconds``."""
    from gateway.runtime.app import Gateway  # imported before the baseline: it is part of any gateway

    baseline = rss_kib()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as d:
        loaded = load_site(site(), Path(d))
        gateway = Gateway(loaded)
        built = rss_kib()
        async with running(gateway):
            await wait_until(lambda: all(r.health.polls for r in gateway.runners), 30,
                             "every device's first poll")
            settle = 1.0 if opts.quick else STARTUP_SECONDS
            await asyncio.sleep(settle)
            start = rss_kib()
            readings0, cpu0, t0 = gateway.pipeline.readings, time.process_time(), time.monotonic()
            samples = [start]
            deadline = t0 + opts.memory_seconds
            while time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                samples.append(rss_kib())
            elapsed = time.monotonic() - t0
            rate = (gateway.pipeline.readings - readings0) / elapsed
            cpu = (time.process_time() - cpu0) / elapsed
            dropped = sum(s.dropped for s in gateway.sinks)
    end = samples[-1]
    half = samples[len(samples) // 2]
    seconds = opts.memory_seconds
    return [
        info(NAME, "RSS: interpreter + gateway imports", _mib(baseline), "MiB"),
        info(NAME, "RSS: 1,000 devices configured (built, not started)", _mib(built), "MiB",
             f"+{_mib(built - baseline):.1f} MiB for the config, specs, drivers, rules"),
        info(NAME, "RSS: after startup", _mib(start), "MiB",
             f"{settle:g} s after every device's first poll; "
             f"{(start - baseline) / DEVICES:.1f} KiB per device over the baseline"),
        info(NAME, f"RSS: end of a {seconds:g} s run", _mib(end), "MiB",
             f"peak {_mib(max(samples)):.1f} MiB"),
        info(NAME, f"RSS growth over {seconds:g} s", _mib(end - start), "MiB",
             f"second half alone: {_mib(end - half):+.2f} MiB"),
        info(NAME, "load while measuring", rate, "readings/s",
             f"{DEVICES:,} devices x {CHANNELS} channels at 1 s; gateway CPU {cpu:.0%}; "
             f"dropped {dropped}"),
    ]
