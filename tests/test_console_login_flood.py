"""Console logins under attack: parallel guesses, floods, forged X-Forwarded-For.

scrypt is held at a gate in these tests (the one fault injected: a check that
takes as long as an attacker likes, as on a busy Raspberry Pi), so what the
server lets through while checks are under way is counted, not timed.
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
from pathlib import Path

import aiohttp
import pytest
from http_support import AppClient

import gateway.console.passwords as passwords
from console_support import OPERATOR, write_users
from gateway.runtime.site import load_site
from gateway.console import add_console_routes
from gateway.console.state import CONSOLE
from gateway.console.throttle import ACCOUNT_FREE, ADDRESS_FREE
from gateway.operations.http_app import App
from gateway.runtime.app import Gateway
from harness import wait_until, write_site


class GatedScrypt:
    """scrypt that waits for ``open()``; counts the calls that reached it and their threads."""

    def __init__(self, real):
        self.real = real
        self.gate = threading.Event()
        self.entered = 0
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, *args):
        with self._lock:
            self.entered += 1
            self.threads.add(threading.current_thread().name)
        if not self.gate.wait(30):
            raise RuntimeError("the test never opened the gate")
        return self.real(*args)

    def open(self) -> None:
        self.gate.set()


def console_site(tmp_path: Path, *, trusted_proxies: list[str] | None = None) -> Gateway:
    write_users(tmp_path / "users.yaml")
    raw = {"site": {"id": "s1"}, "state_dir": str(tmp_path / "state"),
           "http": {"listen": "127.0.0.1:8080"},
           "console": {"users_file": "users.yaml", "audit_file": "audit.jsonl"}}
    if trusted_proxies is not None:
        raw["http"]["trusted_proxies"] = trusted_proxies
    return Gateway(load_site(write_site(tmp_path, raw)))


async def console_client(gateway: Gateway) -> AppClient:
    app = App()
    add_console_routes(app, gateway.views)
    # no client-side cap on connections: every request reaches the server at once
    client = AppClient(app, connector=aiohttp.TCPConnector(limit=0))
    await client.start_server()
    return client


@pytest.fixture
def gated(monkeypatch):
    gate = GatedScrypt(passwords._scrypt)
    yield gate
    gate.open()  # never leave a thread waiting


def login(client: AppClient, user: str, password: str, **headers: str):
    async def go() -> int:
        async with client.post("/console/api/login", json={"user": user, "password": password},
                               headers=headers) as r:
            await r.read()
            return r.status
    return asyncio.create_task(go())


async def test_parallel_guesses_are_counted_before_any_password_is_checked(
        tmp_path, gated, monkeypatch) -> None:
    client = await console_client(console_site(tmp_path))
    monkeypatch.setattr(passwords, "_scrypt", gated)
    try:
        wrong = [login(client, OPERATOR[0], f"guess-{i}-guess") for i in range(299)]
        # Every guess beyond the first few is refused while those few are still being checked.
        await wait_until(lambda: sum(t.done() for t in wrong) == 299 - ACCOUNT_FREE, 20,
                         "all but the first guesses refused before any check ends")
        right = await login(client, OPERATOR[0], OPERATOR[1])
        assert right == 429  # the right password, after 299 wrong ones: throttled
        assert gated.entered <= ACCOUNT_FREE
        gated.open()
        statuses = collections.Counter(await asyncio.gather(*wrong))
        assert statuses == {401: ACCOUNT_FREE, 429: 299 - ACCOUNT_FREE}
        assert gated.entered == ACCOUNT_FREE
        assert (await client.get("/console/api/me")).status == 401  # no session was made
    finally:
        await client.close()


async def test_a_login_flood_is_bounded_and_leaves_the_shared_thread_pool_free(
        tmp_path, gated, monkeypatch) -> None:
    # Through a trusted proxy, each guess from its own address and for its own name:
    # neither throttle applies, so only the bound on checks under way protects the gateway.
    gateway = console_site(tmp_path, trusted_proxies=["127.0.0.1"])
    client = await console_client(gateway)
    console = client.server.app[CONSOLE]
    monkeypatch.setattr(passwords, "_scrypt", gated)
    flood = 300
    bound = passwords.MAX_PENDING_CHECKS
    try:
        tasks = [login(client, f"guess-{i}", "guess-password",
                       **{"X-Forwarded-For": f"203.0.113.9, 10.9.{i // 250}.{i % 250}"})
                 for i in range(flood)]
        await wait_until(lambda: sum(t.done() for t in tasks) == flood - bound, 20,
                         "every login beyond the bound answered at once")
        assert console.checker.pending == bound and gated.entered <= passwords.CHECK_THREADS
        # The pool that SQLite and the upstream sinks use is not waiting behind scrypt.
        async with asyncio.timeout(10):
            assert await asyncio.to_thread(lambda: "free") == "free"
        assert gated.threads <= {f"password-check_{n}" for n in range(passwords.CHECK_THREADS)}
        gated.open()
        statuses = collections.Counter(await asyncio.gather(*tasks))
        assert statuses == {401: bound, 503: flood - bound}
        assert console.checker.peak == bound and console.checker.pending == 0
    finally:
        await client.close()


async def test_x_forwarded_for_counts_only_from_a_trusted_proxy(tmp_path) -> None:
    # Not trusted: a client that names a new address in each guess is still one address.
    client = await console_client(console_site(tmp_path / "direct"))
    try:
        for i in range(ADDRESS_FREE):
            assert await login(client, f"name-{i}", "guess-guess",
                               **{"X-Forwarded-For": f"198.51.100.{i}"}) == 401
        assert await login(client, "name-x", "guess-guess",
                           **{"X-Forwarded-For": "198.51.100.250"}) == 429
        audit = (tmp_path / "direct" / "audit.jsonl").read_text().splitlines()
        assert {json.loads(line)["remote"] for line in audit} == {"127.0.0.1"}
    finally:
        await client.close()
    # Trusted: each guard behind the proxy is throttled on their own address.
    client = await console_client(console_site(tmp_path / "proxied", trusted_proxies=["127.0.0.0/8"]))
    try:
        for i in range(ADDRESS_FREE + 5):
            assert await login(client, f"name-{i}", "guess-guess",
                               **{"X-Forwarded-For": f"198.51.100.{i}"}) == 401
        assert await login(client, *OPERATOR, **{"X-Forwarded-For": "198.51.100.1"}) == 200
        audit = [json.loads(line) for line in
                 (tmp_path / "proxied" / "audit.jsonl").read_text().splitlines()]
        assert audit[0]["remote"] == "198.51.100.0" and audit[-1]["remote"] == "198.51.100.1"
        # A garbled header from the proxy falls back to the proxy's own address.
        assert await login(client, "name-y", "guess-guess", **{"X-Forwarded-For": "not an ip"}) == 401
        last = json.loads((tmp_path / "proxied" / "audit.jsonl").read_text().splitlines()[-1])
        assert last["remote"] == "127.0.0.1"
    finally:
        await client.close()
