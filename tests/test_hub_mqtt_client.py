"""The hub's MQTT client (gateway.hub.mqtt_client.FastIngestClient) on a real Mosquitto:
bursts bigger than one socket read arrive whole and in order, QoS 1 messages are
acknowledged (else the broker stops after 20 in flight), other tasks run while a burst is
read, TLS works, and the hub's link survives a handler's bug."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiomqtt
import pytest

from gateway.hub.config import HubBroker
from gateway.hub.link import HubLink
from gateway.hub.mqtt_client import READ_SIZE, FastIngestClient
from harness import wait_until
from servers import Mosquitto, free_port
from test_mqtt_tls import make_pki, tls_broker

pytestmark = pytest.mark.integration


def payload(i: int) -> bytes:
    """Sizes from a few bytes to more than one socket read, so packets straddle reads."""
    size = 3 * READ_SIZE if i == 7 else (i * 37) % 5000 + 1
    return (f"{i}:".encode() + bytes(range(256)) * (size // 256 + 1))[:size]


class Taken:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def __call__(self, topic: str, body: bytes) -> None:
        self.messages.append((topic, body))


async def publish_all(port: int, topics: dict[str, bytes], *, qos: int, retain: bool,
                      tls: ssl.SSLContext | None = None) -> None:
    async with aiomqtt.Client("127.0.0.1", port, tls_context=tls) as pub:
        for topic, body in topics.items():
            await pub.publish(topic, body, qos=qos, retain=retain)


async def test_a_retained_burst_arrives_whole_while_other_tasks_run(mosquitto, unique_id) -> None:
    # ~1.5 MB of retained state, written by the broker at once on subscribe (a hub's rebuild)
    topics = {f"{unique_id}/state/{i}": payload(i) for i in range(600)}
    await publish_all(mosquitto.port, topics, qos=1, retain=True)
    taken = Taken()
    ticks: list[int] = []

    async def other_task() -> None:  # what must not wait for the whole burst
        while len(taken.messages) < len(topics):
            ticks.append(len(taken.messages))
            await asyncio.sleep(0)

    async with FastIngestClient("127.0.0.1", mosquitto.port, on_message=taken) as client:
        await client.subscribe(f"{unique_id}/state/+", qos=0)
        ticker = asyncio.create_task(other_task())
        await wait_until(lambda: len(taken.messages) >= len(topics), 20, "the burst")
        await ticker
        assert len(client.messages) == 0  # nothing goes through aiomqtt's queue
    assert dict(taken.messages) == topics
    assert len(taken.messages) == len(topics)  # each once
    # the loop ran between reads: one socket read per wakeup, not "until the socket is empty"
    assert any(0 < n < len(topics) for n in ticks)


async def test_qos1_messages_are_acknowledged_and_keep_their_order(mosquitto, unique_id) -> None:
    # Mosquitto sends 20 QoS 1 messages then waits for their PUBACKs: 500 arrive only if the
    # client answers each (after its on_message, so an event is acked once taken).
    topics = {f"{unique_id}/events/{i}": payload(i) for i in range(500)}
    taken = Taken()
    async with FastIngestClient("127.0.0.1", mosquitto.port, on_message=taken) as client:
        await client.subscribe(f"{unique_id}/events/+", qos=1)
        await publish_all(mosquitto.port, topics, qos=1, retain=False)
        await wait_until(lambda: len(taken.messages) >= len(topics), 20, "500 QoS 1 messages")
    assert taken.messages == list(topics.items())  # one publisher: its order


async def test_a_burst_over_tls(tmp_path: Path, unique_id) -> None:
    pki = make_pki(tmp_path / "pki")
    tls_port = free_port()
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    topics = {f"{unique_id}/tls/{i}": payload(i) for i in range(300)}
    with tls_broker(pki, tls_port) as broker:
        await publish_all(broker.port, topics, qos=1, retain=True)
        taken = Taken()
        async with FastIngestClient("127.0.0.1", tls_port, tls_context=context,
                                    on_message=taken) as client:
            await client.subscribe(f"{unique_id}/tls/+", qos=1)
            await wait_until(lambda: len(taken.messages) >= len(topics), 20, "the TLS burst")
    assert dict(taken.messages) == topics and len(taken.messages) == len(topics)


async def test_the_hub_link_survives_a_handler_bug_and_notices_a_broker_restart(
        mosquitto: Mosquitto, unique_id) -> None:
    taken: list[str] = []

    def handle(topic: str, body: bytes) -> None:
        if body == b"boom":
            raise RuntimeError("a bug in the hub")
        taken.append(topic)

    synced: list[int] = []
    link = HubLink(config=HubBroker(host="127.0.0.1", port=mosquitto.port, prefix=unique_id),
                   client_id=f"hub-{unique_id}", password=None, on_message=handle,
                   begin_sync=lambda: None, end_sync=lambda: synced.append(1) or 0)
    task = asyncio.create_task(link.run())
    try:
        await wait_until(link.synced.is_set, 10, "the first sync")
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as pub:
            await pub.publish(f"{unique_id}/gw-1/health", b"boom", qos=1)
            await pub.publish(f"{unique_id}/gw-1/info", b"{}", qos=1)
        await wait_until(lambda: taken, 10, "the message after the bad one")
        assert link.handler_errors == 1 and link.connects == 1
        assert taken == [f"{unique_id}/gw-1/info"] and synced == [1]

        mosquitto.restart()  # the link sees the drop (aiomqtt's iterator raises) and reconnects
        await wait_until(lambda: link.connects == 2 and link.synced.is_set(), 20,
                         "reconnected and synced again")
        assert synced == [1, 1]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
