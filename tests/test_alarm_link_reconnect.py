"""The alarm link after a broker outage: it retries at most every 2 s (jittered), and an alarm
raised while the broker was away is the first thing published when it is back, before the
status and the subscriptions.

The order is read from the broker's own debug log ("Received PUBLISH from <client> ...", one
line per packet in the order Mosquitto took them), after the line the test fixture writes
when it starts the broker again.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator

import pytest

from gateway.alarms.manager import AlarmManager
from gateway.backoff import Backoff
from gateway.clock import FakeClock
from gateway.config.models import MqttConfig
from gateway.runtime.mqtt_link import RECONNECT_CAP, MqttLink
from harness import wait_until
from servers import Mosquitto, ServerBinaryMissing


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    """Mosquitto that logs every packet it receives."""
    try:
        server = Mosquitto(extra_config=["log_type debug"])
    except ServerBinaryMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.close()


def test_the_link_retries_at_most_every_two_seconds_with_jitter() -> None:
    link = MqttLink(config=MqttConfig(host="127.0.0.1", port=1), site_id="s",
                    alarms=AlarmManager(clock=FakeClock()))
    assert RECONNECT_CAP == 2.0 and link.backoff.cap == RECONNECT_CAP
    delays = [link.backoff.next_delay() for _ in range(50)]
    assert max(delays) <= 2.0 and len(set(delays)) > 40  # full jitter: spread, not in step
    injected = Backoff(initial=0.01, cap=0.05)
    assert MqttLink(config=MqttConfig(host="127.0.0.1", port=1), site_id="s",
                    alarms=AlarmManager(clock=FakeClock()), backoff=injected).backoff is injected


def published_since_restart(broker: Mosquitto, client: str) -> list[str]:
    """Topics ``client`` published since the broker last started, in the order it took them."""
    log = broker.log().rsplit("starting: ", 1)[-1]
    pattern = re.compile(rf"Received PUBLISH from {re.escape(client)} \(.*?, '([^']*)'")
    return pattern.findall(log)


async def test_an_alarm_raised_while_the_broker_was_away_goes_out_first(broker,
                                                                         unique_id) -> None:
    base = f"community/{unique_id}"
    clock = FakeClock()
    alarms = AlarmManager(clock=clock)
    link = MqttLink(config=MqttConfig(host="127.0.0.1", port=broker.port), site_id=unique_id,
                    alarms=alarms)
    delays: list[float] = []
    next_delay = link.backoff.next_delay

    def recorded() -> float:
        delays.append(next_delay())
        return delays[-1]

    link.backoff.next_delay = recorded  # type: ignore[method-assign]
    task = asyncio.create_task(link.run(), name="test-mqtt-link")
    try:
        await wait_until(lambda: f"{base}/status" in published_since_restart(broker, link.client_id),
                         5, "online")
        broker.stop()
        await wait_until(lambda: not link.connected, 5, "the link to notice")
        alarm = alarms.activate(rule="smoke", severity=1, device="cabinet-3", kind="smoke",
                                channel=None, location={"building": "3"}, message="smoke",
                                value=1.0, ts=clock.time())
        assert link.pending == 2  # its retained state and its `raised` event wait
        # Down long enough for the backoff to reach its cap.
        await wait_until(lambda: link.backoff.attempt >= 6, 20, "several failed reconnects")
        broker.start()
        await wait_until(lambda: f"{base}/status" in published_since_restart(broker, link.client_id),
                         10, "reconnected and online")
        assert link.pending == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    topics = published_since_restart(broker, link.client_id)
    assert topics[:3] == [f"{base}/alarms/{alarm.id}", f"{base}/alarm_events", f"{base}/status"], \
        topics
    assert len(delays) >= 6 and max(delays) <= RECONNECT_CAP


async def test_a_stop_lost_in_a_publish_still_stops_the_link(mosquitto, unique_id) -> None:
    """Python 3.11's asyncio.wait_for (under aiomqtt's publish) can return normally when a
    cancellation races with the PUBACK, leaving the task marked as cancelling. The fault is
    injected: a publish that swallows the cancellation that way."""
    clock = FakeClock()
    alarms = AlarmManager(clock=clock)
    link = MqttLink(config=MqttConfig(host="127.0.0.1", port=mosquitto.port), site_id=unique_id,
                    alarms=alarms)
    in_publish = asyncio.Event()
    real_client = link._client

    def client_with_a_lossy_publish():
        client = real_client()
        publish = client.publish

        async def lossy_publish(topic, payload=None, *args, **kwargs):
            if "/alarms/" not in topic:
                return await publish(topic, payload, *args, **kwargs)
            in_publish.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                return None  # as wait_for does when the PUBACK wins the race

        client.publish = lossy_publish  # type: ignore[method-assign]
        return client

    link._client = client_with_a_lossy_publish  # type: ignore[method-assign]
    task = asyncio.create_task(link.run(), name="test-mqtt-link")
    try:
        await wait_until(lambda: link.connected, 5, "connected")
        alarms.activate(rule="smoke", severity=1, device="cabinet-3", kind="smoke", channel=None,
                        location={}, message="smoke", value=1.0, ts=clock.time())
        async with asyncio.timeout(5):
            await in_publish.wait()
    finally:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10)
    assert done, "the link did not stop"
    assert task.cancelled()


async def test_a_stop_that_comes_with_the_connack_stops_the_link(mosquitto, unique_id) -> None:
    """The same race at the connect, not injected but timed: the stop is sent from the read
    that brings the CONNACK (paho's on_connect), the moment aiomqtt's stock wait_for would
    return the connection and drop the stop (gateway.mqtt_client)."""
    link = MqttLink(config=MqttConfig(host="127.0.0.1", port=mosquitto.port), site_id=unique_id,
                    alarms=AlarmManager(clock=FakeClock()))
    real_client = link._client
    task: asyncio.Task | None = None

    def client_stopped_at_the_connack():
        client = real_client()
        paho = client._client
        on_connect = paho.on_connect

        def connected_then_stopped(*args):
            on_connect(*args)
            assert task is not None
            task.cancel()

        paho.on_connect = connected_then_stopped
        return client

    link._client = client_stopped_at_the_connack  # type: ignore[method-assign]
    task = asyncio.create_task(link.run(), name="test-mqtt-link")
    done, _ = await asyncio.wait({task}, timeout=10)
    if not done:
        task.cancel()  # once more: this time it is heard
        await asyncio.wait({task}, timeout=10)
    assert done, "the link went on although stopped as the CONNACK came"
    assert task.cancelled()
