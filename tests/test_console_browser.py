"""The security-room console in a real headless Chromium, against the gateway on simulators.

The gateway runs in the test's loop with its HTTP server (and so the console) on a
free port; the charging cabinet simulator serves Modbus TCP; Mosquitto carries the
alarms. The browser is Debian's Chromium driven by Playwright (see console_support).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from console_support import OPERATOR, VIEWER, chromium, log_in, with_console
from harness import MqttRecorder, cabinet_site, running_gateway, wait_until, write_site
from simulators.charging_cabinet import CabinetModel
from simulators.modbus_server import CabinetServer

SMOKE_RULE = {"id": "smoke", "type": "threshold", "select": {"kinds": ["ev_charging"]},
              "field": "smoke", "above": 0.5, "severity": 1, "latch": True,
              "message": "SMOKE in {device} (building {building}, floor {floor})",
              "actions": [{"write": "relay", "value": 0, "channels": "all"}]}
OVER_POWER_RULE = {"id": "over-power", "type": "threshold", "select": {"kinds": ["ev_charging"]},
                   "field": "power", "above": 1000, "hysteresis": 100, "severity": 2,
                   "actions": [{"write": "relay", "value": 0}]}
DESKTOP = {"width": 1920, "height": 1080}
PHONE = {"width": 390, "height": 844}

# Records (in the page) when the first row of a level-1 alarm appears, by the page's clock
# (the same machine's wall clock as the test's time.time()).
WATCH_FOR_LEVEL1 = """() => {
  window.__level1Seen = null;
  const seen = () => document.querySelector('article.alarm[data-severity="1"]');
  new MutationObserver(() => { if (!window.__level1Seen && seen()) window.__level1Seen = Date.now(); })
    .observe(document.getElementById('alarm-list'), {childList: true, subtree: true});
}"""


def smoke_cabinet() -> tuple[CabinetModel, float]:
    """A cabinet whose smoke incident waits until the test starts it (see ``start_incident``)."""
    created = time.monotonic()
    return CabinetModel(ports=4, scenario="smoke", incident_after=3600.0, seed=5), created


def start_incident(model: CabinetModel, created: float) -> float:
    """Make the model's incident begin now; the wall-clock time it began."""
    began = time.time()
    # The model starts its incident once (its clock - its start) >= incident_after; its
    # start is a little after ``created``, so this puts the onset at (just after) now.
    model.incident_after = time.monotonic() - created
    return began


async def test_alarm_shows_within_a_second_sounds_and_ack_on_the_page_reaches_mqtt(
        tmp_path: Path, mosquitto, unique_id, free_port) -> None:
    model, created = smoke_cabinet()
    port = free_port()
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv, \
            MqttRecorder(mosquitto.port, f"community/{unique_id}/#") as mqtt:
        raw = cabinet_site(unique_id, bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": srv.port},
                           mqtt_port=mosquitto.port, rules=[SMOKE_RULE, OVER_POWER_RULE])
        async with running_gateway(write_site(tmp_path, with_console(raw, tmp_path, port))) as gw, \
                chromium() as browser:
            await wait_until(lambda: gw.http.listening and gw.runners[0].health.online, 5, "gateway up")
            page = await browser.new_page(viewport=DESKTOP)
            await log_in(page, f"http://127.0.0.1:{port}", OPERATOR)
            assert await page.locator("article.alarm").count() == 0
            assert await page.get_attribute("body", "data-alert") == "off"
            await page.evaluate(WATCH_FOR_LEVEL1)

            began = start_incident(model, created)
            row = page.locator('article.alarm[data-severity="1"]')
            await row.wait_for(timeout=3000)
            seen = await page.evaluate("window.__level1Seen")
            assert seen / 1000 - began < 1.0, f"alarm on the page {seen / 1000 - began:.3f} s after the incident"

            # what a guard needs to see: where, what, how often, in which state, since when
            assert "SMOKE in charger-1" in await row.locator(".message").inner_text()
            assert await row.locator(".c-location").inner_text() == "Bldg 3 · Unit 2 · Floor B1"
            assert await row.locator(".c-value").inner_text() == ""  # smoke is yes/no: no number
            assert await row.locator(".c-count").inner_text() == "×1"
            assert "unacknowledged" in await row.locator(".c-state").inner_text()
            assert (await row.locator(".c-age").inner_text()).endswith(" s")
            # the audible alert: on while a level-1 alarm waits for an acknowledgement
            await page.wait_for_selector('body[data-alert="on"]')
            assert await page.get_attribute("body", "data-sound") == "playing"
            assert await page.locator("#alert-banner").is_visible()

            alarm_id = await row.get_attribute("data-alarm-id")
            await row.locator('button[data-action="ack"]').click()
            await page.fill("#dlg-note", "guard Wang going to B1")
            await page.click("#dlg-confirm")
            await page.wait_for_selector(f'article.alarm[data-alarm-id="{alarm_id}"][data-acked="yes"]')
            await page.wait_for_selector('body[data-alert="off"]')

            acked = await mqtt.wait_for(lambda: [a for _, a in mqtt.json_on(f"/alarms/{alarm_id}")
                                                 if a["acked"]], 3)
            assert acked[-1]["state"] == "active" and acked[-1]["latched"] is True
            [event] = [e for _, e in mqtt.json_on("/alarm_events") if e["event"] == "acked"]
            assert event["by"] == OPERATOR[0] and event["note"] == "guard Wang going to B1"
            # the latched smoke alarm offers no reset while smoke is still there
            assert await row.locator('button[data-action="reset"]').count() == 0
            await page.screenshot(path=str(tmp_path / "console.png"))
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert {"operator": OPERATOR[0], "action": "ack", "target": alarm_id,
            "note": "guard Wang going to B1", "ok": True}.items() <= audit[-1].items()


async def test_wrong_password_is_refused_and_a_viewer_sees_no_action_buttons(
        tmp_path: Path, unique_id, free_port) -> None:
    model = CabinetModel(ports=4, scenario="overpower", scenario_port=2, incident_after=0.0, seed=6)
    port = free_port()
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv:
        raw = cabinet_site(unique_id, bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": srv.port},
                           rules=[OVER_POWER_RULE])
        async with running_gateway(write_site(tmp_path, with_console(raw, tmp_path, port))) as gw, \
                chromium() as browser:
            await wait_until(lambda: gw.http.listening and gw.alarms.open_alarms(), 5, "an open alarm")
            base = f"http://127.0.0.1:{port}"
            context = await browser.new_context(viewport=DESKTOP)
            page = await context.new_page()
            await page.goto(f"{base}/console/")
            assert page.url.endswith("/console/login")
            await page.fill("#user", VIEWER[0])
            await page.fill("#password", "not-the-password")
            await page.click("#login-submit")
            error = page.locator("#login-error")
            await error.wait_for()
            assert await error.inner_text() == "Wrong user name or password."
            assert page.url.endswith("/console/login")
            assert await context.cookies() == []

            await page.fill("#password", VIEWER[1])
            await page.click("#login-submit")
            await page.wait_for_selector('#live[data-live="yes"]')
            await page.wait_for_selector('article.alarm[data-severity="2"]')
            assert "zhao (read only)" in await page.inner_text("#who")
            assert await page.locator("button[data-action]").count() == 0
            assert not await page.locator(".alarm-head .only-operator").is_visible()
            # the server refuses the viewer too, whatever the page shows
            status = await page.evaluate("""async (id) => {
                const me = await (await fetch('/console/api/me')).json();
                const r = await fetch(`/console/api/alarms/${id}/ack`, {method: 'POST',
                    headers: {'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf}, body: '{}'});
                return r.status; }""", gw.alarms.open_alarms()[0].id)
            assert status == 403 and not gw.alarms.open_alarms()[0].acked

            # Chinese, and a phone: the same alarm, as a card, nothing wider than the screen
            assert await page.evaluate("""() => { const {en, zh} = window.CG_I18N;
                return Object.keys(en).filter((k) => !(k in zh)).concat(
                       Object.keys(zh).filter((k) => !(k in en))); }""") == []
            await page.click("#lang")
            assert (await page.inner_text('[data-tab="alarms"]')).startswith("报警")
            assert await page.locator("article.alarm .c-location").inner_text() == "3号楼 2单元 B1层 2号端口"
            await page.set_viewport_size(PHONE)
            assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
            await page.click('[data-tab="devices"]')
            await page.wait_for_selector('article.device[data-online="online"]')
            await page.click('[data-tab="history"]')
            await page.wait_for_selector("#history-rows tr")
            await context.close()


async def test_page_shows_not_live_while_the_gateway_restarts_and_comes_back_by_itself(
        tmp_path: Path, unique_id, free_port) -> None:
    port = free_port()
    raw = {"site": {"id": unique_id, "name": "Restart test"},
           "devices": [{"id": "meter", "type": "synthetic", "kind": "power_meter", "fields": ["power"],
                        "poll_interval": 0.5, "location": {"building": "7"}}]}
    path = write_site(tmp_path, with_console(raw, tmp_path, port))
    async with chromium() as browser:
        page = await browser.new_page(viewport=DESKTOP)
        async with running_gateway(path) as gw:
            await wait_until(lambda: gw.http.listening, 5, "HTTP server")
            await log_in(page, f"http://127.0.0.1:{port}", OPERATOR)
            await page.click('[data-tab="devices"]')
            await page.wait_for_selector('article.device[data-device="meter"][data-online="online"]')
            gw.alarms.activate(rule="test", severity=2, device="meter", kind="power_meter", channel=None,
                               location={"building": "7"}, message="before the restart", value=1.0,
                               ts=time.time())
        # the gateway is gone
        await page.wait_for_selector('#live[data-live="no"]', timeout=5000)
        assert await page.locator("#offline-banner").is_visible()
        async with running_gateway(path) as gw:
            await wait_until(lambda: gw.http.listening, 5, "HTTP server again")
            # no reload, no new login: the page reconnects and is live again
            await page.wait_for_selector('#live[data-live="yes"]', timeout=10000)
            assert page.url.endswith("/console/")
            assert not await page.locator("#offline-banner").is_visible()
            gw.alarms.activate(rule="test-after", severity=1, device="meter", kind="power_meter",
                               channel=None, location={"building": "7"}, message="after the restart", value=1.0,
                               ts=time.time())
            await page.click('[data-tab="alarms"]')
            await page.wait_for_selector('article.alarm[data-severity="1"]', timeout=3000)
            # the alarm from before is still open, and its history survived the restart
            assert await page.locator("article.alarm").count() == 2
            await page.click('[data-tab="history"]')
            await page.fill('#history-form input[name="q"]', "before the restart")
            await page.click('#history-form button[type="submit"]')
            await page.wait_for_function(
                "() => [...document.querySelectorAll('#history-rows tr')].length === 1")
            assert "before the restart" in await page.inner_text("#history-rows")
