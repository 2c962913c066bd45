"""The console's Zones and Digest views: arming groups, bypassed inputs, devices out of
service, and the daily device digest, read and changed through ``gateway.views``.

JSON under ``/console/api/``:

- ``GET zones``: the groups (armed or not, by schedule or by hand, who, until), the
  bypassed inputs and the devices out of service, plus the devices and their inputs
  an operator may pick from.
- ``POST zones/{action}`` (operator role, CSRF as every console POST), with a note
  wherever an alarm will be held back:
  ``arm``/``disarm`` ``{"group", "note", "until"?}``; ``bypass`` ``{"device", "channel",
  "note", "until"}``; ``end_bypass`` ``{"device", "channel"}``; ``out_of_service``
  ``{"device", "note", "until"}``; ``return_to_service`` ``{"device"}``.
  ``until`` is ISO 8601 with a zone, in the future, at most 30 days ahead.
- ``GET digest``: the latest daily digest and the one building up since.

Every change, and every refusal, goes to the console's audit trail with who and why;
the change itself is logged and kept by the gateway (gateway.alarms.protection).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from gateway.operations.http_app import App, Request, Response, get, post

if TYPE_CHECKING:
    from gateway.console.sessions import Session

PREFIX = "/console/api"
ACTIONS = ("arm", "disarm", "bypass", "end_bypass", "out_of_service", "return_to_service")
MAX_AHEAD_S = 30 * 86400  # as the HTTP API allows (gateway.operations.protection_api)
NOTE_MAX = 500


class ZoneBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    group: str | None = Field(default=None, max_length=64)
    device: str | None = Field(default=None, max_length=64)
    channel: int | None = Field(default=None, ge=1, le=256)
    note: str | None = Field(default=None, max_length=NOTE_MAX)
    until: datetime | None = None


class Refused(Exception):
    """A change the console will not make: the status and why."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def add_zone_routes(app: App, guarded, json_body, to_json, error) -> None:
    """Add the routes (when the process has zones / a digest); the helpers are routes.py's."""
    from gateway.console.state import CONSOLE

    async def zones(request: Request, session: Session) -> Response:
        console = request.app[CONSOLE]
        if console.views.zones is None:
            return error(404, "no arming groups or bypasses on this server")
        return to_json(_snapshot(console))

    async def change(request: Request, session: Session) -> Response:
        console = request.app[CONSOLE]
        action = request.match_info["action"]
        if console.views.zones is None:
            return error(404, "no arming groups or bypasses on this server")
        body = await json_body(request, ZoneBody)
        if isinstance(body, Response):
            return body
        target = body.group or ":".join(str(x) for x in (body.device, body.channel) if x)
        try:
            _apply(console, action, body, by=session.user)
        except Refused as exc:
            await console.audit.record(operator=session.user, action=action, target=target or None,
                                       note=body.note, ok=False, detail=exc.detail,
                                       remote=console.remote(request))
            return error(exc.status, exc.detail)
        await console.audit.record(operator=session.user, action=action, target=target,
                                   note=body.note, remote=console.remote(request))
        return to_json(_snapshot(console))

    async def digest(request: Request, session: Session) -> Response:
        console = request.app[CONSOLE]
        if console.views.digest is None:
            return error(404, "no device digest on this server")
        return to_json(console.views.digest.report())

    app.add_routes([get(PREFIX + "/zones", guarded(zones)),
                    post(PREFIX + "/zones/{action:%s}" % "|".join(ACTIONS), guarded(change, act=True)),
                    get(PREFIX + "/digest", guarded(digest))])


def _snapshot(console) -> dict[str, object]:
    """The zones as they are, with the devices (input counts, the inputs' names) to choose
    from; a bypassed input carries its name, as a guard knows it."""
    specs = console.views.devices.specs()
    names = {d: {ch: str(place["zone_name"]) for ch, place in spec.channel_places.items()
                 if place.get("zone_name")} for d, spec in specs.items()}
    devices = [{"id": d, "kind": spec.kind, "inputs": spec.channel_count or 0,
                "names": {str(ch): name for ch, name in sorted(names[d].items())}}
               for d, spec in sorted(specs.items())]
    snapshot = console.views.zones.snapshot()
    for entry in snapshot["bypassed"]:
        device, _, channel = str(entry["input"]).rpartition(":")
        name = names.get(device, {}).get(int(channel)) if channel.isdigit() else None
        if name:
            entry["name"] = name
    return {**snapshot, "devices": devices}


def _apply(console, action: str, body: ZoneBody, *, by: str) -> None:
    zones = console.views.zones
    if action in ("arm", "disarm"):
        if not body.group:
            raise Refused(400, "which group? ('group' is required)")
        note = _note(body)
        groups = {g["id"] for g in zones.snapshot()["groups"]}
        if body.group not in groups:
            raise Refused(404, f"no arming group {body.group!r}")
        zones.set_armed(body.group, action == "arm", by=by, note=note,
                        until=_until(body.until, console.clock, required=False))
        return
    device = _device(console, body, channel=action in ("bypass", "end_bypass"))
    if action == "bypass":
        zones.bypass(device, body.channel, by=by, note=_note(body),
                     until=_until(body.until, console.clock))
    elif action == "out_of_service":
        zones.take_out_of_service(device, by=by, note=_note(body),
                                  until=_until(body.until, console.clock))
    elif action == "end_bypass":
        if not zones.end_bypass(device, body.channel, by=by):
            raise Refused(409, f"{device}:{body.channel} is not bypassed")
    elif action == "return_to_service" and not zones.return_to_service(device, by=by):
        raise Refused(409, f"{device} is not out of service")


def _note(body: ZoneBody) -> str:
    if not body.note:
        raise Refused(400, "a note is required: say why")
    return body.note


def _device(console, body: ZoneBody, *, channel: bool) -> str:
    if not body.device:
        raise Refused(400, "which device? ('device' is required)")
    spec = console.views.devices.specs().get(body.device)
    if spec is None:
        raise Refused(404, f"no device {body.device!r}")
    if channel:
        if body.channel is None:
            raise Refused(400, "which input? ('channel' is required)")
        if spec.channel_count and body.channel > spec.channel_count:
            raise Refused(400, f"device {body.device} has inputs 1..{spec.channel_count}")
    return body.device


def _until(when: datetime | None, clock, *, required: bool = True) -> float | None:
    if when is None:
        if required:
            raise Refused(400, "an end time ('until') is required")
        return None
    if when.tzinfo is None:
        raise Refused(400, "'until' needs a time zone (e.g. 2026-12-01T18:00:00+08:00 or ...Z)")
    ts = when.timestamp()
    now = clock.time()
    if ts <= now:
        raise Refused(400, "the end time is in the past")
    if ts - now > MAX_AHEAD_S:
        raise Refused(400, "the end time is more than 30 days ahead")
    return ts
