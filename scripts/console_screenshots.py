"""Take the console screenshots in docs/ from a real scenario on simulators.

    /work/venv/bin/python scripts/console_screenshots.py [--out docs]

Three charging cabinets: smoke in building 3 (level 1, latched), a port over
power in building 5 (level 2, cut), and one in building 7 that does not answer
(level 3, device offline). The gateway runs in this process with its HTTP
server; Debian's Chromium (driven by Playwright) logs in and takes
``console.png`` (1920x1080, English: the alarms), ``console-devices.png`` and
``console-history.png`` (the other two tabs), ``console-device.png`` (a cabinet's
page: each port's power, port 2 cut), ``console-zh.png`` (1440x900, Chinese)
and ``console-phone.png`` (390x844 at 2x, Chinese). The Chinese ones need a CJK font
(Debian's fonts-wqy-microhei, which scripts/test.sh installs). A thrown-object
camera in building 5 reports a throw from the east facade, floors 11-13.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import tempfile
import time
from importlib import resources
from pathlib import Path

import yaml
from playwright.async_api import async_playwright

from gateway.runtime.app import Gateway
from gateway.runtime.site import load_site
from gateway.console.passwords import hash_password
from gateway.console.routes import RECENT
from gateway.console.user_cli import generate_password
from gateway.console.users import UsersFile
from gateway.demo.embedded_broker import free_port
from simulators.charging_cabinet import CabinetModel
from simulators.modbus_server import CabinetServer

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def site_config(folder: Path, http_port: int, b3: int, b5: int, dead: int) -> Path:
    rules = yaml.safe_load((resources.files("configs") / "charging-site.yaml").read_text())["rules"]
    cabinet = {"type": "modbus", "profile": "ev-cabinet", "channels": 4, "poll_interval": 0.5,
               "offline_after": 2}
    raw = {
        "site": {"id": "sunny-garden", "community": "Sunny Garden", "compound": "North compound",
                 "language": "en"},
        "http": {"listen": f"127.0.0.1:{http_port}"},
        "console": {"users_file": "users.yaml"},
        "state_dir": str(folder / "state"),
        "buses": [{"id": "b3-link", "type": "modbus_tcp", "host": "127.0.0.1", "port": b3, "timeout": 0.3},
                  {"id": "b5-link", "type": "modbus_tcp", "host": "127.0.0.1", "port": b5, "timeout": 0.3},
                  {"id": "b7-link", "type": "modbus_tcp", "host": "127.0.0.1", "port": dead,
                   "timeout": 0.2, "retries": 0}],
        "devices": [
            {"id": "charger-b3", "bus": "b3-link", **cabinet,
             "location": {"building": "3", "unit": "1", "floor": "B1", "room": "charging room"}},
            {"id": "charger-b5", "bus": "b5-link", **cabinet,
             "location": {"building": "5", "unit": "2", "floor": "1"}},
            {"id": "charger-b7", "bus": "b7-link", **cabinet,
             "location": {"building": "7", "unit": "1", "floor": "B1"}},
            {"id": "camera-b5-east", "type": "synthetic", "kind": "thrown_object",
             "fields": ["uptime"], "events": ["throw"], "location": {"building": "5"}},
        ],
        "rules": rules + [{"id": "thrown-object", "type": "event",
                           "select": {"kinds": ["thrown_object"]}, "event": "throw",
                           "severity": 1, "message": "Object thrown from building {building}"}],
    }
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return path


async def main(out: Path) -> None:
    logging.basicConfig(level=logging.WARNING)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        password = generate_password()
        UsersFile(path=folder / "users.yaml").add("wang", "operator", hash_password(password))
        smoke = CabinetModel(ports=4, scenario="smoke", incident_after=2.0, seed=11)
        power = CabinetModel(ports=4, scenario="overpower", scenario_port=2, incident_after=8.0, seed=12)
        http_port = free_port()
        async with CabinetServer(smoke, tcp=("127.0.0.1", 0)) as b3, \
                CabinetServer(power, tcp=("127.0.0.1", 0)) as b5:
            gateway = Gateway(load_site(site_config(folder, http_port, b3.port, b5.port, free_port())))
            task = asyncio.create_task(gateway.run(), name="gateway")
            sampler = None
            try:
                while gateway.http is None or not gateway.http.listening:
                    await asyncio.sleep(0.05)
                # The device chart: its last 20 s, sampled each second (the console's own
                # sampling, every 10 s over an hour, would show a sliver this soon).
                recent = gateway.http.app[RECENT]
                recent.window, recent.interval = 20.0, 0.5
                sampler = asyncio.create_task(recent.run(), name="sampler")
                deadline = time.monotonic() + 30
                while len({a.rule for a in gateway.alarms.open_alarms()}) < 3:
                    if time.monotonic() > deadline:
                        raise SystemExit("the scenario did not raise its alarms in 30 s")
                    await asyncio.sleep(0.1)
                offline = next(a for a in gateway.alarms.open_alarms() if a.rule == "device_offline")
                gateway.alarms.ack(offline.id, by="wang", note="maintenance called")
                # what the camera's analytics report (see configs/profiles/thrown-object-camera.yaml)
                gateway.alarms.activate(
                    rule="thrown-object", severity=1, device="camera-b5-east", kind="thrown_object",
                    channel=None, location={"building": "5"}, value=None, ts=gateway.clock.time(),
                    message="Object thrown from building 5, see the snapshot", momentary=True,
                    details={"facade": "east", "floor_low": 11, "floor_high": 13, "confidence": 0.92})
                await asyncio.sleep(6)  # let the ages read like a real night
                await shoot(f"http://127.0.0.1:{http_port}", password, out)
            finally:
                if sampler is not None:
                    sampler.cancel()
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def shoot(base: str, password: str, out: Path) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for name, viewport, scale, lang in (("console.png", {"width": 1920, "height": 1080}, 1, "en"),
                                            ("console-zh.png", {"width": 1440, "height": 900}, 1, "zh"),
                                            ("console-phone.png", {"width": 390, "height": 844}, 2, "zh")):
            context = await browser.new_context(viewport=viewport, device_scale_factor=scale)
            await context.add_init_script(f"localStorage.setItem('cg-lang', '{lang}')")
            page = await context.new_page()
            await page.goto(f"{base}/console/")
            await page.fill("#user", "wang")
            await page.fill("#password", password)
            await page.click("#login-submit")
            await page.wait_for_selector('#live[data-live="yes"]')
            await page.wait_for_selector("article.alarm")
            await page.wait_for_timeout(1200)  # one tick of the ages and the clock
            await page.screenshot(path=str(out / name))
            print(f"wrote {out / name}")
            if lang == "en":
                await page.click('[data-tab="devices"]')
                await page.wait_for_selector("article.device")
                await page.screenshot(path=str(out / "console-devices.png"))
                print(f"wrote {out / 'console-devices.png'}")
                await page.click('article.device[data-device="charger-b5"] .device-open')
                await page.wait_for_function("() => document.getElementById('dev-chart').complete"
                                             " && document.getElementById('dev-chart').naturalWidth > 0")
                await page.screenshot(path=str(out / "console-device.png"))
                print(f"wrote {out / 'console-device.png'}")
                await page.click("#dev-close")
                await page.click('[data-tab="history"]')
                await page.wait_for_selector("#history-rows tr")
                await page.screenshot(path=str(out / "console-history.png"))
                print(f"wrote {out / 'console-history.png'}")
            await context.close()
        await browser.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs")
    asyncio.run(main(parser.parse_args().out))
