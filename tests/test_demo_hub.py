"""`community-gateway demo` runs two buildings' gateways and the community hub on the
embedded broker, and prints the hub console's URL and login: that console shows both
buildings, and an ack there is confirmed by the building's gateway."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
HUB_LINE = re.compile(r"community hub console on (http://\S+/console/) \(log in as (\S+) / (\S+)\)")


async def test_the_demo_runs_two_buildings_and_the_hub(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        "bash", str(REPO / "scripts" / "demo.sh"), "--data-dir", str(tmp_path), cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    lines: list[str] = []
    try:
        async with asyncio.timeout(60):
            while not any(HUB_LINE.search(x) for x in lines):
                line = await proc.stdout.readline()
                assert line, f"the demo ended early: {lines}"
                lines.append(line.decode().rstrip("\n"))
        url, user, password = next(HUB_LINE.search(x) for x in lines if HUB_LINE.search(x)).groups()
        assert any("building 5 (pump room" in x and "security-room console on" in x for x in lines)
        drain = asyncio.create_task(proc.stdout.read())  # keep the pipe from filling up
        base = url.removesuffix("/console/")
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            async def login() -> bool:
                try:
                    async with s.post(f"{base}/console/api/login",
                                      json={"user": user, "password": password}) as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False


            async def gateways() -> set[str]:
                body = await (await s.get(f"{base}/console/api/devices")).json()
                return {d["id"] for d in body["devices"] if d["online"]}

            async def wait_for(fn, what: str, timeout: float = 30):
                loop = asyncio.get_running_loop()
                deadline = loop.time() + timeout
                while not (value := await fn()):
                    assert loop.time() < deadline, f"timed out waiting for {what}"
                    await asyncio.sleep(0.2)
                return value

            await wait_for(login, "the hub console answers")
            me = await (await s.get(f"{base}/console/api/me")).json()
            assert me["hub"] is True and me["role"] == "admin"

            async def both() -> bool:
                return await gateways() == {"sunny-garden-b3", "sunny-garden-b5"}

            await wait_for(both, "both buildings online in the hub")

            async def water() -> list[dict]:
                body = await (await s.get(f"{base}/console/api/alarms")).json()
                return [a for a in body["alarms"] if a["rule"] == "water-high" and not a["acked"]]

            [alarm] = await wait_for(water, "building 5's alarm")
            assert alarm["site"] == "sunny-garden-b5" and alarm["building"] == "5"
            async with s.post(f"{base}/console/api/alarms/{alarm['id']}/ack", json={},
                              headers={"X-CSRF-Token": me["csrf"]}) as r:
                body = await r.json()
                assert r.status == 200, body
            assert body["alarm"]["acked"] is True and body["alarm"]["command_state"] == "confirmed"
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            await proc.wait()
        await drain
        assert proc.returncode == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
