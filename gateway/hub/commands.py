"""Operators' commands from the hub to a gateway: signed MQTT, confirmed by retained state.

``MqttCommandSender.send`` signs the command with the hub's key (``commands`` in the
hub file; gateway.alarms.signing), publishes it on
``{prefix}/{site}/alarms/{id}/{command}`` and waits for the gateway to confirm it the
only way that counts: the alarm's retained state (``{prefix}/{site}/alarms/{id}``)
changing accordingly (acked, closed, shelved, unshelved). A refusal on
``.../{command}/error`` is reported with the gateway's reason. Anything else within
``confirm_timeout`` (5 s by default; the gateway offline, the broker away, commands not
enabled for this key) is "not delivered", never "done".

The hub's MQTT link hands every message here (``on_message``) after the live picture;
the link also publishes (``publish``). So there is one connection, one session and one
order of messages: the state that confirms a command is the state the console shows.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.alarms.commands import COMMANDS, parse_command
from gateway.alarms.signing import sign
from gateway.hub.view import CommandNotDelivered, CommandRefusedByGateway

log = logging.getLogger(__name__)

CONFIRMED, NOT_DELIVERED, REFUSED = "confirmed", "not_delivered", "refused"


def confirms(command: str, alarm: dict[str, Any] | None) -> bool:
    """Whether an alarm's new retained state (None: emptied, i.e. closed) shows the
    command done."""
    closed = alarm is None or alarm.get("state") == "closed"
    if command == "ack":
        return closed or bool(alarm.get("acked"))  # an ack closes an alarm whose cause is gone
    if command == "reset":
        return closed
    if command == "shelve":
        return not closed and alarm.get("state") == "shelved"
    if command == "unshelve":
        return closed or alarm.get("state") != "shelved"
    return False


@dataclass(slots=True)
class _Pending:
    site: str
    alarm_id: str
    command: str
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class MqttCommandSender:
    """The hub's ``CommandSender`` (gateway.hub.view) over the hub's own MQTT link."""

    def __init__(self, *, prefix: str, key_id: str, secret: str,
                 publish: Callable[[str, bytes], Awaitable[None]], confirm_timeout: float = 5.0,
                 clock=None):
        self.prefix = prefix.rstrip("/")
        self.key_id = key_id
        self._secret = secret
        self._publish = publish
        self.confirm_timeout = confirm_timeout
        self._clock = clock
        self._pending: list[_Pending] = []
        self.counts = {CONFIRMED: 0, NOT_DELIVERED: 0, REFUSED: 0}

    async def send(self, *, site: str, alarm_id: str, command: str, body: dict[str, Any],
                   by: str) -> dict[str, Any]:
        """Sign, publish and wait for the gateway's retained state.

        Returns ``{"status": "confirmed", "alarm": <the new state or None>}``; raises
        ``CommandRefusedByGateway`` (its reason) or ``CommandNotDelivered``.
        A body the gateway would refuse (400) is refused here, before anything is sent.
        """
        payload_body = {**{k: v for k, v in body.items() if k != "by"}, "by": by}
        parse_command(command, alarm_id, payload_body)  # CommandError (400/404) before sending
        if "/" in site or "/" in alarm_id or "+" in site + alarm_id or "#" in site + alarm_id:
            raise CommandNotDelivered(f"not a valid site or alarm id: {site!r} {alarm_id!r}")
        topic = f"{self.prefix}/{site}/alarms/{alarm_id}/{command}"
        payload = sign(topic, payload_body, key=self.key_id, secret=self._secret,
                       clock=self._clock)
        pending = _Pending(site, alarm_id, command)
        self._pending.append(pending)
        try:
            async with asyncio.timeout(self.confirm_timeout):
                try:
                    await self._publish(topic, payload)
                except (ConnectionError, OSError) as exc:
                    raise CommandNotDelivered(f"the hub is not connected to the broker: {exc}") \
                        from None
                result = await pending.done
        except TimeoutError:
            self.counts[NOT_DELIVERED] += 1
            log.warning("hub: %s of %s at %s not confirmed within %g s: not delivered",
                        command, alarm_id, site, self.confirm_timeout)
            raise CommandNotDelivered(
                f"not confirmed by gateway {site} within {self.confirm_timeout:g} s "
                f"(is it online, with commands enabled for key {self.key_id!r}?)") from None
        except CommandNotDelivered:
            self.counts[NOT_DELIVERED] += 1
            raise
        finally:
            if pending in self._pending:
                self._pending.remove(pending)
        if isinstance(result, CommandRefusedByGateway):
            self.counts[REFUSED] += 1
            raise result
        self.counts[CONFIRMED] += 1
        log.info("hub: %s of %s at %s by %s confirmed", command, alarm_id, site, by)
        return {"status": CONFIRMED, "site": site, "alarm_id": alarm_id, "command": command,
                "alarm": result}

    def on_message(self, topic: str, payload: bytes) -> None:
        """Every message the hub receives; only alarm states and command errors matter."""
        if not self._pending or not topic.startswith(self.prefix + "/"):
            return
        parts = topic[len(self.prefix) + 1:].split("/")
        if len(parts) == 3 and parts[1] == "alarms":
            self._state(parts[0], parts[2], payload)
        elif len(parts) == 5 and parts[1] == "alarms" and parts[4] == "error" \
                and parts[3] in COMMANDS:
            self._error(parts[0], parts[2], parts[3], payload)

    def _state(self, site: str, alarm_id: str, payload: bytes) -> None:
        alarm: dict[str, Any] | None = None
        if payload:
            try:
                alarm = json.loads(payload)
            except ValueError:
                return  # the live picture counts and logs it
            if not isinstance(alarm, dict):
                return
        for p in self._waiting(site, alarm_id):
            if confirms(p.command, alarm):
                p.done.set_result(alarm)

    def _error(self, site: str, alarm_id: str, command: str, payload: bytes) -> None:
        try:
            body = json.loads(payload)
            reason, status = str(body["error"]), int(body.get("status") or 400)
        except (ValueError, KeyError, TypeError):
            reason, status = payload[:200].decode("utf-8", "replace") or "refused", 400
        for p in self._waiting(site, alarm_id):
            if p.command == command:
                p.done.set_result(CommandRefusedByGateway(reason, status))

    def _waiting(self, site: str, alarm_id: str) -> list[_Pending]:
        return [p for p in self._pending
                if p.site == site and p.alarm_id == alarm_id and not p.done.done()]
