"""What a gateway tells the levels above it: retained ``info`` and ``health``.

Topics, under ``{prefix}/{site}`` (see docs/hub.md):

- ``info`` (retained, QoS 1): who this gateway is and where it sits in the hierarchy
  (subdistrict, community, compound, buildings), its version and its devices with
  their kind and location. Published at start and at every reconnect.
- ``health`` (retained, QoS 1): devices online/total, the outbox's depth and oldest
  unsent age, each upstream's state, uptime, the last reading's time and the open
  alarms; refreshed every ``mqtt.health_interval`` seconds. A hub that sees no
  refresh for a few intervals calls the gateway silent.

The payload builders are pure functions of the config and of plain numbers, so the
hub's tests and bench can build the same payloads without a gateway.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any

from gateway.alarms.alarm import iso

log = logging.getLogger(__name__)

INFO = "info"
HEALTH = "health"
RECONNECT_CHECK = 1.0  # seconds between looks at the link, to republish info after a reconnect


def software_version() -> str:
    """The installed package's version ("unknown" when run from a bare checkout)."""
    try:
        return metadata.version("community-gateway")
    except metadata.PackageNotFoundError:
        return "unknown"


def hierarchy(site: Any, device_buildings: Iterable[str] = ()) -> dict[str, Any]:
    """The site's place in the three levels; ``buildings`` is the configured building,
    else the buildings named by its devices' locations."""
    buildings = [site.building] if site.building else sorted(set(device_buildings))
    return {"subdistrict": site.subdistrict, "community": site.community,
            "compound": site.compound, "buildings": buildings}


def info_payload(config: Any, devices: Mapping[str, Any], *, version: str, now: float) -> dict[str, Any]:
    """The retained ``info`` of a site: ``config`` is its GatewayConfig, ``devices``
    its resolved DeviceSpecs by id (each with ``kind`` and ``location()``)."""
    listed = []
    for device_id in sorted(devices):
        spec = devices[device_id]
        listed.append({"id": device_id, "kind": spec.kind, "type": spec.config.type,
                       "location": spec.location()})
    buildings = (d["location"].get("building") for d in listed)
    interval = config.mqtt.health_interval if config.mqtt is not None else None
    return {
        "site": config.site.id, "name": config.site.name or config.site.id,
        "hierarchy": hierarchy(config.site, (b for b in buildings if b)),
        "version": version, "health_interval": interval, "devices": listed, "ts": iso(now),
    }


def health_payload(*, site: str, now: float, started: float, interval: float,
                   devices_online: Mapping[str, bool | None], outbox: Mapping[str, Any] | None,
                   upstreams: Iterable[tuple[str, Mapping[str, Any]]],
                   last_reading: float | None, open_alarms: int,
                   unacked_urgent: int) -> dict[str, Any]:
    """The retained ``health`` of a site from plain numbers.

    ``devices_online``: each device's online flag (None before its first poll);
    ``outbox``: the durable outbox's ``stats()`` (None without one); ``upstreams``:
    (name, sink ``stats()``) pairs.
    """
    online = sum(1 for v in devices_online.values() if v is True)
    offline = sorted(d for d, v in devices_online.items() if v is False)
    return {
        "site": site, "ts": iso(now), "interval": interval,
        "uptime_s": round(max(0.0, now - started), 1),
        "devices": {"total": len(devices_online), "online": online, "offline": len(offline),
                    "offline_ids": offline[:50]},
        "outbox": None if outbox is None else {
            "rows": outbox.get("rows", 0),
            "oldest_unsent_age_s": round(float(outbox.get("oldest_unsent_age_seconds") or 0.0), 1)},
        "upstreams": [{"name": name, "up": not stats.get("failing"),
                       "buffered": stats.get("buffered"),
                       "last_success": iso(stats["last_success"]) if stats.get("last_success") else None}
                      for name, stats in upstreams],
        "last_reading": iso(last_reading) if last_reading is not None else None,
        "alarms": {"open": open_alarms, "unacked_urgent": unacked_urgent},
    }


class SiteStatusPublisher:
    """Keeps ``info`` and ``health`` retained on the broker through the gateway's MQTT link.

    Reads the running gateway's parts (runners' health, outbox and sink stats, the
    pipeline's latest readings, the alarm manager); it only calls
    ``link.publish_retained``, so the link stays the one owner of the connection.
    """

    def __init__(self, gateway: Any, link: Any):
        self._gateway = gateway
        self._link = link
        self._clock = gateway.clock
        self.started = self._clock.time()
        config = gateway.site.config
        self.interval = float(config.mqtt.health_interval)
        self.published = 0

    def info(self) -> dict[str, Any]:
        g = self._gateway
        return info_payload(g.site.config, g.site.devices, version=software_version(),
                            now=self._clock.time())

    def health(self) -> dict[str, Any]:
        g = self._gateway
        latest = [r.ts for r in list(g.pipeline.latest.values())]
        open_alarms = g.alarms.open_alarms()
        return health_payload(
            site=g.site.config.site.id, now=self._clock.time(), started=self.started,
            interval=self.interval,
            devices_online={r.device_id: r.health.online for r in g.runners},
            outbox=g.outbox.stats() if g.outbox is not None else None,
            upstreams=[(s.name, s.stats()) for s in g.sinks],
            last_reading=max(latest) if latest else None, open_alarms=len(open_alarms),
            unacked_urgent=sum(1 for a in open_alarms if a.severity <= 1 and not a.acked))

    def publish(self, *, with_info: bool) -> None:
        """Queue the current health (and info) for the broker."""
        try:
            if with_info:
                self._link.publish_retained(INFO, json.dumps(self.info()).encode())
            self._link.publish_retained(HEALTH, json.dumps(self.health()).encode())
            self.published += 1
        except Exception:  # a bug in a payload must not stop the gateway; the hub sees it silent
            log.exception("site health could not be built")

    async def run(self) -> None:
        """Publish info at start, after every reconnect and after a reload (new devices),
        health every interval."""
        self.publish(with_info=True)  # queued in the link until its first connect
        # The first connect sends what is queued: republish only after a later reconnect.
        was_connected = True
        site = self._gateway.site
        since_health = 0.0
        step = min(RECONNECT_CHECK, self.interval)
        while True:
            await asyncio.sleep(step)
            since_health += step
            connected = self._link.connected
            reloaded = self._gateway.site is not site
            if (connected and not was_connected) or reloaded:
                # the broker may have lost its retained copy; a reload may change the devices
                site = self._gateway.site
                self.publish(with_info=True)
                since_health = 0.0
            elif since_health >= self.interval:
                self.publish(with_info=False)
                since_health = 0.0
            was_connected = connected
