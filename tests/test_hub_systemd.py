"""The hub under its unit's Type=notify (deploy/community-gateway-hub.service): READY once
its state is open, watchdog pings while it runs (a broker that is away does not stop
them), STOPPING at SIGTERM; over a real AF_UNIX datagram socket."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

import yaml

from harness import wait_until


def received(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


async def test_the_hub_talks_to_systemd(tmp_path, free_port) -> None:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    hub_file = tmp_path / "hub.yaml"
    hub_file.write_text(yaml.safe_dump({
        "hub": {"id": "north-room"}, "scope": {"all": True}, "state_dir": str(tmp_path / "state"),
        "broker": {"host": "127.0.0.1", "port": free_port()}}))  # no broker there
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="200000")  # a ping every 0.1 s
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", "hub",
                                                str(hub_file), env=env,
                                                stderr=asyncio.subprocess.DEVNULL)
    messages: list[str] = []

    def got(prefix: str) -> int:
        messages.extend(received(sock))
        return sum(m.startswith(prefix) for m in messages)

    try:
        await wait_until(lambda: got("READY=1"), 20, "READY=1")
        ready = next(m for m in messages if m.startswith("READY=1"))
        assert "STATUS=0 sites, mqtt not connected, 0 hub alarms open" in ready
        await wait_until(lambda: got("WATCHDOG=1") >= 3, 10, "three pings without a broker")
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
        assert got("STOPPING=1") == 1
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        sock.close()
