"""``probe modbus``: read registers of one device and print them raw and decoded.

For finding the right register map on site: read a block, see each register in
hex, unsigned and signed, and the values decoded the way a profile field would
(``--type``, ``--word-order``, ``--scale``). Uses the gateway's own Modbus bus
and decoder, so what it shows is what the gateway will read.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from drivers.modbus.bus import ModbusBus
from drivers.modbus.register_map import BIT_TABLES, MAX_BITS, MAX_REGISTERS, REGISTER_COUNT, Point, decode
from gateway.errors import DeviceException, DriverConnectError, DriverError, DriverTimeout

EXIT_DEVICE = 1
EXIT_USAGE = 2
DEVICE = "probe"

# What a Modbus exception code usually means when an installer sees it.
EXCEPTION_HINTS = {
    1: "illegal function: the device has no such table; try another --table",
    2: "illegal data address: nothing at that address/count; check --address (register "
       "numbers like 30001/40001 are 1-based: 30001 is --table input --address 0)",
    3: "illegal data value: the device refuses that count; read fewer registers",
    4: "device failure: the device could not answer (internal error)",
    6: "device busy: try again",
    11: "gateway target did not respond: the TCP-to-RS-485 gateway got no answer from that slave",
}


def add_parser(kinds: argparse._SubParsersAction) -> None:
    """Register ``probe modbus``."""
    p = kinds.add_parser(
        "modbus", help="read Modbus registers over TCP or a serial port and decode them",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read COUNT registers (or bits) from ADDRESS on one slave and print each "
                    "raw (hex, unsigned, signed) and decoded as --type.",
        epilog="examples:\n"
               "  community-gateway probe modbus --tcp 192.168.1.50:502 --slave 1 "
               "--table input --address 0 --count 10\n"
               "  community-gateway probe modbus --serial /dev/ttyUSB0 --baudrate 9600 --slave 3 "
               "--table input --address 3 --count 2 --type u32 --word-order little --scale 0.1\n"
               "addresses are 0-based protocol addresses (input register 30001 is address 0).")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST:PORT", help="Modbus TCP device or TCP-to-RS-485 gateway")
    where.add_argument("--serial", metavar="DEVICE", help="serial port with the RS-485 line "
                                                          "(e.g. /dev/ttyUSB0)")
    p.add_argument("--baudrate", type=int, default=9600, help="serial only (default 9600)")
    p.add_argument("--parity", choices=["N", "E", "O"], default="N", help="serial only (default N)")
    p.add_argument("--stopbits", type=int, choices=[1, 2], default=1, help="serial only (default 1)")
    p.add_argument("--bytesize", type=int, choices=[7, 8], default=8, help="serial only (default 8)")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for an answer")
    p.add_argument("--slave", type=int, default=1, help="slave (unit) id, 1..247 (default 1)")
    p.add_argument("--table", choices=["input", "holding", "coil", "discrete"], default="holding",
                   help="register table (default holding)")
    p.add_argument("--address", type=int, default=0, help="first address, 0-based (default 0)")
    p.add_argument("--count", type=int, default=1, help="registers or bits to read (default 1)")
    p.add_argument("--type", choices=["u16", "i16", "u32", "i32", "f32"], default="u16",
                   help="decode the registers as this type (default u16)")
    p.add_argument("--word-order", choices=["big", "little"], default="big",
                   help="32-bit types: which register holds the high word (little: the second)")
    p.add_argument("--byte-order", choices=["big", "little"], default="big",
                   help="bytes within each register (default big, the Modbus norm)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply decoded values (e.g. 0.1)")
    p.add_argument("--offset", type=float, default=0.0, help="add after scaling")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``probe modbus``."""
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # errors are explained below
    problem = _check_args(args)
    if problem:
        print(f"probe modbus: {problem}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(probe(args))


def _check_args(args: argparse.Namespace) -> str | None:
    if not 0 <= args.slave <= 247:
        return "--slave must be 0..247"
    if not 0 <= args.address <= 65535:
        return "--address must be 0..65535"
    limit = MAX_BITS if args.table in BIT_TABLES else MAX_REGISTERS
    if not 1 <= args.count <= limit:
        return f"--count must be 1..{limit} for {args.table}"
    if args.tcp:
        host, sep, port = args.tcp.rpartition(":")
        if not sep or not host or not port.isdigit():
            return "--tcp wants HOST:PORT"
    if args.table not in BIT_TABLES and args.count < REGISTER_COUNT[args.type]:
        return f"--type {args.type} needs --count {REGISTER_COUNT[args.type]} or more"
    return None


def _bus(args: argparse.Namespace) -> tuple[ModbusBus, str]:
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        bus = ModbusBus.tcp(name="probe", host=host.strip("[]"), port=int(port),
                            timeout=args.timeout, retries=0)
        return bus, f"Modbus TCP {args.tcp}"
    bus = ModbusBus.rtu(name="probe", port=args.serial, baudrate=args.baudrate, parity=args.parity,
                        stopbits=args.stopbits, bytesize=args.bytesize, timeout=args.timeout,
                        retries=0, frame_gap=0.0)
    return bus, f"Modbus RTU {args.serial} {args.baudrate} {args.bytesize}{args.parity}{args.stopbits}"


async def probe(args: argparse.Namespace) -> int:
    """Read once, print, close; the exit code says how it went."""
    bus, where = _bus(args)
    last = args.address + args.count - 1
    print(f"{where}, slave {args.slave}, {args.table} {args.address}..{last} ({args.count})")
    try:
        values = await bus.read(DEVICE, args.slave, args.table, args.address, args.count)
    except DriverError as exc:
        print(f"error: {_explain(exc, args)}", file=sys.stderr)
        return EXIT_DEVICE
    finally:
        await bus.close()
    for line in format_values(args, list(values)[:args.count]):  # bits come padded to bytes
        print(line)
    return 0


def _explain(exc: DriverError, args: argparse.Namespace) -> str:
    if isinstance(exc, DeviceException):
        hint = EXCEPTION_HINTS.get(exc.code or 0, "see the device's manual")
        return f"slave {args.slave} answered with exception {exc.code}: {hint}"
    if isinstance(exc, DriverTimeout):
        hint = ("check the slave id, the baud rate and parity, and the A/B wiring"
                if args.serial else "check the slave (unit) id; a TCP gateway may need it exact")
        return f"no answer from slave {args.slave} within {args.timeout}s: {hint}"
    if isinstance(exc, DriverConnectError):
        return f"cannot connect to {args.tcp or args.serial} ({exc.detail})"
    return str(exc)


def format_values(args: argparse.Namespace, values: list) -> list[str]:
    """The lines printed for a read: a raw table, then the decoded values."""
    if args.table in BIT_TABLES:
        return [f"{args.address + i:>7}  {int(bool(v))}" for i, v in enumerate(values)]
    lines = ["address     hex  unsigned  signed"]
    for i, word in enumerate(values):
        signed = word - 0x10000 if word & 0x8000 else word
        lines.append(f"{args.address + i:>7}  0x{word:04X}  {word:>8}  {signed:>6}")
    width = REGISTER_COUNT[args.type]
    how = f"{args.type}"
    if width == 2:
        how += f", word order {args.word_order}"
    if args.byte_order != "big":
        how += f", byte order {args.byte_order}"
    if args.scale != 1.0 or args.offset:
        how += f", x {args.scale:g}" + (f" + {args.offset:g}" if args.offset else "")
    lines.append(f"decoded as {how}:")
    for at in range(0, len(values) - width + 1, width):
        point = Point(name="value", channel=None, slave=args.slave, table=args.table,
                      address=args.address + at, type=args.type, bit=None,
                      word_order=args.word_order, byte_order=args.byte_order, scale=args.scale,
                      offset=args.offset, writable=False)
        value = decode(point, values, at)
        lines.append(f"{args.address + at:>7}  {value:g}")
    return lines
