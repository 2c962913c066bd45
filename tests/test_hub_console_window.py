"""The console's alarm list with thousands of open alarms (issue 11): a hub on a real
Mosquitto holds 3,000 retained alarms of one gateway, and a real headless Chromium shows
them. Only the rows near the screen are in the DOM (windowed-list.js); the list still
says how many there are, scrolling to the bottom shows the last one, an update to an
alarm off the screen is there when it is scrolled to, and an ack on a row far down works
(sent signed to the "gateway", this test, which confirms it with the acked retained state).
The page is scrolled as a user does: the mouse wheel and the keyboard."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiomqtt
import pytest

from console_support import chromium, log_in
from harness import wait_until
from test_hub_console_browser import DESKTOP, GUARD, command_key, hub_with_console  # noqa: F401
from test_hub_e2e import publish, running_hub, site_info

pytestmark = pytest.mark.integration

SITE = "n-b1"
ALARMS = 3000
MAX_ROWS_IN_DOM = 150  # windowed-list.js's MAX_ROWS: however tall the screen


def alarm(k: int, **changes) -> dict:
    """Alarm k: level 2, k seconds after midnight, so the list (newest first) holds alarm
    ALARMS-1 first and alarm 0 last."""
    ts = f"2026-01-01T{k // 3600:02d}:{k // 60 % 60:02d}:{k % 60:02d}.000Z"
    return {"id": f"a{k:04d}", "rule": "door-held", "severity": 2, "state": "active", "acked": False,
            "device": f"door-{k}", "kind": "door", "location": {"building": "1"},
            "message": f"alarm {k:04d}", "count": 1, "first_ts": ts, "last_ts": ts, **changes}


def retained(a: dict) -> tuple[str, bytes, bool]:
    return f"community/{SITE}/alarms/{a['id']}", json.dumps(a).encode(), True


def transition(event: str, a: dict) -> list[tuple[str, bytes, bool]]:
    """What a gateway publishes for a transition: the retained state, then the event (the
    hub's console streams the events)."""
    body = {"event": event, "ts": a["last_ts"], "alarm": a}
    return [retained(a), (f"community/{SITE}/alarm_events", json.dumps(body).encode(), False)]


@contextlib.asynccontextmanager
async def gateway_confirming_acks(port: int, alarms: dict[str, dict]):
    """Stands in for the gateway: an ack command for an alarm is confirmed by publishing its
    retained state acked (what a gateway does; the signature is the gateway tests' matter)."""
    async def serve(client: aiomqtt.Client) -> None:
        async for message in client.messages:
            own_id = str(message.topic).split("/")[3]
            alarms[own_id] = {**alarms[own_id], "acked": True}
            for topic, payload, retain in transition("acked", alarms[own_id]):
                await client.publish(topic, payload, qos=1, retain=retain)

    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(f"community/{SITE}/alarms/+/ack", qos=1)
        task = asyncio.create_task(serve(client), name="test-gateway-acks")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def frames(page, n: int = 2) -> None:
    """Wait until the page has drawn n more frames (its scroll handler redraws in the next)."""
    await page.evaluate("(n) => new Promise((done) => { const next = (k) => k ? "
                        "requestAnimationFrame(() => next(k - 1)) : done(); next(n); })", n)


async def rows_in_dom(page) -> int:
    return await page.locator("#alarm-list article.alarm").count()


async def in_viewport(page, locator) -> bool:
    box = await locator.bounding_box()
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= DESKTOP["height"]


async def test_thousands_of_alarms_keep_a_bounded_dom_and_every_row_reachable(
        tmp_path, mosquitto, free_port) -> None:
    alarms = {f"a{k:04d}": alarm(k) for k in range(ALARMS)}
    await publish(mosquitto.port, [(f"community/{SITE}/info", site_info(SITE), True),
                                   (f"community/{SITE}/status", b"online", True),
                                   *(retained(a) for a in alarms.values())])
    http_port = free_port()
    async with running_hub(hub_with_console(tmp_path, mosquitto.port, http_port)) as hub, \
            gateway_confirming_acks(mosquitto.port, alarms), chromium() as browser:
        await wait_until(lambda: hub.http.listening and len(hub.view.open_alarms()) == ALARMS, 20,
                         "every alarm in the hub and its console")
        page = await browser.new_page(viewport=DESKTOP)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await log_in(page, f"http://127.0.0.1:{http_port}", GUARD)
        listing = page.locator("#alarm-list")
        await page.locator("article.alarm", has_text="alarm 2999").wait_for()

        # (a) the DOM holds the screen's rows and a margin; the list says how many there are
        assert await page.inner_text("#alarm-count") == str(ALARMS)
        assert await listing.get_attribute("aria-rowcount") == str(ALARMS)
        assert 10 <= await rows_in_dom(page) <= MAX_ROWS_IN_DOM
        first = page.locator("article.alarm", has_text="alarm 2999")
        assert await first.get_attribute("aria-rowindex") == "1"
        # the list is as tall as every row: the page scrolls through all of them
        height = await page.evaluate("document.scrollingElement.scrollHeight")
        assert height > ALARMS * 50, height

        # (b) to the bottom (the End key, as a user would): the last alarm is on the screen
        await page.keyboard.press("End")
        last = page.locator("article.alarm", has_text="alarm 0000")
        await last.wait_for()
        await frames(page)
        assert await last.get_attribute("aria-rowindex") == str(ALARMS)
        assert await in_viewport(page, last)
        assert await rows_in_dom(page) <= MAX_ROWS_IN_DOM
        assert await page.locator("article.alarm", has_text="alarm 2999").count() == 0

        # (c) an alarm half way up, off the screen, changes; then one more alarm is raised (the
        # count in the page says the stream brought both: it keeps their order)
        middle = ALARMS // 2
        alarms[f"a{middle:04d}"] = alarm(middle, message=f"alarm {middle:04d} repeated", count=7)
        newest = alarm(ALARMS)
        await publish(mosquitto.port, [*transition("repeated", alarms[f"a{middle:04d}"]),
                                       *transition("raised", newest)])
        await wait_until_text(page, "#alarm-count", str(ALARMS + 1))
        changed = page.locator("article.alarm", has_text=f"alarm {middle:04d} repeated")
        assert await changed.count() == 0  # not in the DOM while off the screen
        # scrolled to with the mouse wheel, a screen at a time, from the bottom up
        for _ in range(400):
            if await changed.count():
                break
            await page.mouse.move(960, 600)
            await page.mouse.wheel(0, -1500)
            await frames(page)
        assert await changed.count() == 1, "the changed row never showed while scrolling up"
        assert "×7" in await changed.inner_text()
        # its place: newest first, the one raised since counts above it
        assert await changed.get_attribute("aria-rowindex") == str(ALARMS - middle + 1)
        assert await rows_in_dom(page) <= MAX_ROWS_IN_DOM

        # (d) an ack on that row (far down the list) is sent, confirmed and shown
        alarm_id = await changed.get_attribute("data-alarm-id")
        await changed.locator('button[data-action="ack"]').click()
        await page.fill("#dlg-note", "checked on camera")
        await page.click("#dlg-confirm")
        await page.wait_for_selector(f'article.alarm[data-alarm-id="{alarm_id}"][data-acked="yes"]',
                                     timeout=10000)
        assert await page.get_attribute("body", "data-command") == "confirmed"
        # the row keeps the focus (its new element: the ack rebuilt it) and is the current one
        acked = page.locator(f'article.alarm[data-alarm-id="{alarm_id}"]')
        assert await acked.get_attribute("aria-current") == "true"
        assert await page.evaluate("document.activeElement.dataset.alarmId") == alarm_id

        # scrolled far away (the row leaves the DOM) and back: it has the focus again
        for _ in range(8):
            await page.mouse.wheel(0, 3000)
            await frames(page)
        assert await acked.count() == 0
        for _ in range(50):
            if await acked.count():
                break
            await page.mouse.wheel(0, -3000)
            await frames(page)
        await frames(page)
        assert await page.evaluate("document.activeElement.dataset.alarmId") == alarm_id

        # the keyboard: Home and End from a row move to the first and last rows
        await page.keyboard.press("Home")
        top = page.locator("article.alarm", has_text=f"alarm {ALARMS:04d}")
        await top.wait_for()
        assert await page.evaluate("document.activeElement.getAttribute('aria-rowindex')") == "1"
        await page.keyboard.press("End")
        await page.locator("article.alarm", has_text="alarm 0000").wait_for()
        assert await page.evaluate("document.activeElement.getAttribute('aria-rowindex')") \
            == str(ALARMS + 1)
        await frames(page)
        assert await in_viewport(page, page.locator("article.alarm", has_text="alarm 0000"))
        assert await rows_in_dom(page) <= MAX_ROWS_IN_DOM
        assert errors == []


async def wait_until_text(page, selector: str, text: str, timeout: float = 10.0) -> None:
    """Poll an element's text (the console's CSP forbids Playwright's wait_for_function)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (got := await page.inner_text(selector)) != text:
        if loop.time() > deadline:
            raise AssertionError(f"{selector} says {got!r}, not {text!r}, after {timeout:g} s")
        await frames(page, 1)
