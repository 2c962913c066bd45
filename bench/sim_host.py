"""Device simulators in their own process, so they do not share the gateway's core.

    python -m bench.sim_host --tcp 8 --ports 4          # 8 cabinets, one TCP server each
    python -m bench.sim_host --rtu --baudrate 9600      # 1 cabinet on a pty pair (RTU)
    python -m bench.sim_host --radar mr60fda1           # radar frames flat out on a pty
    python -m bench.sim_host --mqtt-port 1883 --terminals 4   # access terminals, flat out

Prints one JSON line once everything listens: ``{"tcp": [port, ...]}``,
``{"rtu": "/dev/pts/N"}`` or ``{"radar": "/dev/pts/N"}`` (the side the gateway
opens), ``{"mqtt": true}``; then serves until its stdin closes (the benchmark ends
it that way, or with SIGTERM). The radar and MQTT modes print a last JSON line of
what they sent (``{"frames": N}`` / ``{"published": N}``) when they stop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import tty


async def serve(args: argparse.Namespace) -> None:
    """Start the simulators, say where they are, serve until stdin closes."""
    if args.radar:
        await radar(args.radar)
        return
    if args.mqtt_port:
        await terminals(args.mqtt_port, args.terminals)
        return
    # imported here: the radar and MQTT modes do without pymodbus
    from simulators.charging_cabinet import CabinetModel
    from simulators.modbus_server import CabinetServer
    from simulators.ptypair import PtyPair

    async with contextlib.AsyncExitStack() as stack:
        if args.rtu:
            pair = await stack.enter_async_context(PtyPair())
            model = CabinetModel(args.ports, seed=1)
            await stack.enter_async_context(
                CabinetServer(model, serial=pair.b, baudrate=args.baudrate))
            where: dict[str, object] = {"rtu": pair.a}
        else:
            ports = []
            for i in range(args.tcp):
                server = CabinetServer(CabinetModel(args.ports, seed=i), tcp=("127.0.0.1", 0))
                await stack.enter_async_context(server)
                ports.append(server.port)
            where = {"tcp": ports}
        print(json.dumps(where), flush=True)
        await _stdin_closed()


async def _stdin_closed() -> None:
    """Return once stdin closes (the parent ended): the signal to stop."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()


def radar_frames(codec: str) -> list[bytes]:
    """A radar's everyday reports, one of each: what its UART carries between falls."""
    if codec == "mr60fda1":
        from drivers.serial_frames.mr60fda1 import encode_frame

        return [encode_frame(0x80, 0x01, b"\x01"),  # presence
                encode_frame(0x80, 0x02, b"\x02"),  # motion: active
                encode_frame(0x80, 0x03, b"\x25"),  # body movement 37
                encode_frame(0x83, 0x01, b"\x00"),  # no fall
                encode_frame(0x01, 0x01, b"\x0f")]  # heartbeat
    import struct

    from drivers.serial_frames.tinyframe import FALL, PRESENCE, TARGET_HEIGHT, encode_frame

    return [encode_frame(0, PRESENCE, b"\x01"),
            encode_frame(0, TARGET_HEIGHT, struct.pack("<f", 1.62)),
            encode_frame(0, FALL, b"\x00")]


async def radar(codec: str) -> None:
    """Write radar frames into a raw pty as fast as its reader takes them.

    A plain pty (no relay) keeps flow control: writes stop when the reader's
    buffer is full, so no byte is lost and every frame arrives whole.
    """
    loop = asyncio.get_running_loop()
    master, slave = os.openpty()
    tty.setraw(slave)  # binary frames, no echo, no line discipline
    os.set_blocking(master, False)
    chunk = b"".join(radar_frames(codec) * 200)
    per_chunk = len(radar_frames(codec)) * 200
    state = {"sent": 0, "pos": 0}

    def pump() -> None:
        try:
            while True:
                view = memoryview(chunk)[state["pos"]:]
                n = os.write(master, view)
                state["sent"] += n
                state["pos"] = (state["pos"] + n) % len(chunk)
        except BlockingIOError:
            return

    print(json.dumps({"radar": os.ttyname(slave)}), flush=True)
    loop.add_writer(master, pump)
    try:
        await _stdin_closed()
    finally:
        loop.remove_writer(master)
        os.close(master)
        os.close(slave)
        print(json.dumps({"frames": state["sent"] * per_chunk // len(chunk)}), flush=True)


def terminal_messages(terminal: str) -> list[dict]:
    """What an access terminal publishes: granted / door opened / closed, now and then a heartbeat."""
    base = {"terminal": terminal, "door": 1}
    return [
        {**base, "code": 1, "card_no": "12345678", "person_id": "P0042", "verify": "card"},
        {**base, "code": 23},
        {**base, "code": 24},
        {"terminal": terminal, "type": "heartbeat", "uptime": 86400},
    ]


async def terminals(port: int, count: int) -> None:
    """Publish access-terminal JSON (QoS 1) from ``count`` terminals as fast as the broker acks."""
    import aiomqtt

    sent = 0

    async def publish(client, terminal: str) -> None:
        nonlocal sent
        topic = f"access/{terminal}/events"
        messages = terminal_messages(terminal)
        i = 0
        while True:
            message = messages[i % len(messages)]
            message["time"] = time.time()  # epoch seconds: the profile's timestamp path
            await client.publish(topic, json.dumps(message).encode(), qos=1)
            i += 1
            sent += 1

    async with aiomqtt.Client("127.0.0.1", port, identifier=f"bench-terminals-{os.getpid()}",
                              max_inflight_messages=200) as client:
        print(json.dumps({"mqtt": True}), flush=True)
        try:
            async with asyncio.TaskGroup() as tg:
                # several publishers in flight at once, like several terminals
                for k in range(count):
                    for _ in range(8):
                        tg.create_task(publish(client, f"term-{k}"))
                tg.create_task(_stop_on_stdin_close())
        except* _Stop:
            pass
    print(json.dumps({"published": sent}), flush=True)


class _Stop(Exception):
    pass


async def _stop_on_stdin_close() -> None:
    await _stdin_closed()
    raise _Stop


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tcp", type=int, default=0, metavar="N", help="N cabinets on TCP")
    ap.add_argument("--rtu", action="store_true", help="one cabinet on RTU over a pty pair")
    ap.add_argument("--baudrate", type=int, default=9600)
    ap.add_argument("--ports", type=int, default=4)
    ap.add_argument("--radar", choices=("mr60fda1", "ld6002c"), help="radar frames on a pty")
    ap.add_argument("--mqtt-port", type=int, help="publish access-terminal events to this broker")
    ap.add_argument("--terminals", type=int, default=4)
    args = ap.parse_args(argv)
    if not (args.rtu or args.radar or args.mqtt_port) and args.tcp < 1:
        ap.error("give --tcp N, --rtu, --radar CODEC or --mqtt-port PORT")
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
