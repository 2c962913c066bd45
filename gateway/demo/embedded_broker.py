"""An MQTT broker inside the process (amqtt), for the demo when no broker is configured."""

from __future__ import annotations

import logging
import socket
from contextlib import asynccontextmanager
from collections.abc import AsyncIterator

from amqtt.broker import Broker

for _name in ("amqtt", "transitions"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@asynccontextmanager
async def embedded_broker(host: str = "127.0.0.1", port: int | None = None) -> AsyncIterator[tuple[str, int]]:
    """Run an anonymous broker on loopback; yields (host, port)."""
    port = port or free_port(host)
    broker = Broker({
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "sys_interval": 0,
        "auth": {"allow-anonymous": True},
        "topic-check": {"enabled": False},
    })
    await broker.start()
    try:
        yield host, port
    finally:
        await broker.shutdown()
