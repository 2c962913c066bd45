"""HTTP limits and trust: who may read, how many streams and connections, idle timeouts,
finite JSON, and the one live-event loop shared by /api/stream and the console."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import math
import os
import resource
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from http_support import AppClient

from console_support import OPERATOR, write_users
from gateway.clock import FakeClock
from gateway.config.advice import is_loopback
from gateway.runtime.site import load_site
from gateway.operations.connection_limit import OutOfFilesLogFilter, effective_limit
from gateway.operations.live_events import SLOTS
from gateway.readings import Reading
from gateway.runtime.app import Gateway
from harness import running_gateway, wait_until, write_site

TOKEN = "api-token-for-limits-51c9"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(autouse=True)
def api_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIMITS_API_TOKEN", TOKEN)


def site(tmp_path: Path, listen: str, *, token: bool = True, console: bool = False,
         **http) -> dict:
    raw: dict = {
        "site": {"id": "limits"},
        "state_dir": str(tmp_path / "state"),
        "http": {"listen": listen, **http},
        "devices": [{"id": "meter", "type": "synthetic", "kind": "meter", "fields": ["power"],
                     "poll_interval": 0.05}],
    }
    if token:
        raw["http"]["token"] = {"env": "LIMITS_API_TOKEN"}
    if console:
        write_users(tmp_path / "users.yaml")
        raw["console"] = {"users_file": "users.yaml"}
    return raw


def strict_json(text: str):
    """Parse as a strict client does: a bare NaN or Infinity is an error."""
    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


# -- who may read ------------------------------------------------------------------------


def test_loopback_is_127_slash_8_ipv6_loopback_and_localhost() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "127.255.0.9", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.20", "10.0.0.1", "gateway.local", "127.example"):
        assert not is_loopback(host), host


async def test_reads_need_the_token_when_the_listener_is_not_loopback(tmp_path, caplog) -> None:
    # The config says a LAN address; the test serves the same app on loopback.
    gateway = Gateway(load_site(write_site(tmp_path, site(tmp_path, "192.0.2.10:8080"))))
    caplog.set_level(logging.WARNING, logger="gateway.operations.http_api")
    async with AppClient(gateway.http.app) as c:
        for path in ("/api/devices", "/api/alarms", "/api/alarms/x/history", "/api/stream"):
            r = await c.get(path)
            assert r.status == 401, path
            assert "Bearer" in r.headers["WWW-Authenticate"]
            r = await c.get(path, headers={"Authorization": "Bearer wrong"})
            assert r.status == 401, path
        refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(refusals) == 1  # then one line a minute: a scanner cannot flood the log
        assert (await c.get("/api/devices", headers=AUTH)).status == 200
        async with c.get("/api/stream", headers=AUTH) as r:
            assert r.status == 200
        assert (await c.get("/healthz")).status in (200, 503)  # open: liveness probes
        assert (await c.get("/metrics")).status == 200

        # the terminal tools send the token for reads when they have one
        url = str(c.make_url("")).rstrip("/")
        env = {k: v for k, v in os.environ.items() if k != "GATEWAY_API_TOKEN"}
        rc, _, err = await run_cli("alarms", "list", "--url", url, env=env)
        assert rc == 1 and "refused the token" in err
        rc, out, _ = await run_cli("alarms", "list", "--url", url, env={**env, "GATEWAY_API_TOKEN": TOKEN})
        assert rc == 0 and "no open alarms" in out

    raw = site(tmp_path, "0.0.0.0:8080", token=False)
    gateway = Gateway(load_site(write_site(tmp_path, raw)))
    async with AppClient(gateway.http.app) as c:
        r = await c.get("/api/devices", headers=AUTH)
        assert r.status == 403 and "no http.token" in (await r.json())["error"]

    for listen in ("127.0.0.2:8080", "localhost:8080"):  # loopback: reads stay open
        gateway = Gateway(load_site(write_site(tmp_path, site(tmp_path, listen, token=False))))
        async with AppClient(gateway.http.app) as c:
            assert (await c.get("/api/devices")).status == 200, listen


async def run_cli(*args: str, env: dict) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


# -- finite JSON and one view of a device ------------------------------------------------


async def test_devices_stream_and_console_never_send_bare_nan(tmp_path) -> None:
    gateway = Gateway(load_site(write_site(tmp_path, site(tmp_path, "127.0.0.1:8080",
                                                            console=True))))
    gateway.pipeline.latest[("meter", None)] = Reading(
        "meter", None, {"power": math.nan, "peak": math.inf, "ok": 1.0}, time.time())
    alarm = gateway.alarms.activate(rule="r", severity=1, device="meter", kind="meter",
                                    channel=None, location={}, message="odd", value=math.nan,
                                    ts=time.time(), latch=True)
    async with AppClient(gateway.http.app) as c:
        api = strict_json(await (await c.get("/api/devices")).text())
        [meter] = api["devices"]
        assert meter["readings"][0]["values"] == {"power": None, "peak": None, "ok": 1.0}
        alarms = strict_json(await (await c.get("/api/alarms")).text())
        assert alarms["alarms"][0]["id"] == alarm.id and alarms["alarms"][0]["value"] is None

        await c.post("/console/api/login", json={"user": OPERATOR[0], "password": OPERATOR[1]})
        console = strict_json(await (await c.get("/console/api/devices")).text())
        assert console == api  # one serialiser for both

        events = []
        async with c.get("/api/stream") as r:
            gateway.alarms.ack(alarm.id, by="wang")
            name = None
            async with asyncio.timeout(10):
                async for raw in r.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        events.append((name, strict_json(line[6:])))
                    if {"reading", "alarm"} <= {n for n, _ in events}:
                        break
    [reading] = [b for n, b in events if n == "reading"]
    assert reading["values"] == {"power": None, "peak": None, "ok": 1.0}
    [acked] = [b for n, b in events if n == "alarm"]
    assert acked["event"] == "acked" and acked["alarm"]["value"] is None


# -- streams and connections ------------------------------------------------------------------


async def raw_request(port: int, path: str, headers: str = "") -> tuple[bytes, asyncio.StreamReader,
                                                                       asyncio.StreamWriter]:
    """Send a GET and read the status line; the connection is left open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
        await writer.drain()
        status = await reader.readline()
    except ConnectionResetError:
        status = b"reset"
    return status, reader, writer


async def test_hundreds_of_idle_stream_clients_are_capped_and_healthz_still_answers(
        tmp_path, free_port) -> None:
    port = free_port()
    async with running_gateway(write_site(tmp_path, site(tmp_path, f"127.0.0.1:{port}"))) as gw:
        await wait_until(lambda: gw.http.listening, 5, "API up")
        clients = await asyncio.gather(*(raw_request(port, "/api/stream") for _ in range(300)))
        try:
            statuses = [status.split(b" ")[1] if b" " in status else status
                        for status, _, _ in clients]
            limit = gw.http.config.max_streams
            assert statuses.count(b"200") == limit == 32  # the default
            assert all(s in (b"503", b"reset", b"") for s in statuses if s != b"200")
            assert gw.http.app[SLOTS].open == limit
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/healthz") as r:
                assert r.status == 200
            # refused streams do not linger as connections
            await wait_until(lambda: open_connections(gw) <= limit + 1, 10,
                             "refused connections closed")
        finally:
            for _, _, writer in clients:
                writer.close()


def open_connections(gw) -> int | None:
    """The API's open connections; None until its server is loaded (at the first
    connection, in a thread: gateway.operations.http_on_demand)."""
    site = gw.http.site
    return None if site is None else site.open_connections


async def test_connections_beyond_the_cap_are_closed_at_once(tmp_path, free_port) -> None:
    port = free_port()
    raw = site(tmp_path, f"127.0.0.1:{port}", max_connections=8, idle_timeout=600)
    async with running_gateway(write_site(tmp_path, raw)) as gw:
        await wait_until(lambda: gw.http.listening, 5, "API up")
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(8)]
        await wait_until(lambda: open_connections(gw) == 8, 5, "8 open")
        status, reader, writer = await raw_request(port, "/healthz")
        assert status.split(b" ")[1:2] == [b"503"] or status in (b"reset", b"")
        writer.close()
        assert gw.http.site.refused >= 1
        for _, w in idle:
            w.close()
        await wait_until(lambda: open_connections(gw) == 0, 5, "all closed")
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/healthz") as r:
            assert r.status == 200


async def test_idle_connections_time_out(tmp_path, free_port) -> None:
    port = free_port()
    raw = site(tmp_path, f"127.0.0.1:{port}", idle_timeout=0.5)
    async with running_gateway(write_site(tmp_path, raw)) as gw:
        await wait_until(lambda: gw.http.listening, 5, "API up")
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)  # says nothing
        status, after_one, kept = await raw_request(port, "/healthz")  # one request, then idle
        assert status.split(b" ")[1:2] == [b"200"]
        async with asyncio.timeout(10):
            assert await silent_reader.read() == b""  # closed by the server
            await after_one.read()  # the rest of the answer, then the close
        silent.close()
        kept.close()


async def test_the_api_and_the_console_share_one_stream_loop_and_one_cap(tmp_path, free_port) -> None:
    port = free_port()
    raw = site(tmp_path, f"127.0.0.1:{port}", console=True, max_streams=2)
    async with running_gateway(write_site(tmp_path, raw)) as gw, \
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        await wait_until(lambda: gw.http.listening, 5, "API up")
        base = f"http://127.0.0.1:{port}"
        async with s.post(f"{base}/console/api/login",
                          json={"user": OPERATOR[0], "password": OPERATOR[1]}) as r:
            assert r.status == 200
        first = await s.get(f"{base}/api/stream")
        second = await s.get(f"{base}/console/events")
        assert first.status == second.status == 200
        async with s.get(f"{base}/console/events") as third:
            assert third.status == 503 and third.headers["Retry-After"]
        async with s.get(f"{base}/api/stream") as third:
            assert third.status == 503
        first.close()
        await wait_until(lambda: gw.http.app[SLOTS].open == 1, 5, "a slot given back")
        async with s.get(f"{base}/console/events") as again:
            assert again.status == 200
        second.close()


# -- file handles ---------------------------------------------------------------------------


def test_connection_cap_stays_under_half_the_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(200, hard), hard))
    try:
        assert effective_limit(256) == min(200, hard) // 2
        assert effective_limit(20) == 20
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_too_many_open_files_is_logged_once_a_minute(caplog) -> None:
    clock = FakeClock()
    log = logging.getLogger("asyncio")
    out_of_files = OutOfFilesLogFilter(clock=clock.monotonic)
    log.addFilter(out_of_files)
    try:
        error = OSError(errno.EMFILE, "Too many open files")
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            for _ in range(120):  # asyncio retries accept() every second
                log.error("socket.accept() out of system resource", exc_info=(OSError, error, None))
                clock.advance(1)
            log.error("something else")
    finally:
        log.removeFilter(out_of_files)
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("something else") == 1
    accept = [line for line in lines if line.startswith("socket.accept()")]
    assert len(accept) == 2 and "59 more like it" in accept[1]
