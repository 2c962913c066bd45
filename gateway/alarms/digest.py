"""The daily digest: which devices were offline or faulty, for the morning handover.

It listens to alarm transitions: ``device_offline`` and ``device_fault:*`` alarms
raised, and how long each lasted. At ``alarms.digest_at`` (local time) it closes
the day's list: logged, kept as the latest digest (``GET /api/digest``, the
console), and handed to ``on_digest`` (webhooks). Open alarms at build time count
too, so a device still offline after a restart is not left out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.alarms.alarm import iso
from gateway.alarms.manager import AlarmManager, Transition

log = logging.getLogger(__name__)

OFFLINE = "device_offline"
FAULT_PREFIX = "device_fault:"
#: Episodes remembered per device between digests (a flapping device's count goes on).
MAX_EPISODES = 50


@dataclass
class DeviceDay:
    """One device's troubles since the last digest."""

    device: str
    kind: str
    location: dict[str, object]
    offline: int = 0  # times it went offline
    offline_s: float = 0.0  # total time offline (closed episodes)
    faults: dict[str, int] = field(default_factory=dict)  # fault -> times raised
    open_since: dict[str, float] = field(default_factory=dict)  # rule -> raised at

    def to_json(self, now: float) -> dict[str, object]:
        still = {rule: iso(ts) for rule, ts in self.open_since.items()}
        offline_s = self.offline_s + sum(now - ts for rule, ts in self.open_since.items()
                                         if rule == OFFLINE)
        return {"device": self.device, "kind": self.kind, "location": self.location,
                "offline_times": self.offline, "offline_minutes": round(offline_s / 60, 1),
                "faults": dict(self.faults), "still_open": still}


class DeviceDigest:
    """Collects the day's device troubles; ``build()`` makes the digest."""

    def __init__(self, *, alarms: AlarmManager, clock, site: str,
                 on_digest: Callable[[dict], None] | None = None):
        self._alarms = alarms
        self._clock = clock
        self._site = site
        self._on_digest = on_digest
        self._days: dict[str, DeviceDay] = {}
        self._since = clock.time()
        self.latest: dict | None = None

    def on_transition(self, t: Transition) -> None:
        """Alarm listener: count device troubles."""
        rule = str(t.alarm.get("rule", ""))
        if rule != OFFLINE and not rule.startswith(FAULT_PREFIX):
            return
        device = str(t.alarm.get("device"))
        day = self._days.get(device)
        if day is None:
            day = self._days[device] = DeviceDay(device, str(t.alarm.get("kind")),
                                                 dict(t.alarm.get("location") or {}))
        if t.event in ("raised", "repeated"):
            if rule == OFFLINE:
                day.offline += 1
            else:
                fault = str((t.alarm.get("details") or {}).get("fault", rule[len(FAULT_PREFIX):]))
                day.faults[fault] = day.faults.get(fault, 0) + 1
            day.open_since.setdefault(rule, t.ts)
        elif t.event in ("cleared", "condition_cleared", "closed", "reset"):
            started = day.open_since.pop(rule, None)
            if started is not None and rule == OFFLINE:
                day.offline_s += max(0.0, t.ts - started)

    def build(self, *, new_day: bool = True) -> dict:
        """The digest since the last one; ``new_day`` starts counting afresh."""
        now = self._clock.time()
        for alarm in self._alarms.open_alarms():  # e.g. restored at a restart
            if (alarm.rule == OFFLINE or alarm.rule.startswith(FAULT_PREFIX)) and alarm.condition:
                day = self._days.setdefault(alarm.device, DeviceDay(alarm.device, alarm.kind,
                                                                    dict(alarm.location)))
                if alarm.rule not in day.open_since:
                    day.open_since[alarm.rule] = alarm.first_ts
                    if alarm.rule == OFFLINE:
                        day.offline = max(day.offline, 1)
                    else:
                        fault = str(alarm.details.get("fault", alarm.rule))
                        day.faults[fault] = max(day.faults.get(fault, 0), 1)
        devices = sorted((d.to_json(now) for d in self._days.values()),
                         key=lambda d: (-d["offline_minutes"], d["device"]))
        digest = {"type": "device_digest", "site": self._site, "from": iso(self._since),
                  "to": iso(now), "devices": devices}
        if not new_day:
            return digest
        # a new day: carry only what is still open
        self._days = {k: DeviceDay(d.device, d.kind, d.location,
                                   open_since={r: now for r in d.open_since})
                      for k, d in self._days.items() if d.open_since}
        self._since = now
        self.latest = digest
        return digest

    async def run(self, at: str) -> None:
        """Every day at ``at`` (``HH:MM`` local time): build, log and hand over the digest."""
        while True:
            await asyncio.sleep(_seconds_until(at, self._clock.time()))
            digest = self.build()
            troubled = digest["devices"]
            log.info("device digest %s..%s: %d device(s) offline or faulty%s", digest["from"],
                     digest["to"], len(troubled),
                     "".join(f"; {d['device']}: offline {d['offline_times']}x "
                             f"{d['offline_minutes']} min, faults {d['faults'] or '-'}"
                             for d in troubled[:20]))
            if self._on_digest is not None:
                try:
                    self._on_digest(digest)
                except Exception:  # a failing consumer must not stop the next digest
                    log.exception("device digest: delivery failed")


def _seconds_until(at: str, now: float) -> float:
    hours, minutes = (int(x) for x in at.split(":"))
    t = time.localtime(now)
    target = time.mktime((t.tm_year, t.tm_mon, t.tm_mday, hours, minutes, 0, 0, 0, -1))
    if target <= now:
        target = time.mktime((t.tm_year, t.tm_mon, t.tm_mday + 1, hours, minutes, 0, 0, 0, -1))
    return max(1.0, target - now)
