"""Take the console's Zones and Device digest screenshots in docs/ from the perimeter
example site on the I/O module simulator.

    .venv/bin/python scripts/zones_screenshots.py [--out docs]

The example site (configs/perimeter-site.yaml) on a simulated module over Modbus TCP:
the guard on duty has disarmed the north fence for a repair crew, bypassed the fence
detector's cover and taken the water supply out of service; the pressure transmitter's
loop opened (a device fault) before the morning digest, and the detector's fault
contact since. Writes ``console-zones.png`` and ``console-digest.png`` (1600x1000,
English). Kept apart from console_screenshots.py (the alarm tabs' scenario).
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

from gateway.console.passwords import hash_password
from gateway.console.user_cli import generate_password
from gateway.console.users import UsersFile
from gateway.demo.embedded_broker import free_port
from gateway.runtime.app import Gateway
from gateway.runtime.site import load_site
from simulators.io_module import IoModuleModel
from simulators.modbus_server import CabinetServer

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1600, "height": 1000}


def site_config(folder: Path, http_port: int, modbus_port: int) -> Path:
    raw = yaml.safe_load((resources.files("configs") / "perimeter-site.yaml").read_text())
    del raw["mqtt"], raw["local_series"]
    raw["buses"] = [{"id": "perimeter-line", "type": "modbus_tcp", "host": "127.0.0.1",
                     "port": modbus_port, "timeout": 0.5}]
    raw["devices"][1]["slave_base"] = 0  # one simulated module carries both
    raw["http"] = {"listen": f"127.0.0.1:{http_port}"}
    raw["console"] = {"users_file": "users.yaml"}
    raw["state_dir"] = str(folder / "state")
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return path


async def wait_for(condition, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.1)


async def main(out: Path) -> None:
    logging.basicConfig(level=logging.WARNING)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        password = generate_password()
        UsersFile(path=folder / "users.yaml").add("wang", "operator", hash_password(password))
        model = IoModuleModel(scenario="normal")
        http_port = free_port()
        async with CabinetServer(model, tcp=("127.0.0.1", 0)) as module:
            gateway = Gateway(load_site(site_config(folder, http_port, module.port)))
            task = asyncio.create_task(gateway.run(), name="gateway")
            try:
                await wait_for(lambda: gateway.http is not None and gateway.http.listening, "HTTP up")
                rules = lambda: {a.rule for a in gateway.alarms.open_alarms()}  # noqa: E731
                model.analog[0] = 0  # the pressure transmitter's loop opens
                await wait_for(lambda: "device_fault:pressure_transmitter_loop_open" in rules(),
                               "transmitter fault")
                gateway.digest.build()  # the morning's digest
                model.inputs[2] = False  # the fence detector's fault contact opens since
                await wait_for(lambda: any(r.startswith("device_fault:beam") for r in rules()),
                               "detector fault")
                now = gateway.clock.time()
                zones = gateway.protections
                zones.set_armed("perimeter-night", False, by="wang",
                                note="fence repair crew on site", until=now + 4 * 3600)
                zones.bypass("perimeter-north", 2, by="wang", note="detector cover being replaced",
                             until=now + 8 * 3600)
                zones.take_out_of_service("water-supply", by="wang", note="pump maintenance",
                                          until=now + 3 * 3600)
                await shoot(f"http://127.0.0.1:{http_port}", password, out)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def shoot(base: str, password: str, out: Path) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport=VIEWPORT)
        await context.add_init_script("localStorage.setItem('cg-lang', 'en')")
        page = await context.new_page()
        await page.goto(f"{base}/console/")
        await page.fill("#user", "wang")
        await page.fill("#password", password)
        await page.click("#login-submit")
        await page.wait_for_selector('#live[data-live="yes"]')
        await page.click('[data-tab="zones"]')
        await page.wait_for_selector('#zone-oos tr[data-device="water-supply"]')
        await page.screenshot(path=str(out / "console-zones.png"))
        print(f"wrote {out / 'console-zones.png'}")
        await page.click('[data-tab="digest"]')
        await page.wait_for_selector("#digest-latest-table tr")
        await page.screenshot(path=str(out / "console-digest.png"))
        print(f"wrote {out / 'console-digest.png'}")
        await browser.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs")
    asyncio.run(main(parser.parse_args().out))
