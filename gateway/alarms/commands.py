"""Operators' commands on alarms (ack, reset, shelve, unshelve): one layer that the
MQTT link and the HTTP API both use.

A command body is JSON ``{"by": "operator", "note": "...", "minutes": 30}``
(``minutes`` only for shelve). ``apply_command`` validates it, applies it to the
alarm manager and returns the alarm; anything wrong is a ``CommandError`` with an
HTTP-like status (400 malformed, 404 unknown alarm or command, 409 not allowed
in the alarm's state), never another exception.

A command that arrived signed (gateway.alarms.signing) is applied ``via`` its
key: the key's name is who did it, and a typed ``by`` (optional then) is only
recorded as "X via KEY", since nothing vouches for it.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.alarms.alarm import Alarm
from gateway.alarms.manager import AlarmCommandRefused, AlarmManager, UnknownAlarm
from gateway.errors import GatewayError


class AlarmCommand(BaseModel):
    """Who does it, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    by: str = Field(min_length=1, max_length=64, description="the operator's name")
    note: str | None = Field(default=None, max_length=1000)


class ShelveCommand(AlarmCommand):
    """Shelve for a number of minutes (at most the site's ``alarms.max_shelve_minutes``)."""

    minutes: float = Field(gt=0)


COMMANDS: dict[str, type[AlarmCommand]] = {
    "ack": AlarmCommand,
    "reset": AlarmCommand,
    "shelve": ShelveCommand,
    "unshelve": AlarmCommand,
}


class CommandError(GatewayError):
    """A command that cannot be done; ``status`` as in HTTP (400, 404, 409)."""

    def __init__(self, command: str, alarm_id: str, detail: str, status: int):
        self.command = command
        self.alarm_id = alarm_id
        self.detail = detail
        self.status = status
        super().__init__(f"{command} of alarm {alarm_id}: {detail}")

    def to_json(self) -> dict[str, object]:
        """The error as answered on ``.../{command}/error`` or in an HTTP body."""
        return {"error": self.detail, "alarm": self.alarm_id, "command": self.command,
                "status": self.status}


def parse_command(command: str, alarm_id: str, body: bytes | str | dict | None, *,
                  via: str | None = None) -> AlarmCommand:
    """Validate a command's body (raw JSON or already decoded).

    With ``via`` (the name of the key that signed it) ``by`` may be left out; the
    result's ``by`` is then ``via``, or ``"X via KEY"`` when an operator name was typed.
    """
    model = COMMANDS.get(command)
    if model is None:
        raise CommandError(command, alarm_id, f"unknown command; commands: {sorted(COMMANDS)}", 404)
    if isinstance(body, (bytes, bytearray, str)):
        try:
            body = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise CommandError(command, alarm_id, "body is not JSON; expected "
                               + _expected(command), 400) from None
    if not isinstance(body, dict):
        raise CommandError(command, alarm_id, "expected a JSON object: " + _expected(command), 400)
    if via is not None and body.get("by") is None:
        body = {**body, "by": via}
        via = None
    try:
        cmd = model.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: "
                             f"{'unknown key' if e['type'] == 'extra_forbidden' else e['msg']}"
                             for e in exc.errors())
        raise CommandError(command, alarm_id, f"{problems} (expected {_expected(command)})",
                           400) from None
    if via is not None:
        cmd = cmd.model_copy(update={"by": f"{cmd.by} via {via}"})
    return cmd


def apply_command(alarms: AlarmManager, alarm_id: str, command: str,
                  body: bytes | str | dict | None, *, via: str | None = None) -> Alarm:
    """Validate and apply one operator's command; the alarm afterwards.

    ``via``: the name of the key a signed command came with (see ``parse_command``).
    """
    cmd = parse_command(command, alarm_id, body, via=via)
    try:
        if isinstance(cmd, ShelveCommand):
            return alarms.shelve(alarm_id, by=cmd.by, note=cmd.note, minutes=cmd.minutes)
        return getattr(alarms, command)(alarm_id, by=cmd.by, note=cmd.note)
    except UnknownAlarm as exc:
        raise CommandError(command, alarm_id, str(exc), 404) from None
    except AlarmCommandRefused as exc:
        raise CommandError(command, alarm_id, exc.reason, 409) from None


def _expected(command: str) -> str:
    extra = ', "minutes": 30' if command == "shelve" else ""
    return '{"by": "operator name", "note": "optional"' + extra + "}"
