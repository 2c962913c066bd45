"""The HTTP server against hostile clients (issue 16.4: the server is microdot under our
own connection loop, gateway.operations.connection_limit): each gets a clear status or
a close, never a crash, a stuck connection or a stuck stream slot; the server goes on
answering everyone else."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import aiohttp
import pytest

from console_support import OPERATOR, write_users
from gateway.config.models import HttpConfig
from gateway.operations.live_events import SLOTS
from gateway.runtime.app import Gateway
from gateway.runtime.site import load_site
from harness import wait_until, write_site
from http_support import AppServer

TOKEN = "hostile-api-token-5d2e"
AUTH = f"Authorization: Bearer {TOKEN}\r\n"


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    monkeypatch.setenv("HOSTILE_API_TOKEN", TOKEN)
    write_users(tmp_path / "users.yaml")
    raw = {"site": {"id": "hostile"}, "state_dir": str(tmp_path / "state"),
           "http": {"listen": "127.0.0.1:8080", "token": {"env": "HOSTILE_API_TOKEN"}},
           "console": {"users_file": "users.yaml"},
           "devices": [{"id": "meter", "type": "synthetic", "kind": "meter", "fields": ["power"],
                        "poll_interval": 60}]}
    return Gateway(load_site(write_site(tmp_path, raw)))


async def serve(gateway: Gateway, **limits) -> AppServer:
    server = AppServer(gateway.http.app, HttpConfig(idle_timeout=limits.pop("idle_timeout", 30)),
                       **limits)
    await server.start()
    return server


async def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` and read until the server closes (b"" if it reset the connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        try:
            writer.write(data)
            await writer.drain()
        except ConnectionError:
            pass
        async with asyncio.timeout(10):
            try:
                return await reader.read()
            except ConnectionError:
                return b""
    finally:
        writer.close()


def status_of(answer: bytes) -> int | None:
    line = answer.split(b"\r\n", 1)[0].split(b" ")
    return int(line[1]) if len(line) > 1 and line[0].startswith(b"HTTP/") else None


async def still_healthy(server: AppServer) -> None:
    async with aiohttp.ClientSession() as s, s.get(server.make_url("/api/devices")) as r:
        assert r.status == 200
    await wait_until(lambda: server.site.open_connections == 0, 10, "every connection closed")


async def test_a_slowloris_head_is_cut_off_at_the_deadline(gateway: Gateway) -> None:
    server = await serve(gateway, idle_timeout=0.5)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /api/devices HTTP/1.1\r\nHost: 127.0.0.1\r\n")

        async def trickle() -> None:  # a header byte now and then: it must not extend the deadline
            while True:
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.1)

        dripping = asyncio.create_task(trickle())
        started = time.monotonic()
        try:
            async with asyncio.timeout(10):
                assert await reader.read() == b""  # closed, without an answer
        finally:
            dripping.cancel()
            await asyncio.gather(dripping, return_exceptions=True)
            writer.close()
        assert time.monotonic() - started < 10
        await still_healthy(server)
    finally:
        await server.close()


async def test_a_megabyte_header_line_is_refused(gateway: Gateway) -> None:
    server = await serve(gateway)
    try:
        big = b"GET /api/devices HTTP/1.1\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n"
        answer = await exchange(server.port, big)
        assert status_of(answer) in (400, None)  # 400, or reset while it was still sending
        # 80 KB of head in lines under the line cap: over the head's cap
        many = b"GET /api/devices HTTP/1.1\r\n" + b"".join(
            b"X-H%d: %s\r\n" % (i, b"c" * 4000) for i in range(20)) + b"\r\n"
        answer = await exchange(server.port, many)
        assert status_of(answer) in (400, None)
        await still_healthy(server)
    finally:
        await server.close()


@pytest.mark.parametrize("path", ["/api/alarms/x/ack", "/console/api/login"])
async def test_a_huge_content_length_is_413_before_any_body_is_read(gateway, path) -> None:
    server = await serve(gateway)
    try:
        answer = await exchange(server.port, (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{AUTH}Content-Type: application/json\r\n"
            f"Content-Length: {10 ** 12}\r\n\r\n{{}}").encode())
        assert status_of(answer) == 413
        assert "too large" in json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
        for length in ("-5", "lots", "1, 2"):
            answer = await exchange(server.port, (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{AUTH}"
                f"Content-Length: {length}\r\n\r\n{{}}").encode())
            assert status_of(answer) == 400, length
        answer = await exchange(server.port, (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{AUTH}Transfer-Encoding: chunked\r\n\r\n"
            "2\r\n{}\r\n0\r\n\r\n").encode())
        assert status_of(answer) == 411
        await still_healthy(server)
    finally:
        await server.close()


async def test_bad_json_and_garbage_heads_are_answered_400(gateway: Gateway) -> None:
    server = await serve(gateway)
    try:
        async with aiohttp.ClientSession() as s:
            for path in ("/api/bypass", "/api/out_of_service", "/api/arming/fence"):
                async with s.post(server.make_url(path), data=b"{not json",
                                  headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                    assert r.status == 400 and "not JSON" in (await r.json())["error"], path
            async with s.post(server.make_url("/api/alarms/x/ack"), data=b"\xff\xfe{",
                              headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status in (400, 404) and "error" in await r.json()
            async with s.post(server.make_url("/console/api/login"), data=b"[1, 2",
                              headers={"Content-Type": "application/json"}) as r:
                assert r.status == 400 and (await r.json())["error"] == "body is not valid JSON"
        for head in (b"NONSENSE\r\n\r\n", b"GET /healthz\r\n\r\n", b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
                     b"GET /healthz HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n", b"\r\n"):
            answer = await exchange(server.port, head)
            assert status_of(answer) in (400, None), head  # 400, or closed for an empty line
        await still_healthy(server)
    finally:
        await server.close()


async def test_static_files_are_only_the_consoles_own(gateway: Gateway) -> None:
    server = await serve(gateway)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(server.make_url("/console/static/app.js")) as r:
                assert r.status == 200 and r.content_type == "application/javascript"
                assert len(await r.read()) > 100
            for path in ("/console/static/../state.py", "/console/static/%2e%2e/state.py",
                         "/console/static/..%2fstate.py", "/console/static/%2e%2e%2f%2e%2e%2fcli.py",
                         "/console/static/app.js/x", "/console/static/", "/console/static/.",
                         "/console/static/%00app.js"):
                async with s.get(server.make_url(path)) as r:
                    assert r.status == 404, path
        # and as sent raw, not normalised by a client
        for path in (b"/console/static/../state.py", b"/console/static/../../routes.py",
                     b"/console/static//etc/passwd"):
            answer = await exchange(server.port, b"GET " + path + b" HTTP/1.1\r\n\r\n")
            assert status_of(answer) == 404, path
        await still_healthy(server)
    finally:
        await server.close()


async def test_a_stream_client_that_never_reads_is_cut_off_and_its_slot_given_back(
        gateway: Gateway) -> None:
    server = await serve(gateway, write_timeout=0.5)
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        await asyncio.get_running_loop().sock_sendall(
            sock, b"GET /api/stream?readings=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        slots = gateway.http.app[SLOTS]
        try:
            await wait_until(lambda: slots.open == 1, 5, "the stream open")
            # 16 MB of alarm transitions, far more than the socket buffers hold
            for i in range(400):
                gateway.alarms.activate(rule=f"flood-{i}", severity=3, device="meter", kind="meter",
                                        channel=None, location={}, message="x" * 40_000,
                                        value=1.0, ts=time.time())
                if i % 50 == 0:
                    await asyncio.sleep(0)  # let the stream take them as a real loop would
            await wait_until(lambda: slots.open == 0, 15, "the slot given back")
            await wait_until(lambda: server.site.open_connections == 0, 5, "the connection closed")
        finally:
            sock.close()
        # a new stream gets the slot
        async with aiohttp.ClientSession() as s, s.get(server.make_url("/api/stream")) as r:
            assert r.status == 200
        await wait_until(lambda: slots.open == 0, 5, "that one given back too")
    finally:
        await server.close()


async def test_a_stream_whose_client_goes_gives_its_slot_back_at_once(gateway: Gateway) -> None:
    # Nothing is sent on this stream (no readings, no alarms, keepalive 15 s away): the
    # server learns the client went from the closed socket, not from a failed write.
    server = await serve(gateway)
    try:
        slots = gateway.http.app[SLOTS]
        async with aiohttp.ClientSession() as s:
            r = await s.get(server.make_url("/api/stream?readings=0&alarms=0"))
            assert r.status == 200
            await wait_until(lambda: slots.open == 1, 5, "the stream open")
            r.close()
            await wait_until(lambda: slots.open == 0, 5, "the slot given back")
        await still_healthy(server)
    finally:
        await server.close()


async def test_a_login_with_the_operator_still_works_after_all_that(gateway: Gateway) -> None:
    server = await serve(gateway)
    try:
        await exchange(server.port, b"POST /console/api/login HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            async with s.post(server.make_url("/console/api/login"),
                              json={"user": OPERATOR[0], "password": OPERATOR[1]}) as r:
                assert r.status == 200
            async with s.get(server.make_url("/console/api/me")) as r:
                assert r.status == 200
    finally:
        await server.close()


async def test_a_broken_event_source_ends_its_stream_logged_and_its_slot_given_back(
        gateway: Gateway, caplog) -> None:
    from gateway.operations.http_app import get
    from gateway.operations.live_events import live_parts, serve_events

    class Broken:
        async def opening(self):
            return []

        def alarm(self, item):
            return None

        async def lagged(self):
            return [], True

        def tick(self):
            raise RuntimeError("a bug in an event source")

        async def still_allowed(self):
            return None

    app = gateway.http.app

    async def broken(request):
        fanout, slots = live_parts(app, gateway.views)
        return await serve_events(request, Broken(), fanout=fanout, slots=slots)

    app.add_routes([get("/broken", broken)])
    server = await serve(gateway)
    try:
        async with aiohttp.ClientSession() as s, s.get(server.make_url("/broken")) as r:
            assert r.status == 200
            async with asyncio.timeout(10):
                assert (await r.read()).startswith(b"retry:")  # then the end
        await wait_until(lambda: app[SLOTS].open == 0, 5, "the slot given back")
        assert any("a bug in an event source" in str(rec.exc_info[1]) for rec in caplog.records
                   if rec.exc_info), [r.getMessage() for r in caplog.records]
        await still_healthy(server)
    finally:
        await server.close()
