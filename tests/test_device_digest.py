"""The daily digest of devices offline or faulty, on an injected clock."""

from __future__ import annotations

import time

from gateway.alarms.digest import DeviceDigest, _seconds_until
from gateway.alarms.manager import AlarmManager
from gateway.clock import FakeClock


def offline(alarms: AlarmManager, device: str, ts: float) -> None:
    alarms.activate(rule="device_offline", severity=3, device=device, kind="ev_charging",
                    channel=None, location={"building": "3"}, message=f"{device} offline",
                    value=None, ts=ts)


def test_offline_episodes_and_faults_are_counted_and_a_new_day_starts_afresh():
    clock = FakeClock(start=1_800_000_000)
    alarms = AlarmManager(clock=clock)
    digest = DeviceDigest(alarms=alarms, clock=clock, site="s")
    alarms.add_listener(digest.on_transition)
    offline(alarms, "cab-1", clock.time())
    clock.advance(600)
    alarms.deactivate(rule="device_offline", device="cab-1", channel=None, value=None,
                      ts=clock.time())
    offline(alarms, "cab-1", clock.time())  # again: a second episode, still open
    alarms.activate(rule="device_fault:low_battery", severity=3, device="smoke-1",
                    kind="smoke_detector", channel=None, location={}, message="low battery",
                    value=None, ts=clock.time(), details={"fault": "low battery"})
    alarms.activate(rule="over-power", severity=2, device="cab-2", kind="ev_charging",
                    channel=1, location={}, message="not a device trouble", value=1500.0,
                    ts=clock.time())
    clock.advance(300)
    day = digest.build()
    by_device = {d["device"]: d for d in day["devices"]}
    assert set(by_device) == {"cab-1", "smoke-1"}
    assert by_device["cab-1"]["offline_times"] == 2
    assert by_device["cab-1"]["offline_minutes"] == 15.0  # 10 min closed + 5 min still open
    assert "device_offline" in by_device["cab-1"]["still_open"]
    assert by_device["smoke-1"]["faults"] == {"low battery": 1}
    # the next day carries only what is still open
    clock.advance(3600)
    next_day = {d["device"]: d for d in digest.build()["devices"]}
    assert next_day["cab-1"]["offline_times"] == 0 and next_day["cab-1"]["offline_minutes"] == 60
    assert digest.latest is not None


def test_open_troubles_restored_at_a_restart_are_in_the_digest():
    clock = FakeClock(start=1_800_000_000)
    alarms = AlarmManager(clock=clock)
    offline(alarms, "radar-7", clock.time() - 7200)  # before the digest was listening
    digest = DeviceDigest(alarms=alarms, clock=clock, site="s")
    [entry] = digest.build()["devices"]
    assert entry["device"] == "radar-7" and entry["offline_minutes"] == 120.0


def test_the_next_digest_time_is_today_or_tomorrow_at_the_local_hour():
    now = time.mktime((2026, 12, 1, 7, 0, 0, 0, 0, -1))
    assert _seconds_until("08:00", now) == 3600
    assert _seconds_until("06:00", now) == 23 * 3600


async def test_the_digest_goes_to_webhooks_in_order_with_transitions(tmp_path, free_port):
    """A real receiver on loopback gets the digest as JSON, unless its filter leaves it out."""
    import asyncio

    from aiohttp import web

    from gateway.alarms.webhook import WebhookSender
    from gateway.config.models import WebhookConfig

    got: list[dict] = []

    async def receive(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        url = f"http://127.0.0.1:{port}/hook"
        everything = WebhookSender(config=WebhookConfig(url=url))
        alarms_only = WebhookSender(config=WebhookConfig(url=url, events=["raised"]))
        clock = FakeClock(start=1_800_000_000)
        alarms = AlarmManager(clock=clock)
        digest = DeviceDigest(alarms=alarms, clock=clock, site="s",
                              on_digest=lambda d: [w.on_document("device_digest", d)
                                                   for w in (everything, alarms_only)])
        alarms.add_listener(digest.on_transition)
        offline(alarms, "cab-1", clock.time())
        digest._on_digest(digest.build())  # what run() does at digest time
        tasks = [asyncio.create_task(w.run()) for w in (everything, alarms_only)]
        async with asyncio.timeout(5):
            while everything.pending or alarms_only.pending:
                await asyncio.sleep(0.02)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await runner.cleanup()
    assert alarms_only.sent == 0 and everything.sent == 1  # its filter names no device_digest
    [doc] = got
    assert doc["type"] == "device_digest" and doc["devices"][0]["device"] == "cab-1"
