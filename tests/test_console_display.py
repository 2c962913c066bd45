"""What the console shows, in Debian's Chromium: the dialogs, places, values, layout at
1440 px and on a phone, Chinese glyphs, and a device's chart.

The gateway runs a cabinet simulator (building 3) and a synthetic camera (building 5);
alarms are put in with the alarm manager so each display case is exact.
"""

from __future__ import annotations

from pathlib import Path

from console_support import OPERATOR, chromium, log_in, with_console
from harness import cabinet_site, running_gateway, wait_until, write_site
from simulators.charging_cabinet import CabinetModel
from simulators.modbus_server import CabinetServer

OVER_POWER = {"id": "over-power", "type": "threshold", "select": {"kinds": ["ev_charging"]},
              "field": "power", "above": 1000, "hysteresis": 100, "severity": 2,
              "actions": [{"write": "relay", "value": 0}]}
SMOKE = {"id": "smoke", "type": "threshold", "select": {"kinds": ["ev_charging"]},
         "field": "smoke", "above": 0.5, "severity": 1, "latch": True}
THROW = {"id": "thrown-object", "type": "event", "select": {"kinds": ["thrown_object"]},
         "event": "throw", "severity": 1}
CAMERA = {"id": "camera-b5-east", "type": "synthetic", "kind": "thrown_object", "fields": ["uptime"],
          "events": ["throw"], "poll_interval": 1.0, "location": {"building": "5"}}
LAPTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


def site(tmp_path: Path, unique_id: str, modbus_port: int, http_port: int) -> Path:
    raw = cabinet_site(unique_id, bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": modbus_port},
                       rules=[OVER_POWER, SMOKE, THROW])
    raw["devices"].append(CAMERA)
    return write_site(tmp_path, with_console(raw, tmp_path, http_port))


def put_alarms(gw) -> dict[str, str]:
    """An over-power alarm still over (a number with its unit), a latched smoke alarm (a
    yes/no: no number), and a throw from building 5's east facade, floors 11 to 13."""
    now = gw.clock.time()
    cabinet = {"building": "3", "unit": "2", "floor": "B1"}
    power = gw.alarms.activate(rule="over-power", severity=2, device="charger-1", kind="ev_charging",
                               channel=3, location={**cabinet, "port": 3},
                               message="Port 3 over power", value=1365.9, ts=now)
    smoke = gw.alarms.activate(rule="smoke", severity=1, device="charger-1", kind="ev_charging",
                               channel=None, location=cabinet, message="SMOKE", value=1.0, ts=now,
                               latch=True)
    throw = gw.alarms.activate(rule="thrown-object", severity=1, device="camera-b5-east",
                               kind="thrown_object", channel=None, location={"building": "5"},
                               message="Object thrown from building 5", value=None, ts=now,
                               momentary=True, details={"facade": "east", "floor_low": 11,
                                                        "floor_high": 13, "confidence": 0.92})
    return {"power": power.id, "smoke": smoke.id, "throw": throw.id}


async def test_console_shows_places_values_dialogs_and_fits_a_laptop_and_a_phone(
        tmp_path: Path, unique_id, free_port) -> None:
    model = CabinetModel(ports=4, scenario="normal", seed=3)
    port = free_port()
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv, \
            running_gateway(site(tmp_path, unique_id, srv.port, port)) as gw, chromium() as browser:
        await wait_until(lambda: gw.http.listening and gw.runners[0].health.online, 5, "gateway up")
        ids = put_alarms(gw)
        base = f"http://127.0.0.1:{port}"
        page = await browser.new_page(viewport=LAPTOP)
        await log_in(page, base, OPERATOR)
        row = {name: page.locator(f'article.alarm[data-alarm-id="{i}"]') for name, i in ids.items()}
        await row["throw"].wait_for()

        # the header names the compound's buildings, not one
        assert await page.locator("#site-buildings").inner_text() == "Buildings 3 · 5"
        # a throw: the facade and the floors; values: the reading that raised it, with its unit
        assert await row["throw"].locator(".c-location").inner_text() == "Bldg 5 · east facade · Floors 11–13"
        assert await row["power"].locator(".c-value").inner_text() == "1365.9 W"
        assert await row["smoke"].locator(".c-value").inner_text() == ""
        assert await row["throw"].locator(".c-value").inner_text() == ""
        gw.alarms.deactivate(rule="over-power", device="charger-1", channel=3, value=0.0,
                             ts=gw.clock.time())  # the port was cut: 0 W is not what raised it
        await page.wait_for_selector(f'article.alarm[data-alarm-id="{ids["power"]}"][data-state="cleared"]')
        assert await row["power"].locator(".c-value").inner_text() == ""

        # at 1440 px every button stays inside its row
        for alarm in row.values():
            box = await alarm.bounding_box()
            for button in await alarm.locator("button").all():
                b = await button.bounding_box()
                assert b["x"] + b["width"] <= box["x"] + box["width"], await button.inner_text()

        # Acknowledge asks for a note only; Shelve also for how long; Unshelve for neither
        await row["power"].locator('button[data-action="ack"]').click()
        assert not await page.locator("#dlg-minutes-row").is_visible()
        assert await page.locator("#dlg-note").is_visible()
        await page.click("#dlg-cancel")
        await row["power"].locator('button[data-action="shelve"]').click()
        assert await page.locator("#dlg-minutes-row").is_visible()
        await page.fill("#dlg-note", "electrician on the way")
        await page.click("#dlg-confirm")
        unshelve = row["power"].locator('button[data-action="unshelve"]')
        await unshelve.wait_for()
        await unshelve.click()
        assert not await page.locator("#dlg-minutes-row").is_visible()
        assert not await page.locator("#dlg-note").is_visible()
        await page.click("#dlg-cancel")

        # devices: kinds in words, and a port table that is not cut
        await page.click('[data-tab="devices"]')
        camera = page.locator('article.device[data-device="camera-b5-east"]')
        await camera.wait_for()
        assert "Thrown-object camera" in await camera.inner_text()
        table = page.locator('article.device[data-device="charger-1"] .readings-wrap')
        await table.wait_for()
        assert await table.evaluate("el => el.scrollWidth <= el.clientWidth")

        # Chinese: the glyphs come from a CJK font, not empty boxes
        await page.click("#lang")
        tab = page.locator('[data-tab="alarms"] [data-i18n="tab_alarms"]')
        assert await tab.inner_text() == "报警"
        assert await cjk_fonts_of(page, '[data-tab="alarms"] [data-i18n="tab_alarms"]')
        await page.screenshot(path=str(tmp_path / "console-zh.png"))
        await page.close()

        # a phone: the header and banners leave room for more than one alarm card
        context = await browser.new_context(viewport=PHONE, device_scale_factor=2)
        phone = await context.new_page()
        await log_in(phone, base, OPERATOR)
        await phone.locator("article.alarm").nth(2).wait_for()
        tabs = await phone.locator(".tabs").bounding_box()
        assert tabs["y"] + tabs["height"] < 0.2 * PHONE["height"], tabs
        tops = [(await card.bounding_box())["y"] for card in await phone.locator("article.alarm").all()]
        assert sum(1 for y in tops if y < PHONE["height"]) >= 2, tops
        await context.close()


async def cjk_fonts_of(page, selector: str) -> list[str]:
    """The platform fonts Chromium drew the element's text with that have CJK glyphs."""
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("DOM.enable")
    await cdp.send("CSS.enable")
    root = await cdp.send("DOM.getDocument")
    node = await cdp.send("DOM.querySelector", {"nodeId": root["root"]["nodeId"], "selector": selector})
    fonts = (await cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node["nodeId"]}))["fonts"]
    return [f["familyName"] for f in fonts
            if any(name in f["familyName"] for name in ("WenQuanYi", "Noto Sans CJK", "Noto Serif CJK",
                                                        "Droid Sans Fallback", "AR PL"))]


async def test_a_device_page_charts_the_last_hour_with_the_cut_visible(
        tmp_path: Path, unique_id, free_port) -> None:
    from xml.etree import ElementTree

    from gateway.console.routes import RECENT

    model = CabinetModel(ports=4, scenario="overpower", scenario_port=2, incident_after=5.0, seed=8)
    port = free_port()
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv:
        raw = cabinet_site(unique_id, bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": srv.port},
                           rules=[OVER_POWER])
        async with running_gateway(write_site(tmp_path, with_console(raw, tmp_path, port))) as gw, \
                chromium() as browser:
            await wait_until(lambda: gw.http.listening and gw.runners[0].health.online, 5, "gateway up")
            recent = gw.http.app[RECENT]
            latest = gw.pipeline.latest

            def power(channel: int) -> float | None:
                reading = latest.get(("charger-1", channel))
                return reading.values.get("power") if reading else None

            # a sample while port 2 draws power, then (the over-power cut) one at 0 W
            await wait_until(lambda: (power(2) or 0) > 50, 10, "port 2 charging")
            recent.sample()
            await wait_until(lambda: gw.alarms.open_alarms() and power(2) == 0, 15, "port 2 cut")
            recent.sample()

            page = await browser.new_page(viewport=LAPTOP)
            await log_in(page, f"http://127.0.0.1:{port}", OPERATOR)
            await page.click('[data-tab="devices"]')
            await page.click('article.device[data-device="charger-1"] .device-open')
            chart = page.locator("#dev-chart")
            await chart.wait_for()
            assert await page.locator("#dev-field").input_value() == "power"
            await page.wait_for_function(
                "() => document.getElementById('dev-chart').complete"
                " && document.getElementById('dev-chart').naturalWidth > 0")
            response = await page.request.get(f"http://127.0.0.1:{port}" + await chart.get_attribute("src"))
            assert response.status == 200 and response.headers["content-type"].startswith("image/svg+xml")
            svg = ElementTree.fromstring(await response.text())
            lines = {el.get("data-channel"): el for el in svg.iter("{http://www.w3.org/2000/svg}polyline")}
            assert set(lines) == {"Port 1", "Port 2", "Port 3", "Port 4"}
            assert lines["Port 2"].get("data-last") == "0"  # the cut, on the chart
            assert len(lines["Port 2"].get("points").split()) >= 2
            assert ">W<" in await response.text()  # the unit, from the profile
            await page.screenshot(path=str(tmp_path / "device.png"))
            bad = await page.request.get(f"http://127.0.0.1:{port}/console/api/devices/charger-1/chart.svg?field=powr")
            assert bad.status == 400 and "no field 'powr'" in (await bad.json())["error"]
