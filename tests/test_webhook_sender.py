"""The webhook's filter, its queue while the receiver is away, and what a 4xx means."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiohttp import web

from gateway.alarms.manager import AlarmManager
from gateway.alarms.webhook import WebhookSender
from gateway.clock import FakeClock
from gateway.config.models import WebhookConfig
from harness import wait_until


def make(url: str = "http://127.0.0.1:9/hook", **config) -> tuple[AlarmManager, WebhookSender]:
    sender = WebhookSender(config=WebhookConfig(url=url, max_retry_interval=0.2, **config))
    manager = AlarmManager(clock=FakeClock(), listeners=[sender.on_transition], escalate_after=60)
    return manager, sender


def raise_(manager: AlarmManager, severity: int = 1, channel: int | None = None, momentary=True):
    return manager.activate(rule="r", severity=severity, device="d", kind="k", channel=channel,
                            location={}, message="m", value=None, ts=1.0, momentary=momentary)


def test_filter_by_event_and_severity_and_shelving() -> None:
    manager, sender = make(min_severity=2, events=["raised", "repeated", "cleared", "escalated"])
    raise_(manager, severity=3, channel=1)  # level 3: not sent
    alarm = raise_(manager, severity=2, channel=2, momentary=False)
    manager.ack(alarm.id, by="x")  # not in `events`
    manager.shelve(alarm.id, by="x", minutes=5)
    manager.deactivate(rule="r", device="d", channel=2, value=None, ts=2.0)  # shelved: held back
    assert [e.event for e in sender._queue] == ["raised"]


def test_repeats_coalesce_while_the_receiver_is_away() -> None:
    manager, sender = make()
    a = raise_(manager)
    for _ in range(100):  # a flood of the same event: one queued entry, the newest count
        raise_(manager)
    b = raise_(manager, channel=7)
    raise_(manager)  # still the same alarm's latest entry: replaced (each alarm keeps its order)
    assert [(e.alarm_id, e.event) for e in sender._queue] == [
        (a.id, "raised"), (a.id, "repeated"), (b.id, "raised")]
    assert b'"count": 102' in sender._queue[1].body and sender.coalesced == 100


async def test_a_refused_body_is_skipped_and_the_rest_delivered(
        free_port, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    got: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        got.append(body["event"])
        return web.Response(status=422 if len(got) == 1 else 204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    # a bot's secret rides in the query string (WeCom ?key=...): never logged
    manager, sender = make(f"http://127.0.0.1:{port}/hook?key=BOT-SECRET-123")
    task = asyncio.create_task(sender.run(), name="test-webhook")
    try:
        alarm = raise_(manager)
        manager.ack(alarm.id, by="x")
        await wait_until(lambda: sender.pending == 0, 5, "queue drained")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await runner.cleanup()
    assert got == ["raised", "acked", "closed"]
    assert sender.rejected == 1 and sender.sent == 2 and sender.failures == 0
    assert f"http://127.0.0.1:{port}/hook?..." in caplog.text and "BOT-SECRET" not in caplog.text
