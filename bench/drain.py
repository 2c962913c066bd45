"""Outbox drain after an uplink outage: how fast a backlog goes out, and that alarms don't wait.

Set-up: the gateway with its durable outbox (SQLite, as shipped), an InfluxDB v2
sink to a real VictoriaMetrics, and its MQTT link to a real Mosquitto (the alarm
probe of ``bench.latency`` subscribes there). VictoriaMetrics is stopped first:
the uplink is down.

1. Outage: a feeder puts the readings of a 10-minute outage at 1,000 readings/s
   (600,000; 20,000 quick) from 100 synthetic 10-port cabinets, faster than real
   time, with timestamps spread over the 10 minutes before it started; the live
   load (``bench.latency.background``: 1,000 readings/s from 100 other cabinets)
   runs meanwhile and goes on to the end. The outbox commits everything; the
   sink fails and backs off.
2. The feeder's burst inflates the outbox's measured ingest rate (the pacing's
   base); the run waits until that rate is back near the live 1,000/s, as it
   would be after a real outage, before the uplink returns.
3. VictoriaMetrics starts again. Measured: from its start to the sink's cursor
   passing the last backlog row (time to drain: the sink's retry backoff plus the
   drain itself), and the backlog's rows over the time from the first confirmed
   write to that point (the drain rate). Once a tenth of the backlog is out,
   over-power alarms are raised as in ``bench.latency`` (one every 20 ms) and
   their latency, put -> MQTT subscriber, is measured.
4. Afterwards every backlog reading must be in VictoriaMetrics (one ``power``
   point each, counted by device).

Run twice: with the default ``outbox.drain_rate_multiple`` (a backlog goes at most
that many times the live rate) and with it null (as fast as the upstream takes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import (
    SITE_ID,
    TOKEN_ENV,
    Figure,
    at_most,
    ev_cabinet_fields,
    info,
    load_site,
    on_server_cpus,
    percentile,
    running,
    wait_until,
)
from bench.latency import (
    BACKGROUND_PER_S,
    POWER_LIMIT,
    TARGET_P99_MS,
    Probe,
    background,
    threshold_alarms,
)
from bench.latency import site as latency_site
from bench.throughput import value_pool

NAME = "drain"
OUTAGE_S = 600  # the outage the backlog stands for
BACKLOG_DEVICES = 100
CHANNELS = 10
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def site(mqtt_port: int, influx_url: str, drain_rate_multiple: float | None) -> dict[str, Any]:
    """The latency bench's site (live cabinets, alarm cabinets, rules, MQTT) with an InfluxDB
    sink instead of the null one, backlog cabinets, and the drain setting under test."""
    raw = latency_site(mqtt_port)
    raw.pop("local_series", None)
    raw["devices"] = raw["devices"] + [
        {"id": f"bk-{i:03d}", "type": "synthetic", "kind": "ev_charging",
         "fields": ev_cabinet_fields(), "channels": CHANNELS, "poll_interval": 86400,
         "location": {"building": str(i // 10 + 1), "floor": "B3"}}
        for i in range(BACKLOG_DEVICES)
    ]
    raw["influxdb"] = {"url": influx_url, "org": "bench", "bucket": "bench",
                       "token": {"env": TOKEN_ENV}}
    raw["outbox"] = {"store": "sqlite", "drain_rate_multiple": drain_rate_multiple}
    return raw


async def feed_backlog(pipeline, readings: int, rate: float, ts_end: float) -> None:
    """Put ``readings`` (10 a put) at ``rate`` readings/s, stamped as if they had come at
    1,000/s over the ``OUTAGE_S`` seconds before ``ts_end``: each cabinet once a second."""
    from gateway.readings import Reading

    pool = value_pool(max_power=POWER_LIMIT - 200)
    n = len(pool)
    puts = readings // CHANNELS
    span = OUTAGE_S * readings / (OUTAGE_S * BACKGROUND_PER_S)  # seconds the backlog covers
    ts0 = ts_end - span
    step = span / puts  # seconds between consecutive puts
    loop = asyncio.get_running_loop()
    start = loop.time()
    period = CHANNELS / rate
    for k in range(puts):
        device = f"bk-{k % BACKLOG_DEVICES:03d}"
        ts = ts0 + k * step
        await pipeline.put([Reading(device, ch, pool[(k + ch) % n], ts)
                            for ch in range(1, CHANNELS + 1)])
        delay = start + (k + 1) * period - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


def _start_on_server_cpus(vm) -> None:
    # Run in a worker thread: affinity is per thread, and the server forked here inherits it.
    with on_server_cpus():
        vm.start()


def _vm_count(url: str, devices: str) -> int:
    """``power`` points stored for devices matching the regex ``devices``."""
    with _OPENER.open(url + "/internal/force_flush", timeout=10):
        pass
    query = urllib.parse.urlencode({"query": "sum(count_over_time(ev_charging_power"
                                             f'{{site="{SITE_ID}",device=~"{devices}"}}[3d]))'})
    with _OPENER.open(f"{url}/api/v1/query?{query}", timeout=60) as resp:
        body = json.load(resp)
    result = body["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


async def drain_run(opts, tmp: Path, broker_port: int, multiple: float | None) -> list[Figure]:
    """One outage and recovery with ``drain_rate_multiple`` = ``multiple``."""
    from servers import VictoriaMetrics

    from gateway.runtime.app import Gateway

    backlog = 20_000 if opts.quick else OUTAGE_S * BACKGROUND_PER_S
    feed_rate = 10_000 if opts.quick else 50_000
    alarms = 20 if opts.quick else 100
    label = (f"drain_rate_multiple {multiple:g} (default)" if multiple is not None
             else "drain_rate_multiple null (unpaced)")

    with on_server_cpus():
        vm = VictoriaMetrics()
        vm.start()  # once, to fix its port; stopped at once: the uplink is down
    vm.stop()
    # The backlog's stamps end before the gateway starts, so none falls within a
    # millisecond of a backlog cabinet's own first poll (VictoriaMetrics would merge them).
    ts_end = time.time()
    try:
        gateway = Gateway(load_site(site(broker_port, vm.url, multiple), tmp))
        sink, outbox, pipeline = gateway.sinks[0], gateway.outbox, gateway.pipeline
        sent: dict[float, float] = {}
        async with Probe(broker_port, f"community/{SITE_ID}/alarm_events") as probe, \
                running(gateway):
            await wait_until(lambda: gateway.mqtt.connected, 10, "the gateway's MQTT link")
            await wait_until(lambda: all(r.health.polls for r in gateway.runners), 10,
                             "the first polls")
            live = asyncio.create_task(background(pipeline, BACKGROUND_PER_S), name="bench-live")
            try:
                # -- the outage: the backlog piles up in the outbox ---------------------------
                t_built = time.monotonic()
                await feed_backlog(pipeline, backlog, feed_rate, ts_end)
                build_s = time.monotonic() - t_built
                await wait_until(pipeline.queue.empty, 30, "the backlog processed")
                fed = outbox.head  # live rows keep coming: wait for the commit past the backlog
                await wait_until(lambda: outbox.committed_id >= fed, 30, "the backlog committed")
                # the feeder's burst is not the site's live rate: let the measure settle
                with contextlib.suppress(TimeoutError):
                    await wait_until(lambda: outbox.live_rate < 1.25 * BACKGROUND_PER_S,
                                     3 if opts.quick else 90, "the live rate to settle")
                await asyncio.sleep(0.2)  # a commit of live rows after the last backlog one
                head = outbox.committed_id  # every backlog row is at or before it
                cursor0, live_rate = sink.cursor, outbox.live_rate
                rows = head - cursor0  # the backlog as the sink sees it (live rows of the outage too)

                # -- the uplink is back ------------------------------------------------------
                t_up = time.monotonic()
                await asyncio.to_thread(_start_on_server_cpus, vm)
                t_started = time.monotonic()
                await wait_until(lambda: sink.cursor > cursor0, 120, "the first write")
                t_first, cpu0 = time.monotonic(), time.process_time()
                await wait_until(lambda: sink.cursor >= cursor0 + rows // 10, 600,
                                 "a tenth of the backlog out")
                alarm_task = asyncio.create_task(threshold_alarms(gateway, alarms, sent),
                                                 name="bench-alarms")
                # whether the backlog was still going out when the last alarm was put
                during: list[bool] = []
                alarm_task.add_done_callback(lambda _: during.append(sink.cursor < head))
                await wait_until(lambda: sink.cursor >= head, 900, "the backlog drained")
                t_done, cpu1 = time.monotonic(), time.process_time()
                await alarm_task
                await asyncio.sleep(0)  # the done callback
                mid_drain = all(during)
                # the live rows that queued behind the backlog are paced too: caught up
                # once the sink is back on live rows (and before the live load stops,
                # or the pacing's base falls to drain_min_rate)
                await wait_until(lambda: not sink.draining and sink.lag < sink.batch_size,
                                 900, "the sink to catch up with the live rows")
                t_caught = time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await wait_until(lambda: len(probe.arrivals.keys() & sent.keys()) >= len(sent),
                                     5, "the alarms at the subscriber")
            finally:
                live.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await live
            await wait_until(lambda: sink.written + sink.dropped + sink.quarantined
                             >= pipeline.readings, 120, "the sink to write everything")
        stored = await asyncio.to_thread(_vm_count, vm.url, "bk-.*")
    finally:
        vm.close()

    drain_s = t_done - t_first
    rate = rows / drain_s if drain_s > 0 else float("nan")
    cap = ("no cap" if multiple is None
           else f"cap max({multiple:g} x live rate, drain_min_rate) = "
                f"{max(multiple * live_rate, 500):,.0f} rows/s at the start")
    got = [v for v in sent if v in probe.arrivals]
    lat = [(probe.arrivals[v] - sent[v]) * 1000 for v in got]
    lost_alarms = len(sent) - len(got)
    # each backlog cabinet's one poll at start is stored too: a reading per port
    expected = backlog + BACKLOG_DEVICES * CHANNELS
    missing = expected - stored
    return [
        info(NAME, f"time to drain, {label}", t_done - t_up, "s",
             f"{rows:,} rows ({backlog:,} backlog readings + the live ones of the outage, "
             f"fed in {build_s:.1f} s) from VictoriaMetrics' start: server up "
             f"{t_started - t_up:.1f} s, first write {t_first - t_started:.1f} s later "
             f"(the sink's retry backoff), drained {drain_s:.1f} s after that; caught up with the "
             f"live rows queued behind it {t_caught - t_up:.1f} s after the start"),
        info(NAME, f"drain rate, {label}", rate, "rows/s",
             f"first write to last backlog row, live load {BACKGROUND_PER_S:,}/s going on "
             f"(measured live rate {live_rate:,.0f}/s); {cap}; "
             f"gateway CPU {(cpu1 - cpu0) / drain_s:.0%}"),
        at_most(NAME, f"alarm latency mid-drain p99, {label}", percentile(lat, 99),
                TARGET_P99_MS, "ms",
                f"{len(got)} of {len(sent)} over-power alarms, put -> MQTT subscriber; "
                f"p50 {percentile(lat, 50):.1f} ms, max {max(lat, default=float('nan')):.1f} ms; "
                + ("all raised while the backlog drained" if mid_drain
                   else "the drain ENDED before the last alarm")
                + (f"; {lost_alarms} MISSING" if lost_alarms else "")),
        Figure(NAME, f"backlog readings missing in VictoriaMetrics, {label}", missing,
               "readings", "= 0", missing == 0,
               f"stored {stored:,} of {expected:,} (ev_charging_power of the bk-* cabinets: "
               f"the backlog and their {BACKLOG_DEVICES * CHANNELS:,} first-poll readings); "
               f"outbox dropped {outbox.dropped:,}, sink quarantined {sink.quarantined:,}, "
               f"write retries {sink.errors}"),
    ]


async def run(opts) -> list[Figure]:
    """The drain with the default pacing, then unpaced."""
    from servers import Mosquitto

    from gateway.config.models import OutboxConfig

    default_multiple = OutboxConfig().drain_rate_multiple
    figures: list[Figure] = []
    with on_server_cpus():
        broker = Mosquitto()
        broker.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-drain-") as d:
            for multiple in (default_multiple, None):
                figures += await drain_run(opts, Path(d), broker.port, multiple)
    finally:
        broker.close()
    return figures
