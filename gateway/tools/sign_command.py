"""``sign-command``: an operator's command on an alarm, signed with a named key, from the terminal.

Prints the signed payload (for ``mosquitto_pub -s``), or with ``--publish`` sends it
and waits for the gateway's answer: the alarm's new retained state, or a refusal on
``.../{command}/error``. The key's secret comes from an environment variable or a
file, so it does not show in the shell history or the process list.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.alarms.commands import COMMANDS
from gateway.alarms.signing import KEY_NAME, sign

EXIT_FAILED = 1
ANSWER_TIMEOUT = 10.0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``sign-command``."""
    p = sub.add_parser(
        "sign-command", help="sign an operator's command on an alarm (MQTT), print or send it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Sign ack, reset, shelve or unshelve of an alarm with a command key named in "
                    "the site's mqtt.commands.keys (docs/alarms.md). Without --publish the "
                    "payload is printed; it is valid for 60 s.",
        epilog="examples:\n"
               "  export GATEWAY_COMMAND_KEY=...   # the secret of key hub-compound\n"
               "  community-gateway sign-command ack mwqx4hym-001 --site b3 --key hub-compound \\\n"
               "      --by wang --note 'on my way' --publish 127.0.0.1:1883 --username hub-compound\n"
               "  community-gateway sign-command ack mwqx4hym-001 --site b3 --key hub-compound \\\n"
               "      | mosquitto_pub -t community/b3/alarms/mwqx4hym-001/ack -q 1 -s")
    p.add_argument("action", choices=sorted(COMMANDS), help="the command")
    p.add_argument("alarm_id", metavar="ID", help="the alarm's id")
    p.add_argument("--site", required=True, help="the gateway's site id")
    p.add_argument("--prefix", default="community", help="the topic prefix (default community)")
    p.add_argument("--key", required=True, help="the command key's name (mqtt.commands.keys)")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--secret-env", metavar="VAR", default="GATEWAY_COMMAND_KEY",
                        help="environment variable holding the key's secret "
                             "(default GATEWAY_COMMAND_KEY)")
    secret.add_argument("--secret-file", metavar="FILE", type=Path,
                        help="file holding the key's secret instead")
    p.add_argument("--by", help="the operator's name (recorded as 'BY via KEY')")
    p.add_argument("--note", help="what was done, or why")
    p.add_argument("--minutes", type=float, help="shelve: for how long")
    p.add_argument("--publish", metavar="HOST:PORT",
                   help="send it to this broker and wait for the gateway's answer")
    p.add_argument("--username", help="broker user name (with --publish)")
    p.add_argument("--password-env", metavar="VAR", default="MQTT_PASSWORD",
                   help="environment variable holding the broker password (default MQTT_PASSWORD)")
    p.add_argument("--ca-file", type=Path, help="TLS: the CA that signed the broker's certificate")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``sign-command``."""
    secret = _secret(args)
    if secret is None:
        return EXIT_FAILED
    if not KEY_NAME.match(args.key):
        print(f"error: key name {args.key!r} is not a valid key name", file=sys.stderr)
        return EXIT_FAILED
    topic = f"{args.prefix}/{args.site}/alarms/{args.alarm_id}/{args.action}"
    body: dict[str, Any] = {k: v for k, v in (("by", args.by), ("note", args.note),
                                               ("minutes", args.minutes)) if v is not None}
    payload = sign(topic, body, key=args.key, secret=secret)
    if args.publish is None:
        sys.stdout.write(payload.decode() + "\n")
        return 0
    return asyncio.run(_publish(args, topic, payload))


async def _publish(args: argparse.Namespace, topic: str, payload: bytes) -> int:
    host, _, port = args.publish.rpartition(":")
    state_topic, error_topic = topic.rsplit("/", 1)[0], f"{topic}/error"
    tls = ssl.create_default_context(cafile=str(args.ca_file)) if args.ca_file else None
    password = os.environ.get(args.password_env) if args.username else None
    try:
        async with aiomqtt.Client(host.strip("[]") or "127.0.0.1", int(port or 1883),
                                  username=args.username, password=password,
                                  tls_context=tls, timeout=10) as client:
            await client.subscribe(error_topic, qos=1)
            await client.subscribe(state_topic, qos=1)
            await client.publish(topic, payload, qos=1)
            async with asyncio.timeout(ANSWER_TIMEOUT):
                async for message in client.messages:
                    if message.retain:
                        continue  # the state as it was before the command
                    body = bytes(message.payload or b"")
                    if str(message.topic) == error_topic:
                        print(f"refused: {_error_text(body)}", file=sys.stderr)
                        return EXIT_FAILED
                    print(f"done: {body.decode() or 'closed'}")
                    return 0
    except TimeoutError:
        print(f"error: no answer from the gateway within {ANSWER_TIMEOUT:.0f} s (is it "
              f"connected with mqtt.commands on, and may this user read {state_topic}?)",
              file=sys.stderr)
    except aiomqtt.MqttError as exc:
        print(f"error: broker {args.publish}: {exc}", file=sys.stderr)
    return EXIT_FAILED


def _error_text(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode(errors="replace")


def _secret(args: argparse.Namespace) -> str | None:
    if args.secret_file is not None:
        try:
            value = args.secret_file.read_text().strip()
        except OSError as exc:
            print(f"cannot read {args.secret_file}: {exc.strerror}", file=sys.stderr)
            return None
    else:
        value = os.environ.get(args.secret_env, "").strip()
    if not value:
        print(f"no secret: set {args.secret_env} (or use --secret-file)", file=sys.stderr)
        return None
    return value
