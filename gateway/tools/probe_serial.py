"""``probe serial``: watch a serial line, print its bytes and the frames a codec finds.

For checking a radar on site: is anything arriving at this baud rate, does it
parse as the chosen protocol, what does each frame mean, and how many bytes are
garbage or fail their checksum. Uses the gateway's own frame codecs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time

import serial_asyncio_fast

from drivers.serial_frames import CODECS

EXIT_PORT = 1
EXIT_USAGE = 2
READ_SIZE = 4096
# A radar writes a frame in one go: this long without bytes ends an unfinished one.
QUIET_GAP = 0.05


def add_parser(kinds: argparse._SubParsersAction) -> None:
    """Register ``probe serial``."""
    p = kinds.add_parser(
        "serial", help="hex dump a serial line and decode its frames with a radar codec",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Open a serial port, print every chunk of bytes in hex as it arrives, and "
                    "the frames the chosen codec finds in them, decoded (values and events). "
                    "Ends after --seconds (or Ctrl-C) with the codec's counters: frames, "
                    "garbage bytes, bad checksums, truncated frames.",
        epilog="example:\n"
               "  community-gateway probe serial --port /dev/ttyUSB0 --baudrate 115200 "
               "--codec mr60fda1 --seconds 10\n"
               "nothing at all: wrong port or baud rate, or TX/RX swapped; only garbage: wrong "
               "baud rate or wrong --codec.")
    p.add_argument("--port", required=True, help="serial device (e.g. /dev/ttyUSB0, "
                                                 "/dev/serial/by-id/...)")
    p.add_argument("--baudrate", type=int, default=115200, help="default 115200")
    p.add_argument("--codec", required=True, choices=sorted(CODECS),
                   help="frame protocol: mr60fda1, or ld6002c / mr60fda2 (TinyFrame)")
    p.add_argument("--seconds", type=float, default=10.0, help="how long to listen (default 10)")
    p.add_argument("--send", metavar="HEX", action="append", default=[],
                   help="bytes to write first, in hex (e.g. a query frame); repeatable")
    p.add_argument("--no-hex", action="store_true", help="print frames only, not the raw bytes")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``probe serial``."""
    try:
        sends = [bytes.fromhex(h) for h in args.send]
    except ValueError:
        print("probe serial: --send wants hex bytes, e.g. '53 59 80 81 00 01 0f ...'",
              file=sys.stderr)
        return EXIT_USAGE
    if args.seconds <= 0:
        print("probe serial: --seconds must be positive", file=sys.stderr)
        return EXIT_USAGE
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(probe(args, sends))
    return 0


async def probe(args: argparse.Namespace, sends: list[bytes]) -> int:
    """Listen for ``args.seconds``; print bytes, frames and the counters."""
    try:
        reader, writer = await serial_asyncio_fast.open_serial_connection(
            url=args.port, baudrate=args.baudrate)
    except (OSError, ValueError) as exc:
        print(f"error: cannot open {args.port}: {exc}", file=sys.stderr)
        return EXIT_PORT
    codec = CODECS[args.codec]()
    print(f"listening on {args.port} at {args.baudrate} baud for {args.seconds:g}s, "
          f"codec {args.codec}", flush=True)
    start = time.monotonic()
    total = 0
    try:
        for data in sends:
            writer.write(data)
            print(f"sent   {data.hex(' ')}", flush=True)
        await writer.drain()
        deadline = asyncio.get_running_loop().time() + args.seconds
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                async with asyncio.timeout(min(left, QUIET_GAP) if codec.buffered else left):
                    data = await reader.read(READ_SIZE)
            except TimeoutError:
                _print_frames(codec, codec.flush())
                continue
            if not data:
                print("error: the port closed", file=sys.stderr)
                return EXIT_PORT
            total += len(data)
            if not args.no_hex:
                print(f"+{time.monotonic() - start:7.3f}s {len(data):4} bytes  {data.hex(' ')}",
                      flush=True)
            _print_frames(codec, codec.feed(data))
        _print_frames(codec, codec.flush())
    except OSError as exc:
        print(f"error: {args.port}: {exc}", file=sys.stderr)
        return EXIT_PORT
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()
    counts = ", ".join(f"{k} {v}" for k, v in codec.counters().items())
    print(f"{total} bytes; {counts}")
    if not total:
        print("nothing arrived: check the port, the baud rate and the TX/RX wiring")
    return 0


def _print_frames(codec, frames: list) -> None:
    for frame in frames:
        decoded = codec.decode(frame)
        meaning = []
        if decoded.values:
            meaning.append(" ".join(f"{k}={v:g}" for k, v in decoded.values.items()))
        meaning.extend(f"event {e.name}{' ' + str(e.attrs) if e.attrs else ''}"
                       for e in decoded.events)
        print(f"  frame {frame.to_bytes().hex(' ')}  ->  {'; '.join(meaning) or '(not decoded)'}",
              flush=True)
