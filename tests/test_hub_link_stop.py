"""A hub stop that cannot hang, and a reconnect that cannot wait for ever, against a scripted
broker (tests/mqtt_stub.py) that answers late or never.

The hang once seen in tests/test_hub_e2e.py: the stop reached the hub's MQTT task in the
same loop iterations as the PUBACK of the sync marker (the test's poll and the broker's
answer woke the loop together). aiomqtt waits with ``asyncio.wait_for``, which on Python
3.11 returns the result and drops the cancellation when both arrive together; the link then
waited for the connection to drop, for ever. The stub writes the PUBACK and the echoed
marker in one write, so the hub reads both in one wakeup and the test's stop, woken by the
marker, always lands in that window.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import pytest
import yaml

from gateway.hub.config import HubBroker, load_hub_config
import gateway.hub.link as link_module
from gateway.hub.link import HubLink
from gateway.hub.mqtt_client import FastIngestClient
from gateway.hub.service import Hub
from mqtt_stub import CONNECT, PINGREQ, PUBLISH, SUBSCRIBE, StubBroker

# Far above the stop's own bound (the farewell's 1 s and the disconnect's) and below the
# 10 s aiomqtt waits for an answer: a stop that lasts this long waited for the broker.
STOP_DEADLINE = 8.0


def hub_file(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump({
        "hub": {"id": "room"}, "broker": {"host": "127.0.0.1", "port": port, "keepalive": 5},
        "scope": {"all": True}, "state_dir": str(tmp_path / "state"),
        "alarms": {"tick_interval": 0.1}}))
    return path


async def stopped_within(task: asyncio.Task, what: str) -> None:
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=STOP_DEADLINE)
    if not done:
        for other in asyncio.all_tasks():
            other.print_stack(limit=6)
        # End what is left, so that the failure is reported now and not at pytest's timeout.
        stuck = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for other in stuck:
            other.cancel()
        await asyncio.wait(stuck, timeout=STOP_DEADLINE)
        raise AssertionError(f"the hub did not stop within {STOP_DEADLINE} s ({what})")
    assert task.cancelled()


async def test_a_stop_that_comes_with_the_sync_markers_puback_stops_the_hub(tmp_path) -> None:
    async with StubBroker() as broker:
        hub = Hub(load_hub_config(hub_file(tmp_path, broker.port)))
        task = asyncio.create_task(hub.run(), name="test-hub")
        async with asyncio.timeout(10):
            await hub.link.synced.wait()  # woken by the marker, read with its PUBACK
        await stopped_within(task, "stopped as the sync marker's PUBACK came")


async def test_a_cancellation_that_comes_with_the_puback_is_not_lost(unique_id) -> None:
    # The same race one level down, on every aiomqtt wait the hub makes (publish here): the
    # publish is cancelled from the read that brings its PUBACK (the echo comes right after).
    topic = f"{unique_id}/echo"
    publishing: asyncio.Task | None = None

    def cancel_the_publish(topic: str, payload: bytes) -> None:
        assert publishing is not None
        publishing.cancel()

    async with StubBroker() as broker:
        async with FastIngestClient("127.0.0.1", broker.port,
                                    on_message=cancel_the_publish) as client:
            await client.subscribe(topic, qos=1)
            publishing = asyncio.create_task(client.publish(topic, b"x", qos=1))
            with contextlib.suppress(asyncio.CancelledError):
                await publishing
            assert publishing.cancelled(), "the publish returned: its cancellation was lost"


@pytest.mark.parametrize("silent", [CONNECT, SUBSCRIBE, PUBLISH],
                         ids=["no CONNACK", "no SUBACK", "no PUBACK"])
async def test_a_hub_stops_while_the_broker_does_not_answer(tmp_path, silent) -> None:
    async with StubBroker(silent=frozenset({silent})) as broker:
        hub = Hub(load_hub_config(hub_file(tmp_path, broker.port)))
        task = asyncio.create_task(hub.run(), name="test-hub")
        async with asyncio.timeout(10):
            await broker.wait_for(silent)  # the hub now waits for the answer
        await stopped_within(task, f"waiting for the answer to packet type {silent}")


@pytest.mark.parametrize("silent", [CONNECT, SUBSCRIBE, PUBLISH],
                         ids=["no CONNACK", "no SUBACK", "no PUBACK"])
async def test_the_link_gives_up_on_a_broker_that_does_not_answer_and_reconnects(
        unique_id, silent, monkeypatch) -> None:
    # Only the first connection is answered never; the link must not wait on it for ever.
    monkeypatch.setattr(link_module, "ANSWER_TIMEOUT", 1.0)  # 10 s in service
    async with StubBroker(silent=frozenset({silent})) as broker:
        link = HubLink(config=HubBroker(host="127.0.0.1", port=broker.port, prefix=unique_id),
                       client_id=f"hub-{unique_id}", password=None, on_message=lambda t, p: None,
                       begin_sync=lambda: None, end_sync=lambda: 0)
        task = asyncio.create_task(link.run())
        try:
            async with asyncio.timeout(10):
                await broker.wait_for(silent)
            broker.silent = frozenset()  # from now on it answers: the next connection syncs
            async with asyncio.timeout(30):
                await link.synced.wait()
            assert len(broker.received) >= 2  # a new connection, the silent one given up
        finally:
            await stopped_within(task, "the link")


async def test_the_link_reconnects_when_the_broker_stops_answering_pings(unique_id) -> None:
    async with StubBroker() as broker:
        link = HubLink(config=HubBroker(host="127.0.0.1", port=broker.port, prefix=unique_id,
                                        keepalive=5),
                       client_id=f"hub-{unique_id}", password=None, on_message=lambda t, p: None,
                       begin_sync=lambda: None, end_sync=lambda: 0)
        task = asyncio.create_task(link.run())
        try:
            async with asyncio.timeout(10):
                await link.synced.wait()
            broker.silent = frozenset({PINGREQ})  # frozen: the link's keepalive must notice
            async with asyncio.timeout(30):
                await broker.wait_for(CONNECT, connection=2)
        finally:
            await stopped_within(task, "the link")


async def test_a_hub_stops_while_its_broker_is_frozen(tmp_path, mosquitto) -> None:
    # A real Mosquitto, paused (SIGSTOP): the farewell gets no PUBACK, the stop goes on.
    hub = Hub(load_hub_config(hub_file(tmp_path, mosquitto.port)))
    task = asyncio.create_task(hub.run(), name="test-hub")
    try:
        async with asyncio.timeout(10):
            await hub.link.synced.wait()
        os.kill(mosquitto.pid, signal.SIGSTOP)
        await stopped_within(task, "with the broker frozen")
    finally:
        os.kill(mosquitto.pid, signal.SIGCONT)
