"""The hub's own alarms: a gateway offline (its last will, or a stop) or silent (its
health stopped arriving), raised in an AlarmManager like any gateway's alarm and
cleared when the gateway is back.

One alarm per gateway (rule ``gateway_offline``, device = the site id, kind
``gateway``), located at the site's place so the filters by level find it. A site
whose status the hub has not learned yet (just after a start) is left as it is:
neither raised nor cleared.

``details.last_seen`` is the gateway's own timestamp on the newest of its retained
``health`` and ``info``: the same on every replica of the hub, it identifies the
occurrence in the webhooks' Idempotency-Key (gateway.hub.replicas).
"""

from __future__ import annotations

from gateway.alarms.manager import AlarmManager
from gateway.hub.config import HubAlarms
from gateway.hub.live import OFFLINE, ONLINE, SILENT, LivePicture, SiteState, parse_ts

RULE = "gateway_offline"
KIND = "gateway"


class GatewayWatch:
    """Turns each site's gateway state into the hub alarm (call ``check`` periodically)."""

    def __init__(self, *, live: LivePicture, alarms: AlarmManager, config: HubAlarms):
        self._live = live
        self._alarms = alarms
        self._config = config

    def check(self, now: float) -> None:
        """Raise or clear each site's gateway alarm from its state now."""
        for site in self._live.in_scope():
            state = site.gateway_state(now, self._config.silent_after_intervals)
            if state in (OFFLINE, SILENT):
                place = site.place()
                location = {k: v for k, v in place.items() if v is not None and k != "site_name"}
                if state == OFFLINE:
                    message = f"gateway {place['site_name']} offline"
                else:
                    message = (f"gateway {place['site_name']} silent: no health for "
                               f"{self._config.silent_after_intervals:g} intervals")
                # While the condition holds this only refreshes the open alarm (no event);
                # last_seen stays as it was when this occurrence began, as on every replica.
                open_now = self._alarms.find(RULE, site.site, None)
                seen = open_now.details.get("last_seen") \
                    if open_now is not None and open_now.condition else last_seen(site)
                self._alarms.activate(
                    rule=RULE, severity=self._config.severity, device=site.site, kind=KIND,
                    channel=None, location=location, message=message, value=None, ts=now,
                    details={"gateway": state, "last_seen": seen})
            elif state == ONLINE:
                self._alarms.deactivate(rule=RULE, device=site.site, channel=None, value=None,
                                        ts=now)


def last_seen(site: SiteState) -> str | None:
    """The newest of the gateway's own ``ts`` in its retained health and info, as sent."""
    stamps = [(parse_ts(d.get("ts")), d.get("ts")) for d in (site.health, site.info)
              if isinstance(d, dict)]
    stamps = [(t, text) for t, text in stamps if t is not None]
    return max(stamps)[1] if stamps else None
