"""An MQTT subscriber in its own process that stamps each message's arrival.

Prints ``ready`` once subscribed, then one JSON line per message:
``[arrival time.monotonic(), topic, payload as text]``. CLOCK_MONOTONIC is
system-wide on Linux, so the benchmark compares these stamps with its own.

    python -m bench.mqtt_probe --port 1883 --topic 'community/bench/alarm_events'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiomqtt


async def probe(host: str, port: int, topic: str) -> None:
    """Subscribe and stamp messages until cancelled or the broker goes away."""
    write = sys.stdout.write
    flush = sys.stdout.flush
    async with aiomqtt.Client(host, port, identifier=f"bench-probe-{time.monotonic_ns()}") as client:
        await client.subscribe(topic, qos=1)
        write("ready\n")
        flush()
        async for message in client.messages:
            arrived = time.monotonic()
            payload = bytes(message.payload).decode("utf-8", "replace")
            write(json.dumps([arrived, str(message.topic), payload]) + "\n")
            flush()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--topic", required=True)
    args = ap.parse_args(argv)
    try:
        asyncio.run(probe(args.host, args.port, args.topic))
    except (KeyboardInterrupt, aiomqtt.MqttError):
        pass


if __name__ == "__main__":
    main()
