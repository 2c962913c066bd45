"""The alarm side channels are bounded and durable (issue 10.7): the webhook queue
and the transition history under a flood of operator commands, and webhook
deliveries still owed across a restart of the gateway process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import sys
from pathlib import Path

import yaml
from aiohttp import web

from alarm_support import Bench
from gateway.alarms.manager import AlarmManager
from gateway.alarms.store import FILE_NAME
from gateway.alarms.webhook import WebhookSender
from gateway.clock import FakeClock
from gateway.config.models import WebhookConfig
from gateway.operations.metrics import metrics_registry, render
from harness import wait_until

MAX_PENDING = 1000  # the webhook queue's bound (gateway.alarms.webhook.MAX_PENDING)
EMERGENCY = {"id": "emergency", "type": "event", "select": {"devices": ["doors"]},
             "event": "emergency", "severity": 1, "latch": True}


@contextlib.asynccontextmanager
async def running(bench: Bench):
    bench.gateway.runners = []  # the test feeds it; no random synthetic readings
    task = asyncio.create_task(bench.gateway.run(), name="test-gateway")
    try:
        await wait_until(lambda: bench.gateway.started, 5, "started")
        yield bench
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_command_flood_is_bounded_everywhere(tmp_path, free_port) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"  # nobody listens: everything queues
    bench = Bench(tmp_path, [EMERGENCY], extra={"webhooks": [{"url": url, "max_retry_interval": 60}]})
    async with running(bench) as b:
        store, [webhook] = b.gateway.alarm_store, b.gateway.webhooks
        store.max_transitions = 1000
        b.event("doors", "emergency", channel=1)
        [alarm] = b.alarms.open_alarms()
        note = "the resident says it was a test " + "x" * 960  # the longest note a command takes
        for i in range(1500):  # 3000 transitions, none of which coalesce
            b.alarms.shelve(alarm.id, by="op", note=note, minutes=5)
            b.alarms.unshelve(alarm.id, by="op", note=note)
            if i % 100 == 0:
                await asyncio.sleep(0)  # the writer commits as it would under a real flood
        await store.wait_written()

        # the webhook queue: at its bound, the overflow counted, the newest state kept
        assert webhook.pending == MAX_PENDING
        assert webhook.dropped == 3001 - MAX_PENDING
        newest = json.loads(webhook._queue[-1].body)
        assert newest["event"] == "unshelved" and newest["alarm"]["shelved_until"] is None
        # the history in the file: at most max_transitions (and a little slack) rows
        with contextlib.closing(sqlite3.connect(store.path)) as db:
            rows = db.execute("SELECT count(*) FROM transitions").fetchone()[0]
            [record] = db.execute("SELECT record FROM open_alarms").fetchone()
            journalled = db.execute("SELECT count(*) FROM webhook_pending").fetchone()[0]
        assert rows <= 1050 and store.history_pruned == 3001 - rows
        assert journalled == MAX_PENDING  # the journal follows the bounded queue
        # each alarm's own recent history stays small, however long the notes
        assert len(record) < 12_000 and len(alarm.history) <= 20
        # and it shows
        text = render(metrics_registry(b.gateway)).decode()
        assert f'community_gateway_webhook_dropped_total{{webhook="{url}"}} {webhook.dropped}.0' in text
        assert f'community_gateway_webhook_pending{{webhook="{url}"}} {MAX_PENDING}.0' in text
        assert f"community_gateway_alarm_store_history_pruned_total {store.history_pruned}.0" in text
        assert b.alarms.open_alarms() == [alarm]  # the alarm itself is never dropped


def test_a_full_queue_drops_an_entry_whose_alarm_has_a_newer_one_first() -> None:
    sender = WebhookSender(config=WebhookConfig(url="http://127.0.0.1:9/hook"), max_pending=3)
    manager = AlarmManager(clock=FakeClock(), listeners=[sender.on_transition])

    def raise_(channel: int):
        return manager.activate(rule="r", severity=1, device="d", kind="k", channel=channel,
                                location={}, message="m", value=None, ts=1.0, momentary=True)

    a, b, c = raise_(1), raise_(2), raise_(3)
    manager.shelve(a.id, by="op", minutes=5)  # a's "raised" is superseded: it goes
    assert [(e.alarm_id, e.event) for e in sender._queue] == [
        (b.id, "raised"), (c.id, "raised"), (a.id, "shelved")]
    raise_(4)  # nothing superseded: the oldest goes
    assert [e.event for e in sender._queue] == ["raised", "shelved", "raised"]
    assert sender._queue[0].alarm_id == c.id and sender.dropped == 2


# -- deliveries owed survive a restart of the process ----------------------------------------


def site(tmp_path: Path, hook_port: int) -> Path:
    raw = {
        "site": {"id": "hooked"},
        "state_dir": str(tmp_path / "state"),
        "devices": [{"id": "meter-a", "type": "synthetic", "kind": "meter", "fields": ["power"],
                     "poll_interval": 0.05}],
        "rules": [{"id": "always", "type": "threshold", "select": {"devices": ["meter-a"]},
                   "field": "power", "above": -1, "severity": 2}],
        "webhooks": [{"url": f"http://127.0.0.1:{hook_port}/hook?key=SECRET",
                      "max_retry_interval": 0.5}],
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def run_gateway(path: Path):
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", "run", str(path),
                                                stderr=asyncio.subprocess.PIPE)
    lines: list[str] = []

    async def read() -> None:
        while line := await proc.stderr.readline():
            lines.append(line.decode(errors="replace"))

    return proc, lines, asyncio.create_task(read())


async def stop(proc, reader) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(15):
        rc = await proc.wait()
        await reader
    return rc


def journalled(state: Path) -> list[tuple[str, str]]:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{state / FILE_NAME}?mode=ro", uri=True)) as db:
            return db.execute("SELECT alarm_id, event FROM webhook_pending ORDER BY seq").fetchall()
    except sqlite3.Error:
        return []


async def test_a_delivery_owed_when_the_gateway_stops_is_sent_after_the_restart(
        tmp_path, free_port) -> None:
    port = free_port()
    path = site(tmp_path, port)
    state = tmp_path / "state"
    proc, log1, reader = await run_gateway(path)
    try:  # the receiver is down: the "raised" waits, in the state file too
        owed = await wait_until(lambda: journalled(state), 15, "the delivery journalled")
        [(alarm_id, event)] = owed
        assert event == "raised"
        await wait_until(lambda: any("unreachable" in line for line in log1), 10, "a failed try")
    finally:
        assert await stop(proc, reader) == 0
    assert journalled(state) == [(alarm_id, "raised")]  # still owed after the stop

    proc, log2, reader = await run_gateway(path)  # restarted; the receiver still down
    got: list[dict] = []
    runner = None
    try:
        await wait_until(lambda: any("still to deliver" in line for line in log2), 15,
                         "the owed delivery taken back")

        async def hook(request: web.Request) -> web.Response:
            got.append(await request.json())
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()  # now the receiver comes up
        await wait_until(lambda: got, 15, "the delivery")
        await wait_until(lambda: not journalled(state), 10, "forgotten once delivered")
    finally:
        rc = await stop(proc, reader)
        if runner is not None:
            await runner.cleanup()
    assert rc == 0
    # The alarm was restored without a new transition: only the journal could send this.
    assert got[0]["event"] == "raised" and got[0]["alarm"]["id"] == alarm_id
    assert [g["event"] for g in got].count("raised") == 1
    assert "SECRET" not in "".join(log1 + log2)
