"""Alarm link after a broker outage: how long an alarm raised meanwhile waits once it is back.

Set-up: the gateway's MQTT link (``MqttLink``, defaults as shipped) to a real Mosquitto.
Each round: the broker stops; an alarm is raised; the broker stays down until the link's
reconnect backoff has reached its cap (8 failed tries); then it starts again. Measured:
from the broker answering again (its port accepts connections) to the link having
published the alarm's retained state and event (PUBACKs received). The promise is
"alarms within a second"; the link's reconnect cap (2 s, jittered) bounds the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from bench.common import Figure, on_server_cpus, percentile, wait_until
from gateway.alarms.manager import AlarmManager
from gateway.clock import FakeClock
from gateway.config.models import MqttConfig
from gateway.runtime.mqtt_link import RECONNECT_CAP, MqttLink
from servers import Mosquitto

NAME = "reconnect"


async def _round(broker: Mosquitto, n: int) -> float:
    clock = FakeClock()
    alarms = AlarmManager(clock=clock)
    link = MqttLink(config=MqttConfig(host="127.0.0.1", port=broker.port),
                    site_id=f"bench-reconnect-{n}", alarms=alarms)
    task = asyncio.create_task(link.run(), name="bench-mqtt-link")
    try:
        await wait_until(lambda: link.connected and link.pending == 0, 10, "connected")
        await asyncio.to_thread(broker.stop)
        await wait_until(lambda: not link.connected, 10, "the link to notice")
        alarms.activate(rule="smoke", severity=1, device="cabinet", kind="smoke", channel=None,
                        location={}, message="smoke", value=1.0, ts=clock.time())
        await wait_until(lambda: link.backoff.attempt >= 8, 60, "the backoff at its cap")
        with on_server_cpus():
            await asyncio.to_thread(broker.start)
        back = time.monotonic()
        await wait_until(lambda: link.pending == 0, 30, "the alarm published")
        return time.monotonic() - back
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run(opts) -> list[Figure]:
    """Rounds of outage and return; the wait of the alarm raised in each."""
    rounds = 3 if opts.quick else 20
    with on_server_cpus():
        broker = Mosquitto()
        broker.start()
    try:
        waits = [await _round(broker, n) for n in range(rounds)]
    finally:
        broker.close()
    note = f"{rounds} rounds; reconnect cap {RECONNECT_CAP:.0f} s with full jitter"
    p50, worst = percentile(waits, 50), max(waits)
    return [
        Figure(NAME, "alarm raised while the broker was away, from its return, p50", p50, "s",
               note=note),
        Figure(NAME, "alarm raised while the broker was away, from its return, max", worst, "s",
               target=f"<= {RECONNECT_CAP:.0f} s + a publish", ok=worst <= RECONNECT_CAP + 0.5,
               note=note),
    ]
