"""The console's Zones and Device digest tabs in a real headless Chromium, against the
perimeter example site on the I/O module simulator (Modbus TCP): an operator disarms
the fence with a note and bypasses an input; a viewer sees it all and can change
nothing; the digest shows a device fault as it builds up."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from console_support import OPERATOR, VIEWER, chromium, log_in, with_console
from harness import running_gateway, wait_until, write_site
from simulators.io_module import IoModuleModel
from simulators.modbus_server import CabinetServer

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "configs", "perimeter-site.yaml")
DESKTOP = {"width": 1600, "height": 1000}


def perimeter_site(site_id: str, *, port: int) -> dict:
    """The example site on one simulated module, the fence armed around the clock."""
    with open(EXAMPLE, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    raw["site"]["id"] = site_id
    del raw["mqtt"], raw["local_series"]
    raw["buses"] = [{"id": "perimeter-line", "type": "modbus_tcp", "host": "127.0.0.1",
                     "port": port, "timeout": 0.5}]
    for device in raw["devices"]:
        device["poll_interval"] = 0.05
    raw["devices"][1]["slave_base"] = 0  # one simulated module carries both here
    raw["arming"][0]["schedule"] = "always"
    return raw


def audit_lines(tmp_path: Path) -> list[dict]:
    path = tmp_path / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# A POST the page's own script could make, with the session's CSRF token: what a viewer
# who edits the page (or a bug that shows a button) would send.
FORCED_DISARM = """async () => {
  const me = await (await fetch('/console/api/me')).json();
  const r = await fetch('/console/api/zones/disarm', {method: 'POST', credentials: 'same-origin',
    headers: {'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf},
    body: JSON.stringify({group: 'perimeter-night', note: 'let me'})});
  return [r.status, (await r.json()).error];
}"""


async def test_operator_disarms_and_bypasses_with_notes_and_a_viewer_cannot(
        tmp_path: Path, unique_id, free_port) -> None:
    model = IoModuleModel(scenario="normal")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv:
        raw = with_console(perimeter_site(unique_id, port=srv.port), tmp_path, port)
        async with running_gateway(write_site(tmp_path, raw)) as gw, chromium() as browser:
            await wait_until(lambda: gw.http.listening, 5, "gateway up")
            assert gw.protections.armed("perimeter-night")
            page = await browser.new_page(viewport=DESKTOP)
            await log_in(page, base, OPERATOR)
            await page.click('[data-tab="zones"]')
            fence = page.locator('#zone-groups tr[data-group="perimeter-night"]')
            await fence.wait_for(timeout=5000)
            assert await fence.locator(".z-state").inner_text() == "Armed"
            assert await fence.locator(".z-source").inner_text() == "schedule"
            assert await page.locator("#tab-alarms").is_hidden()

            # disarm: a note is required
            await fence.locator("button.z-disarm").click()
            await page.click("#zone-dlg-confirm")
            assert await page.locator("#zone-dlg-error").inner_text() == "A note is required: say why."
            assert gw.protections.armed("perimeter-night")
            await page.fill("#zone-dlg-note", "fence repair crew on site")
            await page.click("#zone-dlg-confirm")
            await page.wait_for_selector('#zone-groups tr[data-group="perimeter-night"][data-armed="false"]',
                                         timeout=5000)
            assert await fence.locator(".z-state").inner_text() == "Disarmed"
            assert await fence.locator(".z-source").inner_text() == "by hand"
            assert await fence.locator(".z-by").inner_text() == OPERATOR[0]
            assert await fence.locator(".z-note").inner_text() == "fence repair crew on site"
            assert await fence.locator(".z-until").inner_text() != ""
            assert not gw.protections.armed("perimeter-night")
            assert gw.protections.arming["perimeter-night"].by == OPERATOR[0]

            # bypass input 2 (the detector cover) until the time in the form, with a note
            await page.select_option("#bypass-device", "perimeter-north")
            await page.fill("#bypass-channel", "2")
            assert await page.locator("#bypass-channel-name").inner_text() == \
                "north fence segment 2 detector cover"
            await page.fill("#bypass-note", "cover being replaced")
            await page.click('#bypass-form button[type="submit"]')
            row = page.locator('#zone-bypassed tr[data-input="perimeter-north:2"]')
            await row.wait_for(timeout=5000)
            assert await row.locator(".z-by").inner_text() == OPERATOR[0]
            assert await row.locator(".z-note").inner_text() == "cover being replaced"
            assert await row.locator(".z-input-name").inner_text() == \
                "north fence segment 2 detector cover"
            assert gw.protections.hold_back("tamper", "perimeter-north", 2,
                                            gw.clock.time()) == "bypassed"
            # an end time in the past is refused by the gateway, with the reason
            await page.fill("#bypass-channel", "3")
            await page.fill("#bypass-until", "2020-01-01T08:00")
            await page.fill("#bypass-note", "too late")
            await page.click('#bypass-form button[type="submit"]')
            await page.wait_for_selector("#bypass-error:not([hidden])", timeout=5000)
            assert await page.locator("#bypass-error").inner_text() == "the end time is in the past"
            assert "perimeter-north:3" not in gw.protections.bypassed

            # out of service and back
            await page.select_option("#oos-device", "water-supply")
            await page.fill("#oos-note", "pump maintenance")
            await page.click('#oos-form button[type="submit"]')
            oos = page.locator('#zone-oos tr[data-device="water-supply"]')
            await oos.wait_for(timeout=5000)
            assert await oos.locator(".z-note").inner_text() == "pump maintenance"
            await oos.locator("button.z-end").click()
            await oos.wait_for(state="detached", timeout=5000)
            assert "water-supply" not in gw.protections.snapshot()["out_of_service"]

            # the audit trail: who, what, on which, why
            trail = [(e["operator"], e["action"], e.get("target"), e.get("note"), e["ok"])
                     for e in audit_lines(tmp_path) if e["action"] not in ("login", "logout")]
            assert trail == [
                ("wang", "disarm", "perimeter-night", "fence repair crew on site", True),
                ("wang", "bypass", "perimeter-north:2", "cover being replaced", True),
                ("wang", "bypass", "perimeter-north:3", "too late", False),
                ("wang", "out_of_service", "water-supply", "pump maintenance", True),
                ("wang", "return_to_service", "water-supply", None, True)]

            # a viewer sees who disarmed the fence, and has no way to change it
            viewer = await browser.new_page(viewport=DESKTOP)
            await log_in(viewer, base, VIEWER)
            await viewer.click('[data-tab="zones"]')
            fence = viewer.locator('#zone-groups tr[data-group="perimeter-night"]')
            await fence.wait_for(timeout=5000)
            assert await fence.locator(".z-state").inner_text() == "Disarmed"
            assert await fence.locator(".z-by").inner_text() == OPERATOR[0]
            assert await viewer.locator("#zone-groups button").count() == 0
            assert await viewer.locator("#zone-bypassed button").count() == 0
            assert await viewer.locator("#bypass-form").is_hidden()
            assert await viewer.locator("#oos-form").is_hidden()
            assert await viewer.evaluate(FORCED_DISARM) == [403, "your role is read-only"]
            assert not gw.protections.armed("perimeter-night")
            assert gw.protections.arming["perimeter-night"].note == "fence repair crew on site"
            refused = [e for e in audit_lines(tmp_path) if not e["ok"] and e["operator"] == VIEWER[0]]
            assert [(e["action"], e["detail"]) for e in refused] == [("disarm", "read-only user")]


async def test_the_digest_tab_shows_a_device_fault_as_the_day_builds_up(
        tmp_path: Path, unique_id, free_port) -> None:
    model = IoModuleModel(scenario="normal")
    port = free_port()
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv:
        raw = with_console(perimeter_site(unique_id, port=srv.port), tmp_path, port)
        async with running_gateway(write_site(tmp_path, raw)) as gw, chromium() as browser:
            await wait_until(lambda: gw.http.listening, 5, "gateway up")
            model.analog[0] = 0  # the pressure transmitter's loop opens: a device fault
            fault = "device_fault:pressure_transmitter_loop_open"
            await wait_until(lambda: any(a.rule == fault for a in gw.alarms.open_alarms()), 5,
                             "device fault")
            page = await browser.new_page(viewport=DESKTOP)
            await log_in(page, f"http://127.0.0.1:{port}", VIEWER)  # reading needs no operator
            await page.click('[data-tab="digest"]')
            row = page.locator('#digest-since-table tr[data-device="water-supply"]')
            await row.wait_for(timeout=5000)
            assert await row.locator(".d-faults").inner_text() == "pressure transmitter loop open ×1"
            assert (await row.locator(".d-open").inner_text()).startswith(
                "pressure transmitter loop open (since ")
            assert "No digest made yet" in await page.locator("#digest-latest").inner_text()
            assert await page.locator("#tab-zones").is_hidden()

            gw.digest.build()  # the morning's digest is made: it becomes the latest
            await page.click('[data-tab="alarms"]')
            await page.click('[data-tab="digest"]')
            latest = page.locator('#digest-latest-table tr[data-device="water-supply"]')
            await latest.wait_for(timeout=5000)
            assert await latest.locator(".d-faults").inner_text() == "pressure transmitter loop open ×1"


# -- the routes over HTTP, without a browser --------------------------------------------


def zone_site(tmp_path: Path) -> dict:
    from console_support import write_users

    write_users(tmp_path / "users.yaml")
    return {"site": {"id": "s1"}, "state_dir": str(tmp_path / "state"),
            "arming": [{"id": "fence", "name": "Fence", "schedule": ["22:00-06:00"]}],
            "devices": [{"id": "di", "type": "synthetic", "kind": "perimeter", "channels": 8,
                         "fields": ["loop_closed"], "poll_interval": 60}],
            "console": {"users_file": "users.yaml", "audit_file": "audit.jsonl"}}


async def test_the_zone_routes_say_why_they_refuse(tmp_path: Path) -> None:
    from dataclasses import replace
    from datetime import datetime, timedelta, timezone

    from http_support import AppClient

    from gateway.operations.http_app import App

    from gateway.console.routes import add_console_routes
    from gateway.runtime.app import Gateway
    from gateway.runtime.site import load_site
    from test_console_auth import login

    gw = Gateway(load_site(write_site(tmp_path, zone_site(tmp_path))))
    app = App()
    add_console_routes(app, gw.views)
    soon = (datetime.now(timezone.utc) + timedelta(hours=2)).isoformat()
    async with AppClient(app) as client:
        headers = {"X-CSRF-Token": await login(client, OPERATOR)}

        async def post(action: str, body: dict) -> tuple[int, dict]:
            r = await client.post(f"/console/api/zones/{action}", json=body, headers=headers)
            return r.status, await r.json()

        assert await post("disarm", {"group": "fence"}) == (400, {"error": "a note is required: say why"})
        assert (await post("disarm", {"group": "gate", "note": "x"}))[0] == 404
        assert await post("bypass", {"device": "di", "channel": 9, "note": "x", "until": soon}) == \
            (400, {"error": "device di has inputs 1..8"})
        assert (await post("bypass", {"device": "nope", "channel": 1, "note": "x", "until": soon}))[0] == 404
        status, body = await post("bypass", {"device": "di", "channel": 1, "note": "x",
                                             "until": "2030-01-01T08:00:00"})
        assert status == 400 and "time zone" in body["error"]
        status, body = await post("out_of_service", {"device": "di", "note": "x",
                                                     "until": "2099-01-01T08:00:00Z"})
        assert status == 400 and "30 days" in body["error"]
        assert await post("end_bypass", {"device": "di", "channel": 1}) == \
            (409, {"error": "di:1 is not bypassed"})
        assert (await post("arm", {"group": "fence", "note": "x", "extra": 1}))[0] == 400
        assert gw.protections.snapshot()["bypassed"] == [] and not gw.protections.arming
        status, body = await post("arm", {"group": "fence", "note": "early shift", "until": soon})
        assert status == 200 and body["groups"][0]["armed"] and body["groups"][0]["by"] == OPERATOR[0]
        assert [d["id"] for d in body["devices"]] == ["di"]
        # a console without zones (a hub's, say) says so
        bare = App()
        add_console_routes(bare, replace(gw.views, zones=None, digest=None))
    async with AppClient(bare) as client:
        headers = {"X-CSRF-Token": await login(client, OPERATOR)}
        assert (await client.get("/console/api/zones")).status == 404
        assert (await client.get("/console/api/digest")).status == 404
        r = await client.post("/console/api/zones/arm", json={"group": "fence", "note": "x"},
                              headers=headers)
        assert r.status == 404
