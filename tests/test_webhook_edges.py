"""The webhook's promises a slip would break quietly: the bearer token reaches the
receiver, and a shelved alarm's repeats and clears are held back (its other steps are not)."""

from __future__ import annotations

import pytest
from aiohttp import web

from gateway.alarms.manager import AlarmManager
from gateway.alarms.webhook import WebhookSender
from gateway.clock import FakeClock
from gateway.config.models import WebhookConfig
from harness import running_gateway, wait_until, write_site


async def test_the_receiver_gets_the_configured_bearer_token(
        tmp_path, free_port, unique_id, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_HOOK_TOKEN", "hook-secret-42")
    seen: list[str | None] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    raw = {"site": {"id": unique_id},
           "webhooks": [{"url": f"http://127.0.0.1:{port}/hook", "token": {"env": "TEST_HOOK_TOKEN"}}],
           "devices": [{"id": "m1", "type": "synthetic", "kind": "meter", "fields": ["power"],
                        "poll_interval": 0.05}],
           "rules": [{"id": "always", "type": "threshold", "select": {"devices": ["m1"]},
                      "field": "power", "above": -1, "severity": 2}]}
    try:
        async with running_gateway(write_site(tmp_path, raw)):
            await wait_until(lambda: seen, 5, "the raised alarm at the webhook")
    finally:
        await runner.cleanup()
    assert seen[0] == "Bearer hook-secret-42"


def test_a_shelved_alarm_holds_back_its_repeats_and_clears_only() -> None:
    clock = FakeClock()
    sender = WebhookSender(config=WebhookConfig(url="http://127.0.0.1:9/hook"))  # every event
    manager = AlarmManager(clock=clock, listeners=[sender.on_transition])

    def occur() -> None:
        manager.activate(rule="r", severity=2, device="d", kind="k", channel=None, location={},
                         message="m", value=1.0, ts=clock.time())

    def gone() -> None:
        manager.deactivate(rule="r", device="d", channel=None, value=0.0, ts=clock.time())

    occur()
    alarm = manager.find("r", "d", None)
    manager.shelve(alarm.id, by="wang", minutes=10)
    gone()   # cleared: held back
    occur()  # repeated: held back
    gone()
    manager.unshelve(alarm.id, by="wang")
    occur()  # shown again: sent
    manager.ack(alarm.id, by="wang")
    assert [e.event for e in sender._queue] == ["raised", "shelved", "unshelved", "repeated", "acked"]
    assert alarm.count == 3  # the held-back steps still happened
