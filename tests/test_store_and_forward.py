"""Store and forward against real servers: VictoriaMetrics and Mosquitto on loopback.

The load is a meter played by a feeder: reading n carries ``seq`` = n and
``v`` = n / 2, on channel n % 4 + 1, stamped an hour back and 1 ms apart, so what
reaches VictoriaMetrics is checked point by point (count, values, timestamps)
against what was produced. The gateway's own synthetic devices add live load in
the process tests. VictoriaMetrics runs with 1 ms deduplication, as InfluxDB
overwrites a point written twice: a replay after a crash reads back once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

import aiomqtt
import pytest
from aiohttp import ClientSession, web

from gateway.outbox import read_summary
from gateway.outbox.blocks import unpack
from gateway.readings import DeviceEvent, Reading
from harness import MqttRecorder, running_gateway, wait_until, write_site

CHANNELS = 4
HOUR_AGO = float(int(time.time()) - 3600)


@pytest.fixture(autouse=True)
def influx_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_INFLUX_TOKEN", "test-token")


def meter_site(site_id: str, *, influx_url: str | None = None, mqtt_port: int | None = None,
               telemetry: bool = False, outbox: dict | None = None) -> dict:
    """A site with the fed meter (its own poll only once, at start) and the over-power rule."""
    raw: dict = {
        "site": {"id": site_id},
        "outbox": {"commit_interval": 0.1, **(outbox or {})},
        "devices": [{"id": "meter", "type": "synthetic", "kind": "power_meter",
                     "fields": ["seq", "v", "power"], "channels": CHANNELS,
                     "poll_interval": 86400, "location": {"building": "7"}}],
        "rules": [{"id": "over-power", "type": "threshold", "field": "power", "above": 1000,
                   "hysteresis": 100, "severity": 2}],
    }
    if influx_url is not None:
        raw["influxdb"] = {"url": influx_url, "org": "o", "bucket": "b",
                           "token": {"env": "TEST_INFLUX_TOKEN"}, "flush_interval": 0.1,
                           "batch_size": 1000}
    if mqtt_port is not None:
        raw["mqtt"] = {"host": "127.0.0.1", "port": mqtt_port}
        if telemetry:
            raw["mqtt"]["telemetry"] = {"flush_interval": 0.1, "batch_size": 500}
    return raw


class Feeder:
    """Puts the meter's readings into the pipeline at a steady rate, 50 at a time."""

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.n = 0

    @staticmethod
    def reading(n: int) -> Reading:
        return Reading("meter", n % CHANNELS + 1, {"seq": float(n), "v": n / 2, "power": 100.0},
                       HOUR_AGO + n * 0.001)

    async def run(self, count: int, rate: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while self.n < count:
            batch = [self.reading(i) for i in range(self.n, min(count, self.n + 50))]
            await self.pipeline.put(batch)
            self.n += len(batch)
            await asyncio.sleep(max(0.0, start + self.n / rate - loop.time()))

    @staticmethod
    def expected(count: int, field: str, first: int = 0) -> dict[tuple[str, int], float]:
        """(channel label, ms timestamp) -> value, for readings first..count-1."""
        return {(str(n % CHANNELS + 1), round((HOUR_AGO + n * 0.001) * 1000)):
                float(n) if field == "seq" else n / 2 for n in range(first, count)}


def fed_only(series: list[dict], metric: str) -> dict[tuple[str, int], float]:
    """The fed points (the devices' own live polls left out); fails on a point stored twice."""
    out: dict[tuple[str, int], float] = {}
    for s in series:
        channel = s["metric"].get("channel")
        for ts, value in zip(s["timestamps"], s["values"]):
            if ts < (HOUR_AGO + 1800) * 1000:
                assert (channel, ts) not in out, f"{metric} channel {channel} at {ts} twice"
                out[(channel, ts)] = value
    return out


async def fed_points(victoria, metric: str, site: str, count: int) -> dict[tuple[str, int], float]:
    """The fed points of a series once ``count`` of them are searchable (the last ones
    written take a moment), or what is there after 10 s."""
    match = f'{metric}{{site="{site}"}}'
    with contextlib.suppress(AssertionError):
        await victoria.wait_for_series_async(
            match, lambda series: len(fed_only(series, metric)) >= count, timeout=10)
    return fed_only(await victoria.export_async(match), metric)


async def stopped(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# -- the uplink goes away under load ----------------------------------------------------------


async def test_an_outage_under_load_loses_nothing_and_stores_nothing_twice(
        tmp_path, victoria, unique_id) -> None:
    count = 6000
    async with running_gateway(write_site(tmp_path, meter_site(unique_id,
                                                                influx_url=victoria.url))) as gw:
        [influx] = gw.sinks
        feeder = Feeder(gw.pipeline)
        feeding = asyncio.create_task(feeder.run(count, rate=3000))
        try:
            await wait_until(lambda: influx.written >= 500, 5, "the first writes")
            await asyncio.to_thread(victoria.stop)
            await wait_until(lambda: influx.failing, 5, "the sink to notice")
            down_at = feeder.n
            await wait_until(lambda: feeder.n >= down_at + 1500, 5, "readings during the outage")
            assert influx.lag >= 1000  # they wait in the outbox
            await asyncio.to_thread(victoria.start)
            await feeding
            await wait_until(lambda: influx.lag == 0 and gw.outbox.staged == 0
                             and not influx.failing, 15, "the backlog to drain")
        finally:
            await stopped(feeding)
        assert influx.errors >= 1 and gw.outbox.dropped == 0
    assert await fed_points(victoria, "power_meter_seq", unique_id, count) == \
        Feeder.expected(count, "seq")
    assert await fed_points(victoria, "power_meter_v", unique_id, count) == Feeder.expected(count, "v")


# -- the gateway is killed -----------------------------------------------------------------------


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, float], int]:
    """Our own lines (no escapes in these tags): measurement, tags, fields, ms timestamp."""
    head, fields, ns = line.rsplit(" ", 2)
    measurement, *tags = head.split(",")
    return (measurement, dict(t.split("=", 1) for t in tags),
            {k: float(v) for k, v in (f.split("=", 1) for f in fields.split(","))},
            int(ns) // 1_000_000)


async def spawn_gateway(path: Path, log: Path) -> asyncio.subprocess.Process:
    with open(log, "ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "run", str(path), stdout=out, stderr=out,
            env=dict(os.environ, TEST_INFLUX_TOKEN="t"))


async def test_kill_9_loses_nothing_committed_and_a_restart_sends_it_once(
        tmp_path, victoria, unique_id) -> None:
    raw = meter_site(unique_id, influx_url=victoria.url)
    # live load from the gateway's own devices: 2 x 20 channels every 50 ms = 800 readings/s
    raw["devices"] = [{"id": f"cab-{i}", "type": "synthetic", "kind": "ev_charging",
                       "fields": ["power", "voltage"], "channels": 20, "poll_interval": 0.05}
                      for i in (1, 2)]
    raw["rules"] = []
    path = write_site(tmp_path, raw)
    outbox = tmp_path / "state" / "outbox.sqlite"
    log = tmp_path / "gateway.log"
    proc = await spawn_gateway(path, log)
    try:
        await victoria.wait_for_series_async(f'ev_charging_power{{site="{unique_id}"}}', timeout=15)
        await asyncio.to_thread(victoria.stop)
        await wait_until(lambda: read_summary(outbox)["sinks"]["influxdb"]["lag_rows"] >= 1000, 10,
                         "a backlog in the outbox")
        proc.kill()  # SIGKILL: no flush, no goodbye
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # What was committed and not yet confirmed: it must all arrive, and only once.
    summary = read_summary(outbox)
    cursor = summary["sinks"]["influxdb"]["cursor"]
    with contextlib.closing(sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)) as con:
        waiting = [row[4] for (body,) in con.execute(
            "SELECT body FROM blocks WHERE id > ? ORDER BY id", (cursor,))
            for row in unpack(body) if row[0] > cursor]
    assert len(waiting) >= 1000
    await asyncio.to_thread(victoria.start)
    proc = await spawn_gateway(path, log)
    try:
        await wait_until(lambda: read_summary(outbox)["sinks"]["influxdb"]["cursor"] >= summary["head"],
                         15, "the restarted gateway to send the backlog")
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    expected = {}
    for line in waiting:
        measurement, tags, fields, ms = parse_line(line)
        for field, value in fields.items():
            expected[(f"{measurement}_{field}", frozenset(tags.items()), ms)] = value

    def stored_points(series: list[dict]) -> dict[tuple[str, frozenset, int], list[float]]:
        out: dict[tuple[str, frozenset, int], list[float]] = {}
        for s in series:
            labels = dict(s["metric"])
            name = labels.pop("__name__")
            for ts, value in zip(s["timestamps"], s["values"]):
                out.setdefault((name, frozenset(labels.items()), ts), []).append(value)
        return out

    # the last points written take a moment to be searchable: poll until they all are
    series = await victoria.wait_for_series_async(
        f'{{__name__=~"ev_charging_.*",site="{unique_id}"}}',
        lambda series: expected.keys() <= stored_points(series).keys(), timeout=10)
    stored = stored_points(series)
    assert all(len(values) == 1 for values in stored.values()), "a point stored twice"
    for key, value in expected.items():
        # VictoriaMetrics keeps 12 significant digits
        assert stored[key] == [pytest.approx(value, rel=1e-11)], f"{key} changed"
    assert b"Traceback" not in log.read_bytes()


# -- the broker restarts ---------------------------------------------------------------------------


class SessionRecorder:
    """A subscriber with a persistent session that reconnects, as a security-room client would:
    QoS 1 messages published while it is away wait for it in the broker."""

    def __init__(self, port: int, topics: list[str], client_id: str):
        self.port = port
        self.topics = topics
        self.client_id = client_id
        self.messages: list[tuple[str, bytes]] = []
        self.connected = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier=self.client_id,
                                          clean_session=False) as client:
                    for topic in self.topics:
                        await client.subscribe(topic, qos=1)
                    self.connected.set()
                    async for m in client.messages:
                        self.messages.append((str(m.topic), bytes(m.payload)))
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.05)

    def telemetry_seqs(self) -> list[int]:
        """``seq`` of the fed readings that arrived (the meter's own first poll left out)."""
        docs = [d for t, p in self.messages if "/telemetry/" in t for d in json.loads(p)]
        return [int(d["values"]["seq"]) for d in docs if d["values"].get("power") == 100.0]

    def alarm_events(self) -> list[dict]:
        return [json.loads(p) for t, p in self.messages if t.endswith("/alarm_events")]


async def test_a_broker_restart_resumes_telemetry_and_alarms_without_a_gateway_restart(
        tmp_path, mosquitto, unique_id) -> None:
    count = 1500
    raw = meter_site(unique_id, mqtt_port=mosquitto.port, telemetry=True)
    recorder = SessionRecorder(mosquitto.port, [f"community/{unique_id}/telemetry/#",
                                                f"community/{unique_id}/alarm_events"],
                               client_id=f"{unique_id}-console")
    listening = asyncio.create_task(recorder.run())
    try:
        async with asyncio.timeout(5):
            await recorder.connected.wait()
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            [telemetry] = gw.sinks
            feeder = Feeder(gw.pipeline)
            feeding = asyncio.create_task(feeder.run(count, rate=1000))
            try:
                await wait_until(lambda: telemetry.written >= 200 and gw.mqtt.connected, 5,
                                 "telemetry flowing")
                await asyncio.to_thread(mosquitto.restart)  # SIGTERM, then up again: same port
                await feeding
                await wait_until(lambda: gw.mqtt.connected, 10, "the alarm link back")
                await gw.pipeline.put([Reading("meter", 2, {"power": 4000.0}, time.time())])
                await wait_until(lambda: any(e["event"] == "raised" and e["alarm"]["rule"] == "over-power"
                                             for e in recorder.alarm_events()), 5, "the alarm")
                await wait_until(lambda: telemetry.lag == 0 and gw.outbox.staged == 0, 15,
                                 "telemetry caught up")
            finally:
                await stopped(feeding)
            assert telemetry.errors >= 1  # it did notice the broker go away
        await wait_until(lambda: set(range(count)) <= set(recorder.telemetry_seqs()), 5,
                         "every reading on the telemetry topic")
    finally:
        await stopped(listening)
    topics = {t for t, _ in recorder.messages if "/telemetry/" in t}
    assert topics == {f"community/{unique_id}/telemetry/meter"}
    docs = json.loads(next(p for t, p in recorder.messages if "/telemetry/" in t))
    assert isinstance(docs, list) and docs  # a message per device and batch: an array
    doc = docs[0]
    assert set(doc) == {"device", "channel", "ts", "values"} and doc["ts"].endswith("Z")


# -- a tiny disk budget ----------------------------------------------------------------------------


async def test_a_tiny_budget_drops_the_oldest_readings_keeps_events_and_alarms(
        tmp_path, victoria, mosquitto, unique_id) -> None:
    count = 6000
    raw = meter_site(unique_id, influx_url=victoria.url, mqtt_port=mosquitto.port,
                     # 20 kB, 8 of them the empty file's pages (the 6,000 readings take
                     # about 25 kB, compressed); commits (blocks, dropped whole) of 500
                     # rows, so the budget drops part of the readings, not all
                     outbox={"max_mb": 0.02, "commit_rows": 500})
    await asyncio.to_thread(victoria.stop)  # the uplink is down from the start
    async with MqttRecorder(mosquitto.port, f"community/{unique_id}/alarm_events") as mqtt, \
            running_gateway(write_site(tmp_path, raw)) as gw:
        [influx] = gw.sinks
        feeder = Feeder(gw.pipeline)
        events = [DeviceEvent("meter", 1, "forced_open", HOUR_AGO + k, {"k": float(k)})
                  for k in range(10)]
        await gw.pipeline.put(events[:5])  # the oldest rows of all are events
        await feeder.run(count, rate=20_000)
        await gw.pipeline.put(events[5:])
        await wait_until(lambda: gw.outbox.dropped > 0, 10, "readings dropped for the budget")
        raised = await mqtt.wait_for(lambda: [e for _, e in mqtt.json_on("") if e["event"] == "raised"
                                              and e["alarm"]["rule"] == "buffer_overflow"], 5)
        assert raised[0]["alarm"]["severity"] == 2
        await gw.pipeline.put([Reading("meter", 3, {"power": 4000.0}, time.time())])
        await mqtt.wait_for(lambda: [e for _, e in mqtt.json_on("") if e["event"] == "raised"
                                     and e["alarm"]["rule"] == "over-power"], 3)
        stats = gw.outbox.stats()
        assert stats["dropped_total"] == gw.outbox.dropped == influx.dropped
        assert stats["used_bytes"] <= stats["budget_bytes"]
        await asyncio.to_thread(victoria.start)
        await wait_until(lambda: influx.lag == 0 and gw.outbox.staged == 0 and not influx.failing,
                         15, "the rest to go out")
        # the feeder's, the meter's own first poll, the over-power one
        assert gw.pipeline.readings == count + CHANNELS + 1
    dropped = gw.outbox.dropped
    total = count + CHANNELS - dropped  # every reading kept or counted as dropped
    # (the over-power reading, the newest of all, carries no seq)
    series = await victoria.wait_for_series_async(
        f'power_meter_seq{{site="{unique_id}"}}',
        lambda series: sum(len(s["values"]) for s in series) >= total, timeout=10)
    assert sum(len(s["values"]) for s in series) == total
    seqs = sorted(int(v) for v in fed_only(series, "power_meter_seq").values())
    assert 0 < len(seqs) < count and seqs == list(range(seqs[0], count))  # the newest survived
    [event_k] = await victoria.wait_for_series_async(
        f'power_meter_event_k{{site="{unique_id}"}}', lambda s: s and len(s[0]["values"]) == 10)
    assert sorted(event_k["values"]) == [float(k) for k in range(10)]


# -- an upstream that refuses a batch, or asks to wait -------------------------------------------------


class RefusingProxy:
    """In front of VictoriaMetrics: answers the first write 429 with Retry-After (as a
    busy InfluxDB does), and 400 to any batch holding ``poison`` (as InfluxDB answers
    a field type clash); passes the rest through."""

    def __init__(self, upstream: str, poison: str, retry_after: int = 1):
        self.upstream = upstream
        self.poison = poison
        self.retry_after = retry_after
        self.requests: list[tuple[float, int]] = []  # (monotonic time, status)
        self.url = ""

    async def __aenter__(self) -> "RefusingProxy":
        self._session = ClientSession()
        app = web.Application()
        app.router.add_post("/api/v2/write", self._write)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()
        await self._session.close()

    async def _write(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not self.requests:
            status, answer = 429, web.json_response(
                {"code": "too many requests"}, status=429,
                headers={"Retry-After": str(self.retry_after)})
        elif self.poison.encode() in body:
            status, answer = 400, web.json_response(
                {"code": "invalid", "message": "partial write: field type conflict"}, status=400)
        else:
            async with self._session.post(self.upstream + "/api/v2/write", params=request.query,
                                          data=body) as resp:
                status, answer = resp.status, web.Response(status=resp.status, body=await resp.read())
        self.requests.append((time.monotonic(), status))
        return answer


async def test_a_refused_row_is_quarantined_the_rest_flows_and_retry_after_is_honoured(
        tmp_path, victoria, unique_id) -> None:
    count = 3000
    async with RefusingProxy(victoria.url, poison="seq=777.0,") as proxy:
        raw = meter_site(unique_id, influx_url=proxy.url)
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            [influx] = gw.sinks
            await Feeder(gw.pipeline).run(count, rate=10_000)
            await wait_until(lambda: influx.lag == 0 and gw.outbox.staged == 0
                             and influx.quarantined, 10, "everything through")
            assert influx.quarantined == 1 and influx.written == count + CHANNELS - 1
            assert "400" in influx.last_error and gw.outbox.stats()["quarantined_total"] == 1
        (first, status), (second, _) = proxy.requests[:2]
        assert status == 429 and second - first >= 0.9 * proxy.retry_after
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "outbox.sqlite")) as con:
        [(line, code, error)] = con.execute("SELECT line, status, error FROM quarantine").fetchall()
    assert "seq=777.0," in line and code == 400 and "field type conflict" in error
    expected = Feeder.expected(count, "seq")
    del expected[("2", round((HOUR_AGO + 0.777) * 1000))]
    assert await fed_points(victoria, "power_meter_seq", unique_id, count - 1) == expected


# -- draining a backlog never delays an alarm ----------------------------------------------------


async def test_draining_a_backlog_is_paced_and_never_delays_an_alarm(
        tmp_path, victoria, mosquitto, unique_id) -> None:
    count = 12_000
    raw = meter_site(unique_id, influx_url=victoria.url, mqtt_port=mosquitto.port,
                     outbox={"drain_rate_multiple": 1.0, "drain_min_rate": 3000})
    path = write_site(tmp_path, raw)
    await asyncio.to_thread(victoria.stop)
    async with running_gateway(path) as gw:  # the uplink is down: a backlog builds up
        await Feeder(gw.pipeline).run(count, rate=50_000)
        await wait_until(lambda: gw.outbox.committed_id >= count, 5, "the backlog committed")
    await asyncio.to_thread(victoria.start)
    async with MqttRecorder(mosquitto.port, f"community/{unique_id}/alarm_events") as mqtt, \
            running_gateway(path) as gw:  # started again with the backlog, the uplink back
        [influx] = gw.sinks
        await wait_until(lambda: gw.outbox.committed_id >= count, 5, "the outbox open")
        assert influx.draining and influx.lag > count // 2  # what the first run left
        await wait_until(lambda: influx.written >= 1000 and gw.mqtt.connected, 10,
                         "the drain to start")
        started, before = time.monotonic(), influx.written
        await asyncio.sleep(0.3)  # let it drain a while: the alarm comes in the middle of it
        sent = time.monotonic()
        await gw.pipeline.put([Reading("meter", 4, {"power": 4000.0}, time.time())])
        [(arrived, _)] = await mqtt.wait_for(lambda: [m for m in mqtt.json_on("")
                                                      if m[1]["event"] == "raised"], 3)
        assert arrived - sent < 1.0
        assert influx.lag > 1000 and influx.draining  # still draining when the alarm went out
        # paced at drain_min_rate (nothing live to multiply): an upper bound, so a slow
        # machine only sends less
        assert influx.drain_rate() == 3000
        assert influx.written - before <= 3000 * (time.monotonic() - started) + 2 * influx.batch_size
