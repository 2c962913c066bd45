"""HTTP API of armed zones, bypasses and devices out of service (gateway.alarms.protection),
and of the daily device digest (gateway.alarms.digest).

``GET /api/digest``: the last daily digest and the one building up since.

``GET /api/protection``: every arming group with its state and where that comes
from, the bypassed inputs and the devices out of service.
Writes (the API token, or a console operator's session; each logged with who and why):

- ``POST /api/arming/{group}`` ``{"armed": true, "by": "...", "note": "...", "until": ISO?}``
- ``POST /api/bypass`` ``{"device", "channel", "until": ISO, "by", "note"}``;
  ``POST /api/bypass/end`` ``{"device", "channel", "by"}``
- ``POST /api/out_of_service`` ``{"device", "until": ISO, "by", "note"}``;
  ``POST /api/out_of_service/end`` ``{"device", "by"}``

A note is required: an operator says why an alarm will not be raised. ``until`` is
ISO 8601 with a zone (or ``Z``), in the future, at most 30 days ahead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.alarms.digest import DeviceDigest
from gateway.alarms.protection import Protections
from gateway.operations.http_app import HttpError, Request, Response, Route, get, json_response, post

MAX_AHEAD_S = 30 * 86400


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    by: str = Field(min_length=1, max_length=64)


class ArmBody(_Body):
    armed: bool
    note: str = Field(min_length=1, max_length=500)
    until: datetime | None = None


class BypassBody(_Body):
    device: str = Field(min_length=1, max_length=64)
    channel: int = Field(ge=1, le=256)
    until: datetime
    note: str = Field(min_length=1, max_length=500)


class BypassEndBody(_Body):
    device: str = Field(min_length=1, max_length=64)
    channel: int = Field(ge=1, le=256)


class OutOfServiceBody(_Body):
    device: str = Field(min_length=1, max_length=64)
    until: datetime
    note: str = Field(min_length=1, max_length=500)


class ServiceEndBody(_Body):
    device: str = Field(min_length=1, max_length=64)


def protection_routes(protections: Protections, devices: dict, clock,
                      actor_of: Callable[[Request], str | None],
                      digest: DeviceDigest | None = None) -> list[Route]:
    """The routes; ``devices`` are the site's device specs (to check ids and inputs),
    ``actor_of`` names the credential a write came with (the API token, a session)."""

    def _who(request: Request, typed: str) -> str:
        """The typed name, and the credential that vouches for it."""
        actor = actor_of(request)
        return f"{typed} via {actor}" if actor and actor != typed else typed

    async def show(request: Request) -> Response:
        return _json(protections.snapshot())

    async def arm(request: Request) -> Response:
        body = await _parse(request, ArmBody)
        group = request.match_info["group"]
        if group not in protections.groups:
            return _json({"error": f"no arming group {group!r}",
                          "groups": sorted(protections.groups)}, 404)
        protections.set_armed(group, body.armed, by=_who(request, body.by), note=body.note,
                              until=_until(body.until, clock, required=False))
        return _json(protections.snapshot())

    async def bypass(request: Request) -> Response:
        body = await _parse(request, BypassBody)
        _input(devices, body.device, body.channel)
        protections.bypass(body.device, body.channel, by=_who(request, body.by), note=body.note,
                           until=_until(body.until, clock))
        return _json(protections.snapshot())

    async def end_bypass(request: Request) -> Response:
        body = await _parse(request, BypassEndBody)
        if not protections.end_bypass(body.device, body.channel, by=_who(request, body.by)):
            return _json({"error": f"{body.device}:{body.channel} is not bypassed"}, 409)
        return _json(protections.snapshot())

    async def out_of_service(request: Request) -> Response:
        body = await _parse(request, OutOfServiceBody)
        _input(devices, body.device, None)
        protections.take_out_of_service(body.device, by=_who(request, body.by), note=body.note,
                                        until=_until(body.until, clock))
        return _json(protections.snapshot())

    async def end_service(request: Request) -> Response:
        body = await _parse(request, ServiceEndBody)
        if not protections.return_to_service(body.device, by=_who(request, body.by)):
            return _json({"error": f"{body.device} is not out of service"}, 409)
        return _json(protections.snapshot())

    async def show_digest(request: Request) -> Response:
        if digest is None:
            return _json({"error": "no digest on this server"}, 404)
        return _json({"latest": digest.latest, "since": digest.build(new_day=False)})

    return [get("/api/protection", show),
            get("/api/digest", show_digest),
            post("/api/arming/{group}", arm),
            post("/api/bypass", bypass),
            post("/api/bypass/end", end_bypass),
            post("/api/out_of_service", out_of_service),
            post("/api/out_of_service/end", end_service)]


def _json(body: object, status: int = 200) -> Response:
    return json_response(body, status=status)


async def _parse(request: Request, model: type[BaseModel]):
    try:
        return model.model_validate(json.loads(await request.read() or b"{}"))
    except (ValueError, UnicodeDecodeError) as exc:  # ValidationError is a ValueError
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                           for e in exc.errors()) if isinstance(exc, ValidationError) else \
            "body is not JSON"
        raise HttpError(400, detail) from None


def _until(when: datetime | None, clock, *, required: bool = True) -> float | None:
    if when is None:
        if required:
            raise _bad("'until' is required")
        return None
    if when.tzinfo is None:
        raise _bad("'until' needs a time zone (e.g. 2026-12-01T18:00:00+08:00 or ...Z)")
    ts = when.timestamp()
    now = clock.time()
    if ts <= now:
        raise _bad("'until' is in the past")
    if ts - now > MAX_AHEAD_S:
        raise _bad("'until' is more than 30 days ahead")
    return ts


def _input(devices: dict, device: str, channel: int | None) -> None:
    spec = devices.get(device)
    if spec is None:
        raise HttpError(404, f"no device {device!r}")
    if channel is not None and spec.channel_count and channel > spec.channel_count:
        raise _bad(f"device {device} has inputs 1..{spec.channel_count}")


def _bad(message: str) -> HttpError:
    return HttpError(400, message)
