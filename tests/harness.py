"""Helpers for end-to-end tests: a gateway running in the test's loop, an MQTT listener."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import yaml

from gateway.runtime.app import Gateway
from gateway.runtime.site import load_site


def cabinet_site(site_id: str, *, bus: dict, mqtt_port: int | None = None,
                 influx_url: str | None = None, poll_interval: float = 0.2,
                 rules: list[dict] | None = None) -> dict:
    """A site with one 4-port charging cabinet and the over-power rule."""
    raw: dict[str, Any] = {
        "site": {"id": site_id},
        "buses": [{"id": "line", **bus}],
        "devices": [{"id": "charger-1", "type": "modbus", "bus": "line", "profile": "ev-cabinet",
                     "channels": 4, "poll_interval": poll_interval, "offline_after": 2,
                     "location": {"building": "3", "unit": "2", "floor": "B1"}}],
        "rules": rules if rules is not None else [
            {"id": "over-power", "type": "threshold", "select": {"kinds": ["ev_charging"]},
             "field": "power", "above": 1000, "hysteresis": 100, "severity": 2,
             "actions": [{"write": "relay", "value": 0}]},
        ],
    }
    if mqtt_port is not None:
        raw["mqtt"] = {"host": "127.0.0.1", "port": mqtt_port}
    if influx_url is not None:
        raw["influxdb"] = {"url": influx_url, "org": "o", "bucket": "b", "token": {"env": "TEST_INFLUX_TOKEN"},
                           "flush_interval": 0.2}
    return raw


def write_site(tmp_path: Path, raw: dict) -> Path:
    """Write a site file; its state (alarms, outbox) goes under ``tmp_path/state`` unless set."""
    raw.setdefault("state_dir", str(tmp_path / "state"))
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@contextlib.asynccontextmanager
async def running_gateway(path: Path, *, clock=None) -> AsyncIterator[Gateway]:
    """Run a gateway from a config file as a task; stop it (cancel) on exit."""
    gateway = Gateway(load_site(path), clock=clock)
    task = asyncio.create_task(gateway.run(), name="test-gateway")
    try:
        yield gateway
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class SteppedClock:
    """Wall time that a test can step forward (scenario time passing without a sleep);
    monotonic time, which paces polls and timeouts, runs as usual."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic()

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class MqttRecorder:
    """Subscribes to a topic filter and records (arrival time, topic, payload)."""

    def __init__(self, port: int, topic: str):
        self.port = port
        self.topic = topic
        self.messages: list[tuple[float, str, bytes]] = []
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> "MqttRecorder":
        self._task = asyncio.create_task(self._run(), name="test-mqtt-recorder")
        async with asyncio.timeout(5):
            await self._ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port) as client:
            await client.subscribe(self.topic, qos=1)
            self._ready.set()
            async for m in client.messages:
                self.messages.append((time.monotonic(), str(m.topic), bytes(m.payload)))

    def json_on(self, suffix: str) -> list[tuple[float, dict]]:
        """Decoded non-empty payloads whose topic ends with ``suffix``."""
        return [(t, json.loads(p)) for t, topic, p in self.messages if topic.endswith(suffix) and p]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        return await wait_until(predicate, timeout)


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    """Poll ``predicate`` every 20 ms until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(0.02)
