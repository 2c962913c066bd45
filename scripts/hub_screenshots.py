"""Take the hub console's screenshots in docs/ from a real scenario on the embedded broker.

    .venv/bin/python scripts/hub_screenshots.py [--out docs]

Five building gateways (synthetic sensors) in two communities of one subdistrict publish
to an embedded broker; one of them stops, so the hub raises "gateway offline". The hub
(scope: the subdistrict) serves the console; Debian's Chromium (driven by Playwright)
logs in and takes ``hub-alarms.png``, ``hub-subdistrict.png`` (the subdistrict's
communities) and ``hub-community.png`` (a community's compounds) at 1920x1080, and
``hub-alarms-phone.png`` and ``hub-subdistrict-phone.png`` at 390x844 (2x).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import tempfile
import time
from pathlib import Path

import yaml
from playwright.async_api import async_playwright

from gateway.console.passwords import hash_password
from gateway.console.user_cli import generate_password
from gateway.console.users import UsersFile
from gateway.demo.embedded_broker import embedded_broker, free_port
from gateway.hub.config import load_hub_config
from gateway.hub.service import Hub
from gateway.runtime.app import Gateway
from gateway.runtime.site import load_site

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# site -> (community, compound, building, what it watches, severity of its alarm or None)
SITES = {
    "sg-n-b3": ("Sunny Garden", "North", "3", "pump_room", 1),
    "sg-n-b5": ("Sunny Garden", "North", "5", "ev_charging", 2),
    "sg-s-b1": ("Sunny Garden", "South", "1", "lift", None),
    "rv-e-b2": ("Riverside", "East", "2", "fire_panel", 1),
    "rv-e-b4": ("Riverside", "East", "4", "lift", None),  # stops: "gateway offline"
}
MESSAGES = {"pump_room": "Water level high in the pump room",
            "ev_charging": "Charging port over power", "fire_panel": "Fire panel fault",
            "lift": "Lift stopped between floors"}


def site_file(folder: Path, site: str, port: int) -> Path:
    community, compound, building, kind, severity = SITES[site]
    raw = {
        "site": {"id": site, "name": f"{compound} building {building}", "subdistrict": "Xinqiao",
                 "community": community, "compound": compound, "building": building},
        "state_dir": str(folder / site),
        "mqtt": {"host": "127.0.0.1", "port": port, "health_interval": 2},
        "devices": [{"id": f"{kind}-{building}", "type": "synthetic", "kind": kind,
                     "fields": ["level"], "poll_interval": 1,
                     "location": {"building": building, "floor": "B1"}}],
        "rules": [] if severity is None else [
            {"id": f"{kind}-alarm", "type": "threshold", "select": {"kinds": [kind]},
             "field": "level", "above": 5, "severity": severity,
             "message": MESSAGES[kind] + " (building {building})"}],
    }
    path = folder / f"{site}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def hub_file(folder: Path, port: int, http_port: int, password: str) -> Path:
    UsersFile(path=folder / "hub-users.yaml").add("chief", "admin", hash_password(password))
    raw = {"hub": {"id": "xinqiao", "name": "Xinqiao subdistrict security room"},
           "broker": {"host": "127.0.0.1", "port": port},
           "scope": {"subdistrict": "Xinqiao"}, "state_dir": str(folder / "hub-state"),
           "alarms": {"tick_interval": 0.2},
           "http": {"listen": f"127.0.0.1:{http_port}"},
           "console": {"users_file": "hub-users.yaml"}}
    path = folder / "hub.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def main(out: Path) -> None:
    logging.basicConfig(level=logging.WARNING)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        password = generate_password()
        http_port = free_port()
        async with embedded_broker() as (_, port), contextlib.AsyncExitStack() as stack:
            tasks = {site: asyncio.create_task(Gateway(load_site(site_file(folder, site, port))).run())
                     for site in SITES}
            hub = Hub(load_hub_config(hub_file(folder, port, http_port, password)))
            hub_task = asyncio.create_task(hub.run())
            stack.callback(hub_task.cancel)
            for task in tasks.values():
                stack.callback(task.cancel)
            deadline = time.monotonic() + 30
            while len(hub.view.open_alarms()) < 3 or len(hub.live.in_scope()) < len(SITES):
                if time.monotonic() > deadline:
                    raise SystemExit("the hub did not see every site and alarm within 30 s")
                await asyncio.sleep(0.2)
            tasks["rv-e-b4"].cancel()  # a clean stop says "offline": the hub's own alarm
            while not any(r["origin"] == "hub" for r in hub.view.open_alarms()):
                await asyncio.sleep(0.2)
            await shoot(out, f"http://127.0.0.1:{http_port}", password)


async def shoot(out: Path, base: str, password: str) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            for suffix, viewport, scale in (("", {"width": 1920, "height": 1080}, 1),
                                            ("-phone", {"width": 390, "height": 844}, 2)):
                context = await browser.new_context(viewport=viewport, device_scale_factor=scale)
                page = await context.new_page()
                await page.goto(f"{base}/console/")
                await page.fill("#user", "chief")
                await page.fill("#password", password)
                await page.click("#login-submit")
                await page.wait_for_selector('#live[data-live="yes"]')
                await page.wait_for_selector('article.alarm[data-severity="1"]')
                await page.screenshot(path=str(out / f"hub-alarms{suffix}.png"))
                await page.click('[data-tab="fleet"]')
                await page.click('tr[data-fleet-row="Xinqiao"] button')
                await page.wait_for_selector('table.fleet[data-level="community"]')
                await page.screenshot(path=str(out / f"hub-subdistrict{suffix}.png"))
                if not suffix:
                    await page.click('tr[data-fleet-row="Riverside"] button')
                    await page.wait_for_selector('table.fleet[data-level="compound"]')
                    await page.screenshot(path=str(out / "hub-community.png"))
                await context.close()
        finally:
            await browser.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    asyncio.run(main(parser.parse_args().out))
