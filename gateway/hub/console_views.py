"""The console's seams (gateway.views) for the hub: the same console package, many sites.

- ``HubConsoleAlarms`` is an ``AlarmsView`` over ``HubAlarmsView``: every open alarm in the
  hub's scope as a console row. A row's ``id`` is ``{site}:{alarm id}`` (ids are per
  gateway; a site id holds no ``:``), ``alarm_id`` the gateway's own, and it carries
  ``site``, ``site_name``, ``subdistrict``, ``community``, ``compound``, ``building`` and
  ``origin`` (gateway or hub). Transitions come from the gateways' ``alarm_events`` and
  the hub's own alarms; the history from the hub's store. A command goes through
  ``HubAlarmsView.apply_command`` (signed MQTT, confirmed by retained state) and is
  awaited: the console answers only once the gateway confirmed, refused or did not answer.
- ``HubConsoleDevices`` is a ``DevicesView`` whose rows are the gateways (``rows()``).
- ``HubConsoleSeam`` is ``ManySites``: ``/console/api/me``'s hub part and the fleet by
  level, limited to a user's scope.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.alarms.manager import Transition
from gateway.hub.history import HistoryQuery
from gateway.hub.live import Event, parse_ts
from gateway.hub.view import COUNTS, HubAlarmsView

LEVELS = ("subdistrict", "community", "compound", "building")
SEP = ":"
PLACE_KEYS = ("site", "site_name", "subdistrict", "community", "compound", "building", "origin")


class Row:
    """An alarm row as the console's feed wants it (``.id``, ``.to_json()``)."""

    __slots__ = ("id", "_json")

    def __init__(self, row: dict[str, Any]):
        self.id = row["id"]
        self._json = row

    def to_json(self) -> dict[str, Any]:
        return self._json


class HubTransition:
    """A transition for the console's fan-out (``.ts``, ``.to_json()``)."""

    __slots__ = ("ts", "_json")

    def __init__(self, ts: float, body: dict[str, Any]):
        self.ts = ts
        self._json = body

    def to_json(self) -> dict[str, Any]:
        return self._json


def console_alarm(alarm: dict[str, Any], place: dict[str, Any], origin: str) -> dict[str, Any]:
    """A gateway's (or the hub's) alarm JSON as a hub console row."""
    location = alarm.get("location") if isinstance(alarm.get("location"), dict) else {}
    site = place.get("site") or alarm.get("device")
    return {**alarm, **{k: place.get(k) for k in ("site_name", "subdistrict", "community",
                                                   "compound")},
            "site": site, "building": place.get("building", location.get("building")),
            "origin": place.get("origin", origin), "alarm_id": alarm.get("id"),
            "id": f"{site}{SEP}{alarm.get('id')}"}


class HubConsoleAlarms:
    """``AlarmsView`` (gateway.views) for the hub's console."""

    def __init__(self, view: HubAlarmsView, *, max_shelve: float):
        self.view = view
        self._max_shelve = max_shelve
        self._listeners: list[Callable[[Any], None]] = []

    @property
    def max_shelve(self) -> float:
        return self._max_shelve

    def open_alarms(self) -> list[Row]:
        rows = []
        for row in self.view.open_alarms():
            origin = row.get("origin", "gateway")
            rows.append(Row(console_alarm(
                {k: v for k, v in row.items() if k not in PLACE_KEYS}, row, origin)))
        return rows

    def recently_closed(self) -> list[dict[str, object]]:
        return []

    async def history(self, *, alarm_id: str | None = None,
                      limit: int = 100) -> list[dict[str, object]]:
        """The hub's store, newest first, as the console's history rows (``ts`` epoch)."""
        query = HistoryQuery.from_params({"limit": str(limit)})
        out: list[dict[str, object]] = []
        for item in await self.view.history.search(query):
            t = item["transition"]
            if not isinstance(t, dict) or not isinstance(t.get("alarm"), dict):
                continue
            alarm = console_alarm(t["alarm"], item, item.get("origin") or "gateway")
            if alarm_id is not None and alarm["id"] != alarm_id:
                continue
            ts = parse_ts(t.get("ts"))
            out.append({"ts": ts if ts is not None else 0.0, "event": t.get("event"),
                        "alarm": alarm, "by": t.get("by"), "note": t.get("note")})
        return out

    async def apply_command(self, alarm_id: str, command: str,
                            body: bytes | str | dict | None) -> Row:
        """Send and await the gateway's confirmation; the confirmed row (``state`` closed
        when the alarm closed), or CommandError / CommandOutcome."""
        site, _, own_id = alarm_id.partition(SEP)
        body = dict(body) if isinstance(body, dict) else {}
        by = str(body.pop("by", "") or "operator")
        body = {k: v for k, v in body.items() if v is not None}
        result = await self.view.apply_command(site=site, alarm_id=own_id, command=command,
                                               body=body, by=by)
        alarm = result.get("alarm", result) if "status" in result else result
        if not alarm:
            alarm = {"id": own_id, "state": "closed"}
        place = next((r.to_json() for r in self.open_alarms() if r.id == alarm_id), None)
        row = console_alarm(alarm, place or {"site": site}, "gateway")
        if alarm.get("state") == "closed":
            row["state"] = "closed"
        row["command_state"] = "confirmed"
        return Row(row)

    def add_listener(self, listener: Callable[[Any], None]) -> None:
        self._listeners.append(listener)

    # -- fed by the hub --------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """A gateway's alarm transition (from ``alarm_events``, in scope)."""
        body = event.body
        ts = parse_ts(body.get("ts"))
        self._emit(ts, body, event.place, "gateway")

    def on_own_transition(self, t: Transition) -> None:
        """The hub's own alarm (a gateway offline or silent)."""
        site = self.view.live.sites.get(str(t.alarm.get("device")))
        place = site.place() if site is not None else {"site": t.alarm.get("device")}
        self._emit(t.ts, t.to_json(), place, "hub")

    def _emit(self, ts: float | None, body: dict[str, Any], place: dict[str, Any],
              origin: str) -> None:
        if not self._listeners:
            return
        item = {**body, "alarm": console_alarm(body["alarm"], place, origin)}
        transition = HubTransition(ts if ts is not None else 0.0, item)
        for listener in self._listeners:
            listener(transition)


class HubConsoleDevices:
    """``DevicesView`` for the hub's console: its "devices" are the gateways."""

    def __init__(self, view: HubAlarmsView):
        self.view = view

    def specs(self) -> dict:
        return {}

    def health(self) -> dict:
        return {}

    def latest(self) -> dict:
        return {}

    def rows(self) -> list[dict[str, Any]]:
        """One row per gateway in the device list's shape, with its place."""
        out = []
        for sd in self.view.fleet()["subdistricts"]:
            for c in sd["communities"]:
                for cp in c["compounds"]:
                    for g in cp["gateways"]:
                        out.append(_gateway_row(g, sd["name"], c["name"], cp["name"]))
        return out


def _gateway_row(g: dict[str, Any], subdistrict: str, community: str,
                 compound: str) -> dict[str, Any]:
    health = g.get("health") or {}
    counts = g["counts"]
    buildings = [str(b) for b in g.get("buildings") or []]
    state = g["state"]
    return {
        "id": g["site"], "kind": "gateway", "type": "gateway", "name": g["name"],
        "site": g["site"], "subdistrict": subdistrict, "community": community,
        "compound": compound, "building": buildings[0] if len(buildings) == 1 else None,
        "location": {"building": ", ".join(buildings)} if buildings else {},
        "state": state, "online": True if state == "online" else
        (False if state in ("offline", "silent") else None),
        "last_success": health.get("ts"), "last_error": None if state == "online" else state,
        "polls": 0, "errors": 0, "response_time": None, "channel_name": "port", "channels": 0,
        "version": g.get("version"), "counts": counts,
        "readings": [{"channel": None, "ts": health.get("ts"), "values": {
            "devices_online": counts["devices"] - counts["devices_offline"],
            "devices": counts["devices"], "open_alarms": counts["open_alarms"],
            "unacked_urgent": counts["unacked_urgent"]}}],
    }


class HubConsoleSeam:
    """``ManySites`` (gateway.views): the hub's part of ``/console/api/me`` and the fleet."""

    def __init__(self, view: HubAlarmsView, *, name: str | None):
        self.view = view
        self.name = name

    def me(self) -> dict[str, Any]:
        return {"hub": True, "id": self.view.hub_id, "name": self.name, "levels": list(LEVELS),
                "scope": self.view.live.scope.describe()}

    def fleet(self, covers: Callable[[dict[str, Any]], bool] | None) -> dict[str, Any]:
        fleet = self.view.fleet()
        if covers is None:
            return fleet
        subdistricts = []
        for sd in fleet["subdistricts"]:
            communities = []
            for c in sd["communities"]:
                compounds = [cp for cp in c["compounds"] if covers(
                    {"subdistrict": sd["name"], "community": c["name"], "compound": cp["name"]})]
                if compounds:
                    communities.append({**c, "compounds": compounds, **_sum(compounds)})
            if communities:
                subdistricts.append({**sd, "communities": communities, **_sum(communities)})
        return {**fleet, "subdistricts": subdistricts, **_sum(subdistricts)}


def _sum(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"counts": {k: sum(n["counts"][k] for n in nodes) for k in COUNTS}}
