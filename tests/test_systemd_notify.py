"""systemd's notify protocol over a real AF_UNIX datagram socket the test creates."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import uuid
from types import SimpleNamespace

import pytest
import yaml

from gateway.operations.liveness import PipelineWatch
from gateway.readings import Reading
from gateway.operations.systemd import SystemdNotifier, keep_alive
from harness import wait_until


@pytest.fixture
def notify_socket(tmp_path):
    """A bound datagram socket, as systemd would hold it: ``(path, socket)``."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    try:
        yield path, sock
    finally:
        sock.close()


def received(sock: socket.socket) -> list[str]:
    """Every datagram waiting on the socket."""
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_notify_reaches_a_path_socket(notify_socket) -> None:
    path, sock = notify_socket
    notifier = SystemdNotifier(address=path)
    assert notifier.ready("2 devices") and notifier.reloading() and notifier.stopping()
    ready, reloading, stopping = received(sock)
    assert ready == "READY=1\nSTATUS=2 devices"
    assert reloading.startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert int(reloading.split("=")[-1]) > 0
    assert stopping == "STOPPING=1"
    notifier.close()


def test_notify_reaches_an_abstract_socket() -> None:
    name = f"gateway-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        notifier = SystemdNotifier(address="@" + name)
        assert notifier.ready()
        assert sock.recv(100) == b"READY=1"
        notifier.close()


def test_without_systemd_nothing_is_sent(tmp_path, caplog) -> None:
    assert not SystemdNotifier(address=None).ready()
    gone = SystemdNotifier(address=str(tmp_path / "nobody-listens"))
    with caplog.at_level(logging.WARNING):
        assert not gone.ready() and not gone.ready()
    assert len(caplog.records) == 1  # logged once, not per message


def test_from_environment_reads_and_unsets() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = SystemdNotifier.from_environment(env)
    assert notifier.enabled and notifier.watchdog_interval == 15.0
    assert env == {}  # children do not inherit it
    other = SystemdNotifier.from_environment(
        {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None  # the watchdog is for another process
    assert not SystemdNotifier.from_environment({}).enabled


async def test_watchdog_is_withheld_while_something_is_stuck(notify_socket, caplog) -> None:
    path, sock = notify_socket
    notifier = SystemdNotifier(address=path, watchdog_usec=20_000)  # a ping every 10 ms
    state = {"problem": None, "asked": 0}

    def problem() -> str | None:
        state["asked"] += 1
        return state["problem"]

    task = asyncio.create_task(keep_alive(notifier, problem=problem, status=lambda: "fine"))
    try:
        pings: list[str] = []
        await wait_until(lambda: pings.extend(received(sock)) or len(pings) >= 3, 5, "pings")
        assert all(p == "WATCHDOG=1\nSTATUS=fine" for p in pings)
        with caplog.at_level(logging.ERROR, logger="gateway.operations.systemd"):
            state["problem"] = "pipeline stalled"
            received(sock)
            asked = state["asked"] + 1  # the check under way may still ping once
            await wait_until(lambda: state["asked"] >= asked + 5, 5, "five checks while stuck")
            received_while_stuck = received(sock)
            assert len(received_while_stuck) <= 1
        assert [r.getMessage() for r in caplog.records].count(
            "watchdog: pipeline stalled; no longer telling systemd that the gateway is alive") == 1
        state["problem"] = None
        await wait_until(lambda: any("WATCHDOG=1" in m for m in received(sock)), 5, "pings again")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_pipeline_watch_tells_stalled_from_idle() -> None:
    now = [0.0]
    # What the watch reads of a pipeline: its ingest queue and its counters.
    pipeline = SimpleNamespace(queue=asyncio.Queue(10), readings=0, events=0, failed=0)
    watch = PipelineWatch(pipeline, stall_after=10, monotonic=lambda: now[0])  # type: ignore[arg-type]
    assert watch.problem() is None
    now[0] = 100.0
    assert watch.problem() is None  # idle for long is fine
    pipeline.queue.put_nowait([Reading("d", None, {"v": 1.0}, 0.0)])
    assert watch.problem() is None  # work arrived: start watching
    now[0] = 105.0
    assert watch.problem() is None
    now[0] = 111.0
    assert "pipeline stalled: 1 batches queued" in watch.problem()
    pipeline.queue.get_nowait()  # processed (here by hand)
    pipeline.readings += 1
    assert watch.problem() is None


def site(site_id: str, devices: list[dict]) -> dict:
    return {"site": {"id": site_id}, "devices": devices}


def meter(device_id: str) -> dict:
    return {"id": device_id, "type": "synthetic", "kind": "meter", "fields": ["power"],
            "poll_interval": 0.05}


async def test_daemon_talks_to_systemd(tmp_path, notify_socket, unique_id) -> None:
    """``run`` under Type=notify: READY, watchdog pings, RELOADING/READY on SIGHUP (good
    and bad files), STOPPING on SIGTERM."""
    path, sock = notify_socket
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump(site(unique_id, [meter("m1")])))
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="200000")  # a ping every 0.1 s
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", "run", str(config),
                                                env=env, stderr=asyncio.subprocess.PIPE)
    log = bytearray()

    async def read_log() -> None:
        while line := await proc.stderr.readline():
            log.extend(line)

    reader = asyncio.create_task(read_log())
    messages: list[str] = []

    def got(predicate) -> bool:
        messages.extend(received(sock))
        return any(predicate(m) for m in messages)

    def pings() -> int:
        messages.extend(received(sock))
        return sum(m.startswith("WATCHDOG=1") for m in messages)

    try:
        await wait_until(lambda: got(lambda m: m.startswith("READY=1")), 10, "READY=1")
        assert messages[0].startswith("READY=1\nSTATUS=1 devices (0 offline)")
        await wait_until(lambda: pings() >= 3, 5, "three pings")

        messages.clear()
        config.write_text(yaml.safe_dump(site(unique_id, [meter("m1"), meter("m2")])))
        proc.send_signal(signal.SIGHUP)
        await wait_until(lambda: got(lambda m: m.startswith("READY=1")), 10, "reloaded")
        kinds = [m.split("\n")[0] for m in messages if not m.startswith("WATCHDOG")]
        assert kinds[:2] == ["RELOADING=1", "READY=1"]
        assert "STATUS=2 devices" in next(m for m in messages if m.startswith("READY=1"))
        await wait_until(lambda: b"reload of" in log and b"applied: added m2" in log, 5, "log")

        messages.clear()
        config.write_text("site: {id: x}\ndevices: [{id: m1, type: synthetic}]\n")
        proc.send_signal(signal.SIGHUP)
        await wait_until(lambda: got(lambda m: m.startswith("READY=1")), 10, "bad reload done")
        await wait_until(lambda: b"refused, still running the previous config" in log, 5, "log")
        assert proc.returncode is None
        messages.clear()
        await wait_until(lambda: pings() >= 2, 5, "still alive after a bad reload")

        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
        assert got(lambda m: m == "STOPPING=1")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await reader
    refused = [line for line in bytes(log).decode().splitlines() if "refused" in line]
    assert len(refused) == 1 and "ERROR" in refused[0] and "devices[0].kind" in refused[0]
