"""``tail``: live readings and alarms from a running gateway, in the terminal.

It reads the gateway's own HTTP API (``/api/stream``, server-sent events), not
the MQTT broker: on the Pi that needs no broker credentials, and it shows
readings whatever the upstream is (the broker only carries telemetry when the
MQTT upstream is on). Readings are each device's latest, looked at four times
a second; alarm transitions come one by one, none skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time

import aiohttp

from gateway.tools.api_client import add_api_arguments, base_url, read_headers

EXIT_UNREACHABLE = 1
RETRY_SECONDS = 2.0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``tail``."""
    p = sub.add_parser(
        "tail", help="watch live readings and alarms of a running gateway",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print readings and alarm transitions as they happen, from the gateway's "
                    "HTTP API (the config's http section must be on). Reconnects if the "
                    "gateway restarts; Ctrl-C ends.",
        epilog="examples:\n"
               "  community-gateway tail\n"
               "  community-gateway tail --device charger-b3 --alarms-only\n"
               "  community-gateway tail --kind ev_charging --url http://127.0.0.1:8080")
    add_api_arguments(p)
    p.add_argument("--device", action="append", default=[], metavar="ID",
                   help="only this device (repeatable)")
    p.add_argument("--kind", action="append", default=[], metavar="KIND",
                   help="only devices of this kind, e.g. ev_charging (repeatable)")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--alarms-only", action="store_true", help="alarm transitions only")
    only.add_argument("--readings-only", action="store_true", help="readings only")
    p.add_argument("--count", type=int, default=None, metavar="N",
                   help="stop after N lines (default: run until Ctrl-C)")
    p.add_argument("--json", action="store_true", help="print each event as one JSON line")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``tail``."""
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(tail(args))
    return 0


def stream_url(args: argparse.Namespace) -> str:
    """``/api/stream`` with the filters as query parameters."""
    params = [("device", d) for d in args.device] + [("kind", k) for k in args.kind]
    if args.alarms_only:
        params.append(("readings", "0"))
    if args.readings_only:
        params.append(("alarms", "0"))
    query = "&".join(f"{k}={aiohttp.helpers.quote(v, safe='')}" for k, v in params)
    return f"{base_url(args)}/api/stream" + (f"?{query}" if query else "")


async def tail(args: argparse.Namespace) -> int:
    """Follow the stream until Ctrl-C (or ``--count`` lines); reconnect when it drops."""
    url = stream_url(args)
    printed = 0
    connected_once = False
    down_reported = False
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            try:
                async with session.get(url, headers=read_headers(args)) as response:
                    if response.status != 200:
                        print(f"error: {url}: HTTP {response.status}", file=sys.stderr)
                        return EXIT_UNREACHABLE
                    if down_reported or not connected_once:
                        print(f"-- following {base_url(args)}", file=sys.stderr, flush=True)
                    connected_once, down_reported = True, False
                    async for event, data in _events(response):
                        line = data if args.json else format_event(event, json.loads(data))
                        if line is None:
                            continue
                        print(line, flush=True)
                        printed += 1
                        if args.count is not None and printed >= args.count:
                            return 0
            except (aiohttp.ClientError, OSError) as exc:
                if not connected_once:
                    print(f"error: cannot reach the gateway at {base_url(args)}: {exc}; is it "
                          "running with an 'http' section?", file=sys.stderr)
                    return EXIT_UNREACHABLE
                if not down_reported:
                    print(f"-- connection lost ({exc}); retrying", file=sys.stderr, flush=True)
                down_reported = True
            await asyncio.sleep(RETRY_SECONDS)


async def _events(response: aiohttp.ClientResponse):
    """(event, data) pairs of a server-sent event stream."""
    event, data = "message", []
    async for raw in response.content:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def format_event(event: str, body: dict) -> str | None:
    """One terminal line for a stream event; None for events not shown."""
    if event == "reading":
        where = body["device"] + (f" ch {body['channel']}" if body.get("channel") is not None else "")
        values = " ".join(f"{k}={v:.6g}" if isinstance(v, (int, float)) else f"{k}={v}"
                          for k, v in body["values"].items())
        return f"{_clock(body['ts'])}  reading  {where:<20} {values}"
    if event == "alarm":
        a = body["alarm"]
        by = f" by {body['by']}" if body.get("by") else ""
        stamp = a.get("last_ts", "")[11:23]
        return (f"{stamp}  ALARM    {body['event']}{by}: [L{a['severity']}] {a['message']} "
                f"(device {a['device']}, {a['state']}{', acked' if a['acked'] else ''}, id {a['id']})")
    if event == "overflow":
        return "-- too slow to keep up; some events were skipped"
    return None
