"""The hub's live picture: every site in scope, its gateway's state and its open alarms.

Built only from what the gateways keep on the broker (retained ``info``,
``health``, ``status``, ``alarms/<id>``), so a hub that (re)connects rebuilds it
at once. At each connect the picture is marked, the retained state arrives
again, and whatever was not confirmed by then (an alarm closed while the hub was
away: its retained topic was emptied) is swept (``begin_sync`` / ``end_sync``).

A site is in scope by the hierarchy in its ``info``. Until its info arrives, its
messages are held (events bounded) and then kept or dropped by its scope; a site
out of scope keeps nothing but its hierarchy.

An alarm already open when the hub first sees it (in the retained state of a
rebuild, or held until its site's info came) has no transition the hub saw: it is
handed on as a ``retained`` event (``Event.retained``), so the history has a row
for it (gateway.hub.history keeps it only when it has nothing of that alarm yet).
"""

from __future__ import annotations

import json
import logging
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.hub.config import HubScope

log = logging.getLogger(__name__)

DEFAULT_HEALTH_INTERVAL = 30.0
MAX_HELD_EVENTS = 1000  # per site whose info has not arrived yet
URGENT = 1  # severity at or below which an alarm is urgent (1, or 0 once escalated)

ONLINE, OFFLINE, SILENT, UNKNOWN = "online", "offline", "silent", "unknown"
RETAINED = "retained"  # the history's event for an alarm found open, not seen raised


def parse_ts(text: object) -> float | None:
    """Epoch seconds of an ISO 8601 time from a payload, or None if it is not one."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


@dataclass(slots=True)
class SiteState:
    """What the hub knows about one site."""

    site: str
    info: dict[str, Any] | None = None
    in_scope: bool | None = None  # None until its info says
    status: str | None = None  # "online" / "offline" (the last will), as retained
    health: dict[str, Any] | None = None
    health_at: float | None = None  # when the newest health arrived (hub clock)
    alarms: dict[str, dict[str, Any]] = field(default_factory=dict)
    held_events: deque[tuple[dict[str, Any], bytes]] = field(default_factory=deque)

    @property
    def hierarchy(self) -> dict[str, Any]:
        h = (self.info or {}).get("hierarchy")
        return h if isinstance(h, dict) else {}

    @property
    def health_interval(self) -> float:
        for value in ((self.health or {}).get("interval"), (self.info or {}).get("health_interval")):
            if isinstance(value, (int, float)) and value > 0:
                return float(value)
        return DEFAULT_HEALTH_INTERVAL

    def gateway_state(self, now: float, silent_after_intervals: float) -> str:
        """online, offline (its last will or a clean stop), silent (online, but its health
        stopped arriving for that many intervals) or unknown (no status yet)."""
        if self.status == OFFLINE:
            return OFFLINE
        if self.status != ONLINE:
            return UNKNOWN
        # Silence is judged only once health has come (since the hub started, or retained):
        # a gateway of a version without health must not be called silent.
        if self.health_at is not None and \
                now - self.health_at > silent_after_intervals * self.health_interval:
            return SILENT
        return ONLINE

    def place(self) -> dict[str, Any]:
        """Subdistrict, community, compound and name: what every row of this site carries."""
        h = self.hierarchy
        return {"site": self.site, "site_name": (self.info or {}).get("name") or self.site,
                "subdistrict": h.get("subdistrict"), "community": h.get("community"),
                "compound": h.get("compound")}


@dataclass(slots=True)
class Event:
    """An alarm transition from a site in scope, for the history."""

    site: str
    place: dict[str, Any]
    body: dict[str, Any]
    raw: bytes | None = None  # the payload as received, stored as is (no second encoding)
    retained: bool = False  # an alarm found open in retained state, not a transition seen


class LivePicture:
    """Takes every message on the hub's subscriptions; answers what is up now."""

    def __init__(self, *, prefix: str, scope: HubScope, clock):
        self.prefix = prefix.rstrip("/") + "/"
        self.scope = scope
        self._clock = clock
        self.sites: dict[str, SiteState] = {}
        self.messages = 0
        self.skipped = 0  # bad payloads, counted (and logged the first time per site)
        self.out_of_scope = 0
        self.events_dropped = 0
        self._syncing: set[tuple[str, str]] | None = None  # (site, alarm id) confirmed so far
        self._skipped_sites: set[str] = set()
        self.synced = 0  # completed rebuilds from retained state

    # -- reading ------------------------------------------------------------------------

    def in_scope(self) -> list[SiteState]:
        """The sites in scope, by id."""
        return [s for _, s in sorted(self.sites.items()) if s.in_scope]

    def open_alarms(self) -> list[tuple[SiteState, dict[str, Any]]]:
        """Every open alarm of every site in scope, with its site."""
        return [(s, a) for s in self.in_scope() for a in s.alarms.values()]

    # -- the rebuild at each connect -----------------------------------------------------

    def begin_sync(self) -> None:
        """The hub (re)connected: retained state is coming again; mark what we have."""
        self._syncing = set()

    def end_sync(self) -> int:
        """Every retained message has arrived: drop alarms it did not confirm.
        Returns how many were dropped."""
        confirmed, self._syncing = self._syncing, None
        if confirmed is None:
            return 0
        dropped = 0
        for site in self.sites.values():
            for alarm_id in [a for a in site.alarms if (site.site, a) not in confirmed]:
                del site.alarms[alarm_id]
                dropped += 1
        self.synced += 1
        return dropped

    # -- taking messages -----------------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> list[Event]:
        """One message; returns the alarm transitions to record (in scope, in order)."""
        self.messages += 1
        if not topic.startswith(self.prefix):
            return []
        site_id, _, rest = topic[len(self.prefix):].partition("/")
        if not site_id or not rest:
            return []
        site = self.sites.get(site_id)
        if site is None:
            site = self.sites[site_id] = SiteState(site_id)
        if rest == "info":
            return self._info(site, payload)
        if site.in_scope is False:
            self.out_of_scope += 1
            return []
        if rest == "alarm_events":
            return self._event(site, payload)
        if rest == "status":
            site.status = payload.decode("utf-8", "replace").strip() or None
            return []
        if rest == "health":
            self._health(site, payload)
            return []
        kind, _, alarm_id = rest.partition("/")
        if kind == "alarms" and alarm_id and "/" not in alarm_id:
            return self._alarm(site, alarm_id, payload)
        return []  # commands and their errors, telemetry: not the hub's business

    def _info(self, site: SiteState, payload: bytes) -> list[Event]:
        if not payload:
            site.info = None  # the site was taken off the broker
            site.in_scope = None
            return []
        info = self._json(site, "info", payload)
        if info is None:
            return []
        site.info = info
        was = site.in_scope
        site.in_scope = self.scope.covers(info.get("hierarchy"))
        if not site.in_scope:
            if was is not False:
                log.info("site %s is outside this hub's scope; ignored", site.site)
            site.alarms.clear()
            site.health = site.health_at = site.status = None
            site.held_events.clear()
            return []
        held = [Event(site.site, site.place(), e, raw) for e, raw in site.held_events]
        site.held_events.clear()
        if was is not True:  # alarms kept while its scope was unknown, their raise not held
            seen = {e.body["alarm"].get("id") for e in held}
            found = (_found_open(site, alarm) for alarm_id, alarm in site.alarms.items()
                     if alarm_id not in seen)
            held += [event for event in found if event is not None]
        return held

    def _event(self, site: SiteState, payload: bytes) -> list[Event]:
        body = self._json(site, "alarm_events", payload)
        if body is None:
            return []
        if not isinstance(body.get("alarm"), dict) or not isinstance(body.get("event"), str) \
                or not isinstance(body.get("ts"), str):
            self._skip(site, "alarm_events", "needs event, ts and alarm")
            return []
        if site.in_scope is None:  # its info is not here yet: hold, bounded
            if len(site.held_events) >= MAX_HELD_EVENTS:
                site.held_events.popleft()
                self.events_dropped += 1
            site.held_events.append((body, payload))
            return []
        return [Event(site.site, site.place(), body, payload)]

    def _health(self, site: SiteState, payload: bytes) -> None:
        health = self._json(site, "health", payload) if payload else None
        if health is None:
            return
        site.health = health
        # When it arrived, by the hub's clock: a gateway's clock may be off, and one that died
        # while the hub was away says so by its last will (status offline), not by its health.
        site.health_at = self._clock.time()

    def _alarm(self, site: SiteState, alarm_id: str, payload: bytes) -> list[Event]:
        if not payload:
            site.alarms.pop(alarm_id, None)
            return []
        alarm = self._json(site, f"alarms/{alarm_id}", payload)
        if alarm is None:
            return []
        if alarm.get("state") == "closed":
            site.alarms.pop(alarm_id, None)
            return []
        new = alarm_id not in site.alarms
        site.alarms[alarm_id] = alarm
        if self._syncing is not None:
            self._syncing.add((site.site, alarm_id))
            # New to the picture during a rebuild: retained state from before this
            # connect (outside it, a new alarm comes with its own raised event).
            if new and site.in_scope:
                found = _found_open(site, alarm)
                return [found] if found is not None else []
        return []

    def _json(self, site: SiteState, what: str, payload: bytes) -> dict[str, Any] | None:
        try:
            value = json.loads(payload)
        except ValueError:
            self._skip(site, what, "not JSON")
            return None
        if not isinstance(value, dict):
            self._skip(site, what, "not a JSON object")
            return None
        return value

    def _skip(self, site: SiteState, what: str, why: str) -> None:
        self.skipped += 1
        if site.site not in self._skipped_sites:  # once per site: a broken gateway floods
            self._skipped_sites.add(site.site)
            log.warning("site %s: %s skipped (%s); further bad messages are only counted",
                        site.site, what, why)


def _found_open(site: SiteState, alarm: dict[str, Any]) -> Event | None:
    """The history's row for an alarm found open: when it was raised, as the gateway kept it."""
    ts = alarm.get("first_ts") if parse_ts(alarm.get("first_ts")) is not None \
        else alarm.get("last_ts")
    if parse_ts(ts) is None:
        return None
    return Event(site.site, site.place(), {"event": RETAINED, "ts": ts, "alarm": alarm},
                 retained=True)
