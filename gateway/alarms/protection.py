"""Armed zones, bypassed inputs and devices out of service: when alarms are held back.

Three states a guard or a schedule sets, as GB 50394 and ISA-18.2 name them:

- **arming groups** (``arming:`` in the site config): a perimeter armed from 22:00
  to 06:00, a pump room always. A rule with ``armed_by: GROUP`` raises only while
  its group is armed (an intrusion); rules without it always do (tamper, a cut
  wire). An operator may arm or disarm a group by hand, with a note; that lasts
  until the given time or, by default, until the schedule next changes.
- **bypass** of one input (device and channel) until a set time: a faulty zone
  stops paging while it is repaired. Every alarm of that input is held back.
- **out of service** of a whole device until a set time: planned work. Its alarms
  are held back; its readings still flow to the rules' state, the console and the
  upstream.

Every change is logged with who and why, kept across restarts in
``<state_dir>/protection.json`` (written whole, atomically), and expires by itself.
Times in schedules are the gateway's local time (set the Pi's time zone).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from gateway.config.schedule import Schedule

log = logging.getLogger(__name__)

FILE_NAME = "protection.json"


@dataclass
class Override:
    """A hand-made state (armed, bypassed, out of service) with who, why and until when."""

    by: str
    note: str
    since: float
    until: float | None
    armed: bool | None = None  # arming groups only

    def live(self, now: float) -> bool:
        return self.until is None or now < self.until


class Protections:
    """The site's arming groups, bypasses and devices out of service."""

    def __init__(self, *, groups: dict[str, tuple[str, Schedule]], state_dir: Path | None,
                 clock):
        self.groups = groups  # id -> (name, schedule)
        self._clock = clock
        self.path = Path(state_dir) / FILE_NAME if state_dir is not None else None
        self.arming: dict[str, Override] = {}
        self.bypassed: dict[str, Override] = {}  # "device:channel"
        self.out_of_service: dict[str, Override] = {}  # device id
        self._load()

    # -- questions ------------------------------------------------------------------

    def armed(self, group: str, now: float | None = None) -> bool:
        """Whether a group is armed now (a hand-made state first, then its schedule)."""
        now = self._clock.time() if now is None else now
        override = self.arming.get(group)
        if override is not None and override.live(now):
            return bool(override.armed)
        entry = self.groups.get(group)
        return entry is not None and entry[1].armed_at(now)

    def hold_back(self, rule: str, device: str, channel: int | None, now: float) -> str | None:
        """Why an alarm of this device/input may not be raised now (None: it may)."""
        oos = self.out_of_service.get(device)
        if oos is not None and oos.live(now):
            return "out_of_service"
        if channel is not None:
            bypass = self.bypassed.get(f"{device}:{channel}")
            if bypass is not None and bypass.live(now):
                return "bypassed"
        return None

    def snapshot(self) -> dict[str, object]:
        """Everything, for the API and the console (expired entries left out)."""
        now = self._clock.time()
        groups = []
        for gid, (name, schedule) in self.groups.items():
            override = self.arming.get(gid)
            manual = override is not None and override.live(now)
            groups.append({"id": gid, "name": name, "schedule": schedule.text,
                           "armed": self.armed(gid, now),
                           "source": "manual" if manual else "schedule",
                           **({"by": override.by, "note": override.note, "until": override.until}
                              if manual and override else {})})
        return {
            "groups": groups,
            "bypassed": [{"input": k, **asdict(v)} for k, v in self.bypassed.items() if v.live(now)],
            "out_of_service": [{"device": k, **asdict(v)} for k, v in self.out_of_service.items()
                               if v.live(now)],
        }

    # -- changes (each logged and saved) ------------------------------------------------

    def set_armed(self, group: str, armed: bool, *, by: str, note: str,
                  until: float | None = None) -> Override:
        """Arm or disarm a group by hand until ``until`` (default: the schedule's next change)."""
        if group not in self.groups:
            raise KeyError(group)
        now = self._clock.time()
        if until is None:
            until = self.groups[group][1].next_change(now)
        override = self.arming[group] = Override(by, note, now, until, armed)
        log.warning("zone group %s %s by %s until %s: %s", group,
                    "ARMED" if armed else "DISARMED", by, _when(until), note)
        self._save()
        return override

    def bypass(self, device: str, channel: int, *, by: str, note: str, until: float) -> Override:
        """Hold back every alarm of one input until ``until``."""
        now = self._clock.time()
        override = self.bypassed[f"{device}:{channel}"] = Override(by, note, now, until)
        log.warning("input %s:%s BYPASSED by %s until %s: %s", device, channel, by, _when(until),
                    note)
        self._save()
        return override

    def end_bypass(self, device: str, channel: int, *, by: str) -> bool:
        """Take an input out of bypass now; False if it was not bypassed."""
        if self.bypassed.pop(f"{device}:{channel}", None) is None:
            return False
        log.warning("input %s:%s back in service (bypass ended by %s)", device, channel, by)
        self._save()
        return True

    def take_out_of_service(self, device: str, *, by: str, note: str,
                            until: float) -> Override:
        """Hold back every alarm of a device until ``until``; its readings still flow."""
        now = self._clock.time()
        override = self.out_of_service[device] = Override(by, note, now, until)
        log.warning("device %s OUT OF SERVICE by %s until %s: %s", device, by, _when(until), note)
        self._save()
        return override

    def return_to_service(self, device: str, *, by: str) -> bool:
        """End a device's out-of-service now; False if it was in service."""
        if self.out_of_service.pop(device, None) is None:
            return False
        log.warning("device %s back in service (by %s)", device, by)
        self._save()
        return True

    # -- the state file ----------------------------------------------------------------

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            self.arming = {k: Override(**v) for k, v in raw.get("arming", {}).items()
                           if k in self.groups}
            self.bypassed = {k: Override(**v) for k, v in raw.get("bypassed", {}).items()}
            self.out_of_service = {k: Override(**v)
                                   for k, v in raw.get("out_of_service", {}).items()}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            # Losing hand-made states errs on the safe side: alarms are raised again.
            log.error("protection state %s unreadable (%s); starting with none", self.path, exc)
            self.arming, self.bypassed, self.out_of_service = {}, {}, {}

    def _save(self) -> None:
        if self.path is None:
            return
        now = self._clock.time()
        body = {name: {k: asdict(v) for k, v in table.items() if v.live(now)}
                for name, table in (("arming", self.arming), ("bypassed", self.bypassed),
                                    ("out_of_service", self.out_of_service))}
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(body, f, allow_nan=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.error("cannot save protection state to %s: %s (kept in memory)", self.path, exc)


def _when(ts: float | None) -> str:
    return "further notice" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))
