"""The hub's console in a real headless Chromium: a real gateway process raises an alarm at
its building and the hub (serving the same console package) shows it live with its place;
an ack on the hub's page is sent signed over Mosquitto and the row changes once the
gateway's retained state confirms it; with the gateway killed, a command shows as not
delivered; the fleet pages drill down subdistrict -> community -> compound -> gateways."""

from __future__ import annotations

import json

import pytest
import yaml

from console_support import chromium, log_in
from gateway.console.passwords import hash_password
from gateway.console.users import UserScope, UsersFile
from harness import MqttRecorder, wait_until
from test_hub_commands import HUB_KEY, commands_gateway, commands_hub
from test_hub_e2e import alarm_json, publish, running_hub, site_info, start, stop

pytestmark = pytest.mark.integration

GUARD = ("north-guard", "north-pass-1")
DESKTOP = {"width": 1920, "height": 1080}


@pytest.fixture(autouse=True)
def command_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_HUB_NORTH_KEY", HUB_KEY)


def hub_with_console(tmp_path, mqtt_port: int, http_port: int):
    UsersFile(path=tmp_path / "hub-users.yaml").add(
        GUARD[0], "operator", hash_password(GUARD[1]), scope=UserScope(communities=["North"]))
    path = commands_hub(tmp_path, mqtt_port, http_port=http_port)
    raw = yaml.safe_load(path.read_text())
    raw["console"] = {"users_file": "hub-users.yaml"}
    raw["commands"]["confirm_timeout"] = 2
    path.write_text(yaml.safe_dump(raw))
    return path


async def test_an_incident_appears_in_the_hub_console_and_an_ack_there_is_confirmed(
        tmp_path, mosquitto, free_port) -> None:
    http_port = free_port()
    base = f"http://127.0.0.1:{http_port}"
    proc = None
    async with running_hub(hub_with_console(tmp_path, mosquitto.port, http_port)) as hub, \
            MqttRecorder(mosquitto.port, "community/n-b2/alarms/+") as broker, chromium() as browser:
        try:
            await wait_until(lambda: hub.http.listening, 10, "the hub's console")
            page = await browser.new_page(viewport=DESKTOP)
            await log_in(page, base, GUARD)
            assert await page.locator("article.alarm").count() == 0
            assert await page.locator("#hub-filters select").count() == 6

            # the incident: a gateway process at building 2 of compound N2 raises a level-1 alarm
            proc = await start("run", str(commands_gateway(tmp_path, "n-b2", mosquitto.port)))
            row = page.locator('article.alarm[data-severity="1"]')
            await row.wait_for(timeout=20000)
            alarm_id = await row.get_attribute("data-alarm-id")
            assert alarm_id.startswith("n-b2:")
            assert (await row.locator(".c-location").inner_text()).startswith("N2 · N2 building 2 · Bldg 2 · Floor B1")
            await page.wait_for_selector('body[data-alert="on"]')  # the sound for level 1

            # the filters: another compound hides it, its own shows it
            await page.select_option('#hub-filters select[name="compound"]', "N2")
            assert await row.count() == 1
            await page.evaluate("window.cgHub.setFilters({compound: 'N1'})")
            await page.wait_for_selector("#no-alarms:not([hidden])")
            await page.evaluate("window.cgHub.setFilters({})")
            await row.wait_for()

            # ack on the hub's page: sent, then confirmed by the gateway's retained state
            await row.locator('button[data-action="ack"]').click()
            await page.fill("#dlg-note", "guard Wang on his way")
            await page.click("#dlg-confirm")
            await page.wait_for_selector(f'article.alarm[data-alarm-id="{alarm_id}"][data-acked="yes"]',
                                         timeout=10000)
            assert await page.get_attribute("body", "data-command") == "confirmed"
            own_id = alarm_id.split(":", 1)[1]
            states = [json.loads(p) for _, t, p in broker.messages if t.endswith(own_id) and p]
            assert states[-1]["acked"] is True
            await page.wait_for_selector('body[data-alert="off"]')

            # the fleet pages: subdistrict -> community -> compound -> its gateways
            await page.click('[data-tab="fleet"]')
            await page.click('tr[data-fleet-row="Riverside"] button')
            await page.click('tr[data-fleet-row="North"] button')
            await page.click('tr[data-fleet-row="N2"] button')
            gateway_row = page.locator('table.fleet[data-level="gateway"] tr[data-fleet-row="n-b2"]')
            await gateway_row.wait_for()
            assert await gateway_row.get_attribute("data-state") == "online"
            # each level has its own address: a reload comes back to the compound's page
            assert page.url.endswith("/console/#fleet/Riverside/North/N2")
            await page.reload()
            await gateway_row.wait_for()
            await page.screenshot(path=str(tmp_path / "hub-fleet.png"))
            await page.click('[data-tab="alarms"]')

            # the gateway is killed: a command is not delivered, and the row is unchanged
            proc.kill()
            await proc.wait()
            await row.locator('button[data-action="shelve"]').click()
            await page.fill("#dlg-note", "maintenance")
            await page.click("#dlg-confirm")
            assert await page.get_attribute("#hub-command", "data-state") == "sent"
            await page.wait_for_selector('#hub-command[data-state="not_delivered"]', timeout=10000)
            assert "Not delivered" in await page.inner_text("#hub-command")
            await page.click("#dlg-cancel")
            assert await page.get_attribute(f'article.alarm[data-alarm-id="{alarm_id}"]',
                                            "data-state") != "shelved"
            await page.screenshot(path=str(tmp_path / "hub-console.png"))
        finally:
            if proc is not None:
                await stop(proc)


async def test_the_alert_banner_names_the_newest_urgent_alarms_then_counts_the_rest(
        tmp_path, mosquitto, free_port) -> None:
    """Hundreds unacknowledged must not become a banner covering the page: three named, newest
    first, then how many more (the list below holds every one)."""
    http_port = free_port()
    alarms = []
    for k in range(5):
        alarm = {**alarm_json(f"n-b1-a{k}"), "message": f"door {k} forced",
                 "last_ts": f"2026-01-01T00:00:0{k}.000Z"}
        alarms.append((f"community/n-b1/alarms/{alarm['id']}", json.dumps(alarm).encode(), True))
    await publish(mosquitto.port, [("community/n-b1/info", site_info("n-b1"), True),
                                   ("community/n-b1/status", b"online", True), *alarms])
    async with running_hub(hub_with_console(tmp_path, mosquitto.port, http_port)) as hub, \
            chromium() as browser:
        await wait_until(lambda: hub.http.listening, 10, "the hub's console")
        page = await browser.new_page(viewport=DESKTOP)
        await log_in(page, f"http://127.0.0.1:{http_port}", GUARD)
        await page.wait_for_selector('body[data-alert="on"]')
        text = await page.locator("#alert-banner").inner_text()
        assert "door 4 forced · door 3 forced · door 2 forced · and 2 more" in text, text
        assert "door 0 forced" not in text
        assert await page.locator("article.alarm").count() == 5
