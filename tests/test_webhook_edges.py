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


async def test_what_each_answer_of_the_receiver_means(free_port) -> None:
    import aiohttp

    from gateway.alarms.webhook import _Entry

    async def hook(request: web.Request) -> web.Response:
        return web.Response(status=int(request.query["status"]))

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    answers = {}
    try:
        async with aiohttp.ClientSession() as session:
            for status in (200, 201, 204, 299, 300, 400, 401, 404, 408, 409, 429, 499, 500, 503):
                sender = WebhookSender(config=WebhookConfig(url=f"http://127.0.0.1:{port}/hook?status={status}"))
                answers[status] = await sender._post(session, _Entry("a", "raised", b"{}", seq=1))
    finally:
        await runner.cleanup()
    assert answers == {200: None, 201: None, 204: None, 299: None,
                       300: "HTTP 300", 408: "HTTP 408", 429: "HTTP 429", 500: "HTTP 500",
                       503: "HTTP 503",  # retried: the receiver may take it later
                       400: "rejected (HTTP 400)", 401: "rejected (HTTP 401)",
                       404: "rejected (HTTP 404)", 409: "rejected (HTTP 409)",
                       499: "rejected (HTTP 499)"}


async def test_a_failed_connection_is_told_without_the_secret_in_the_url(free_port) -> None:
    import aiohttp

    from gateway.alarms.webhook import _Entry, shown_url

    url = f"http://bot:pw@127.0.0.1:{free_port()}/hook?key=SECRET"
    assert shown_url(url) == f"http://...@127.0.0.1:{url.split(':')[-1].split('/')[0]}/hook?..."
    assert shown_url("https://example.invalid/hook") == "https://example.invalid/hook"
    sender = WebhookSender(config=WebhookConfig(url=url, timeout=2))
    async with aiohttp.ClientSession() as session:
        problem = await sender._post(session, _Entry("a", "raised", b"{}", seq=1))
    assert problem is not None and problem.startswith("ClientConnectorError")
    assert "SECRET" not in problem and "pw" not in problem


def test_the_body_is_sent_as_json_with_the_token_header() -> None:
    sender = WebhookSender(config=WebhookConfig(url="http://127.0.0.1:9/hook"), token="t0k")
    assert sender._headers == {"Content-Type": "application/json", "Authorization": "Bearer t0k"}
    assert sender._sending is None
    assert "Authorization" not in WebhookSender(
        config=WebhookConfig(url="http://127.0.0.1:9/hook"))._headers
