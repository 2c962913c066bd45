"""``alarms list`` and ``alarms ack``: the open alarms of a running gateway, from the terminal.

Through the gateway's HTTP API: listing is open, acknowledging needs the API
token (the config's ``http.token``), passed by environment variable or file so
it does not show in the shell history or the process list.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import aiohttp

from gateway.tools.api_client import add_api_arguments, api_token, base_url, read_headers

EXIT_FAILED = 1
TIMEOUT = aiohttp.ClientTimeout(total=10)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``alarms list`` and ``alarms ack``."""
    p = sub.add_parser("alarms", help="list or acknowledge the open alarms of a running gateway",
                       description="Read the open alarms, or acknowledge one, through the "
                                   "gateway's HTTP API (the config's http section).")
    actions = p.add_subparsers(dest="alarms_action", metavar="ACTION", required=True)
    ls = actions.add_parser("list", help="print the open alarms, most severe first",
                            description="Print the open alarms, most severe first.")
    add_api_arguments(ls)
    ls.add_argument("--json", action="store_true", help="print the API's JSON as it is")
    ls.set_defaults(handler=run_list)
    ack = actions.add_parser(
        "ack", help="acknowledge an alarm (needs the API token)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Acknowledge an open alarm by its id (from 'alarms list'). A cleared alarm "
                    "closes once acknowledged; an active one stays until its condition is gone.",
        epilog="example:\n"
               "  GATEWAY_API_TOKEN=... community-gateway alarms ack mwqx4hym-001 --by wang "
               "--note 'port checked, bike removed'")
    ack.add_argument("alarm_id", metavar="ID", help="the alarm's id")
    ack.add_argument("--by", required=True, help="who acknowledges (recorded with the alarm)")
    ack.add_argument("--note", help="what was done (recorded with the alarm)")
    add_api_arguments(ack)
    ack.set_defaults(handler=run_ack)


def run_list(args: argparse.Namespace) -> int:
    """Entry point of ``alarms list``."""
    return asyncio.run(_list(args))


def run_ack(args: argparse.Namespace) -> int:
    """Entry point of ``alarms ack``."""
    token = api_token(args)
    if token is None:
        return EXIT_FAILED
    return asyncio.run(_ack(args, token))


async def _list(args: argparse.Namespace) -> int:
    status, body = await _request("GET", f"{base_url(args)}/api/alarms", headers=read_headers(args))
    if status != 200:
        return _failed(args, status, body)
    if args.json:
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return 0
    alarms = body.get("alarms", [])
    if not alarms:
        print("no open alarms")
    for a in alarms:
        print(format_alarm(a))
    return 0


async def _ack(args: argparse.Namespace, token: str) -> int:
    payload: dict[str, Any] = {"by": args.by}
    if args.note:
        payload["note"] = args.note
    status, body = await _request("POST", f"{base_url(args)}/api/alarms/{args.alarm_id}/ack",
                                  json=payload, headers={"Authorization": f"Bearer {token}"})
    if status != 200:
        return _failed(args, status, body)
    print(f"acknowledged: {format_alarm(body)}")
    return 0


async def _request(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            async with session.request(method, url, **kwargs) as response:
                try:
                    body = await response.json(content_type=None)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    body = {"error": (await response.text())[:200]}
                return response.status, body
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return 0, {"error": f"cannot reach the gateway at {url}: {exc or type(exc).__name__}"}


def _failed(args: argparse.Namespace, status: int, body: Any) -> int:
    error = body.get("error") if isinstance(body, dict) else None
    if status == 401:
        error = f"the gateway refused the token ({error})"
    print(f"error: {error or f'HTTP {status}'}", file=sys.stderr)
    return EXIT_FAILED


def format_alarm(a: dict[str, Any]) -> str:
    """One line per alarm: id, level, state, where, what."""
    where = ", ".join(f"{k} {v}" for k, v in (a.get("location") or {}).items())
    state = a.get("state", "?") + (" acked" if a.get("acked") else "")
    count = f" x{a['count']}" if a.get("count", 1) > 1 else ""
    return (f"{a.get('id')}  L{a.get('severity')}  {state:<14} {a.get('device')}"
            f"{' (' + where + ')' if where else ''}  {a.get('message')}  since "
            f"{a.get('first_ts')}{count}")
