"""What the hub's API (and, next, its console) reads: open alarms across the scope, the
fleet by level, the history, and where operators' commands will go.

``HubAlarmsView`` is the seam for the console: the same questions the gateway's
console asks of its alarms (open alarms, history, apply a command), answered for
many sites. Commands to a gateway's alarms go as signed MQTT commands once the
issue "Trust" lands (``CommandSender``); the hub's own alarms are acted on here.
"""

from __future__ import annotations

from typing import Any, Protocol

from gateway.alarms.commands import apply_command
from gateway.alarms.manager import AlarmManager
from gateway.hub.history import HistoryQuery, HubHistory
from gateway.hub.live import OFFLINE, SILENT, URGENT, LivePicture, SiteState
from gateway.hub.watch import KIND
from gateway.views import CommandOutcome

ALARM_FILTERS = ("site", "subdistrict", "community", "compound", "building", "kind")
UNNAMED = "(none)"  # a level a site's info leaves empty


class CommandNotDelivered(CommandOutcome):
    """A command the hub cannot deliver (no sender yet, gateway offline, not confirmed)."""

    state = "not_delivered"
    status = 504


class CommandRefusedByGateway(CommandOutcome):
    """The gateway refused a command (its answer on ``.../{command}/error``)."""

    state = "refused"
    status = 409  # to the console's page, whatever the gateway's own status was

    def __init__(self, reason: str, gateway_status: int = 400):
        self.reason = reason
        self.gateway_status = gateway_status
        super().__init__(reason)


class CommandSender(Protocol):
    """Sends an operator's command to a gateway, signed (issue "Trust"); confirmed by the
    gateway's retained state or reported as not delivered."""

    async def send(self, *, site: str, alarm_id: str, command: str, body: dict[str, Any],
                   by: str) -> dict[str, Any]: ...


class HubAlarmsView:
    """Open alarms, fleet and history across the hub's scope."""

    def __init__(self, *, hub_id: str, live: LivePicture, alarms: AlarmManager,
                 history: HubHistory, silent_after_intervals: float, clock,
                 commands: CommandSender | None = None):
        self.hub_id = hub_id
        self.live = live
        self.alarms = alarms
        self.history = history
        self.silent_after = silent_after_intervals
        self._clock = clock
        self.commands = commands

    # -- alarms ----------------------------------------------------------------------------

    def open_alarms(self, filters: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Every open alarm in scope (the gateways' and the hub's own), unacknowledged
        urgent first, then unacknowledged, then by severity and newest; ``filters`` by
        site, subdistrict, community, compound, building, kind and level (severity,
        this level or more urgent)."""
        filters = {k: v for k, v in (filters or {}).items() if v not in (None, "")}
        rows = []
        wanted_site = filters.get("site")
        for site in self.live.in_scope():
            if wanted_site is not None and site.site != wanted_site:
                continue  # most calls name a site or a level: skip whole sites early
            if not site.alarms:
                continue
            place = site.place()
            if any(filters.get(k) not in (None, place.get(k))
                   for k in ("subdistrict", "community", "compound")):
                continue
            rows.extend(_row(place, alarm, "gateway") for alarm in site.alarms.values())
        for alarm in self.alarms.open_alarms():
            site = self.live.sites.get(alarm.device)
            place = site.place() if site is not None else {"site": alarm.device,
                                                           "site_name": alarm.device}
            if site is not None and site.in_scope is False:
                continue
            rows.append(_row(place, alarm.to_json(), "hub"))
        level = filters.get("level", filters.get("severity"))
        if level is not None:
            level = int(level)
        out = [r for r in rows if _matches(r, filters, level)]
        out.sort(key=lambda r: r["last_ts"] or "", reverse=True)
        out.sort(key=lambda r: (not (_urgent(r) and not r["acked"]), bool(r["acked"]),
                                r["severity"] if isinstance(r["severity"], int) else 9))
        return out

    async def search_history(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """Transitions matching URL-style parameters (see HistoryQuery.from_params)."""
        return await self.history.search(HistoryQuery.from_params(params))

    async def history_csv(self, params: dict[str, str]) -> str:
        """The same as CSV."""
        return await self.history.csv(HistoryQuery.from_params(params))

    async def apply_command(self, *, site: str, alarm_id: str, command: str,
                            body: dict[str, Any], by: str) -> dict[str, Any]:
        """An operator's ack / reset / shelve / unshelve: the hub's own alarms here, a
        gateway's through the signed-command sender (not delivered without one)."""
        if site == self.hub_id or any(a.id == alarm_id for a in self.alarms.open_alarms()):
            payload = {**body, "by": by}
            alarm = apply_command(self.alarms, alarm_id, command, payload)
            return alarm.to_json()
        if self.commands is None:
            raise CommandNotDelivered("commands to gateways need signing (issue 'Trust')")
        return await self.commands.send(site=site, alarm_id=alarm_id, command=command,
                                        body=body, by=by)

    # -- the fleet by level ----------------------------------------------------------------

    def fleet(self) -> dict[str, Any]:
        """subdistricts -> communities -> compounds -> gateways, each with its counts."""
        now = self._clock.time()
        hub_alarms: dict[str, list[dict[str, Any]]] = {}
        for alarm in self.alarms.open_alarms():
            hub_alarms.setdefault(alarm.device, []).append(alarm.to_json())
        tree: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
        for site in self.live.in_scope():
            place = site.place()
            gateway = _gateway(site, now, self.silent_after, hub_alarms.get(site.site, []))
            (tree.setdefault(place["subdistrict"] or UNNAMED, {})
                 .setdefault(place["community"] or UNNAMED, {})
                 .setdefault(place["compound"] or UNNAMED, [])).append(gateway)
        subdistricts = []
        for sd_name, communities in sorted(tree.items()):
            community_nodes = []
            for c_name, compounds in sorted(communities.items()):
                compound_nodes = [{"name": name, "level": "compound", **_sum(gws), "gateways": gws}
                                  for name, gws in sorted(compounds.items())]
                community_nodes.append({"name": c_name, "level": "community",
                                        **_sum(compound_nodes), "compounds": compound_nodes})
            subdistricts.append({"name": sd_name, "level": "subdistrict", **_sum(community_nodes),
                                 "communities": community_nodes})
        return {"hub": self.hub_id, "scope": self.live.scope.describe(), **_sum(subdistricts),
                "subdistricts": subdistricts}


COUNTS = ("gateways", "gateways_offline", "devices", "devices_offline", "open_alarms",
          "unacked_urgent")


def _sum(nodes: list[dict[str, Any]]) -> dict[str, int]:
    return {"counts": {k: sum(n["counts"][k] for n in nodes) for k in COUNTS}}


def _gateway(site: SiteState, now: float, silent_after: float,
             hub_alarms: list[dict[str, Any]]) -> dict[str, Any]:
    health = site.health or {}
    devices = health.get("devices") if isinstance(health.get("devices"), dict) else {}
    total = devices.get("total")
    if not isinstance(total, int):
        total = len((site.info or {}).get("devices") or [])
    offline = devices.get("offline") if isinstance(devices.get("offline"), int) else 0
    state = site.gateway_state(now, silent_after)
    alarms = list(site.alarms.values()) + hub_alarms
    unacked_urgent = sum(1 for a in alarms if _urgent(a) and not a.get("acked"))
    return {
        "site": site.site, "name": site.place()["site_name"], "state": state,
        "buildings": site.hierarchy.get("buildings") or [],
        "version": (site.info or {}).get("version"), "health": site.health,
        "counts": {"gateways": 1, "gateways_offline": int(state in (OFFLINE, SILENT)),
                   "devices": total, "devices_offline": offline,
                   "open_alarms": len(alarms), "unacked_urgent": unacked_urgent},
    }


def _row(place: dict[str, Any], alarm: dict[str, Any], origin: str) -> dict[str, Any]:
    location = alarm.get("location") if isinstance(alarm.get("location"), dict) else {}
    return {**alarm, **place, "building": location.get("building"), "origin": origin}


def _urgent(alarm: dict[str, Any]) -> bool:
    severity = alarm.get("severity")
    return isinstance(severity, int) and severity <= URGENT


def _matches(row: dict[str, Any], filters: dict[str, str], level: int | None) -> bool:
    for key in ALARM_FILTERS:
        wanted = filters.get(key)
        if wanted is not None and str(row.get(key)) != wanted:
            return False
    if level is not None:
        severity = row.get("severity")
        if not isinstance(severity, int) or severity > level:
            return False
    return True


__all__ = ["HubAlarmsView", "CommandSender", "CommandNotDelivered", "CommandRefusedByGateway",
           "KIND"]
