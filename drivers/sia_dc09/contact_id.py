"""Ademco Contact ID events as carried in ``ADM-CID`` frames: ``#acct|QEEE GG CCC``.

Q is the qualifier (1 new event or opening, 3 restore or closing, 6 previous event
still present), EEE the event code, GG the group (partition), CCC the zone or the
user number. Field layout as in pysiaalarm's ``adm_content_regex`` and in the
Contact ID description quoted by open receivers (e.g. a Java receiver's comment:
"Q Qualifier, 1=New event or opening, 3=New restore or closing, 6=Previous event;
XYZ Class code and event code; GG Group number; CCC Zone codes or user ID").

Event names are the gateway's vocabulary, so the alarm rules of a site read the
same whatever transport reported the event: ``emergency`` (a one-key button or a
panic), ``fire``, ``burglary`` (an intrusion zone), ``tamper``, ``mains_loss``... A
restore is the same name with ``_restore``; rules clear on it (``clear_on``).
Codes not in the table become ``cid_<EEE>`` so a site can still write a rule for them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.device_faults import FaultSource

_CID = re.compile(r"^#?(?P<account>[0-9A-Fa-f]{3,16})?\|?(?P<q>[136])(?P<code>\d{3}) "
                  r"(?P<group>\d{2}) (?P<zone>\d{3})$")

QUALIFIERS = {"1": "new", "3": "restore", "6": "previous"}

#: Contact ID event code -> the gateway's event name (SIA DC-05 code list).
EVENT_NAMES: dict[str, str] = {
    "100": "medical",
    "101": "emergency",  # personal emergency pendant
    "110": "fire",
    "111": "fire",  # smoke
    "114": "fire",  # heat
    "120": "emergency",  # panic: a one-key alarm button
    "121": "duress",
    "122": "emergency",  # silent panic
    "123": "emergency",  # audible panic
    "130": "burglary",
    "131": "burglary",  # perimeter
    "132": "burglary",  # interior
    "133": "burglary",  # 24-hour zone
    "134": "burglary",  # entry/exit
    "137": "tamper",
    "144": "tamper",  # sensor tamper
    "145": "tamper",  # expansion module tamper
    "150": "burglary",  # 24-hour non-burglary (e.g. a key area)
    "301": "mains_loss",
    "302": "low_battery",
    "311": "battery_missing",
    "333": "fault",  # expansion module failure
    "350": "communication_fault",
    "373": "fire_fault",  # fire loop trouble
    "380": "fault",  # sensor trouble
    "383": "tamper",  # sensor tamper
    "384": "low_battery",  # RF sensor low battery
    "401": "disarm",  # open/close by user: qualifier 1 = disarmed (opening), 3 = armed
    "402": "disarm",  # group open/close
    "403": "disarm",  # automatic open/close
    "407": "disarm",  # remote arm/disarm
    "570": "bypass",
    "602": "test",  # periodic test report
}

#: Events that are faults of the panel or its devices: device_fault alarms until restored.
FAULT_NAMES = {"mains_loss": "mains power lost", "low_battery": "low battery",
               "battery_missing": "battery missing", "fault": "device trouble",
               "communication_fault": "communication trouble", "fire_fault": "fire loop trouble"}
FAULTS = tuple(FaultSource(event=name, clear_on=f"{name}_restore", fault=meaning)
               for name, meaning in FAULT_NAMES.items())


@dataclass(frozen=True, slots=True)
class ContactIdEvent:
    """One Contact ID event: what happened, where, and whether it is a restore."""

    qualifier: str  # "new", "restore" or "previous"
    code: str  # three digits, e.g. "130"
    group: int
    zone: int  # zone, or the user number for open/close events
    name: str  # the gateway's event name, ``_restore`` appended for restores

    @property
    def attrs(self) -> dict[str, object]:
        """The details an alarm carries (JSON-safe)."""
        return {"code": f"{_Q[self.qualifier]}{self.code}", "qualifier": self.qualifier,
                "group": self.group, "zone": self.zone}


_Q = {"new": "1", "restore": "3", "previous": "6"}


def parse_contact_id(data: str) -> ContactIdEvent:
    """The data of an ``ADM-CID`` frame -> the event; ``ValueError`` if it is not one."""
    match = _CID.match(data.strip())
    if match is None:
        raise ValueError(f"not Contact ID data: {data[:60]!r}")
    qualifier = QUALIFIERS[match["q"]]
    base = EVENT_NAMES.get(match["code"], f"cid_{match['code']}")
    if base == "disarm":
        name = "disarm" if qualifier == "new" else "arm"  # opening = disarmed, closing = armed
    else:
        name = base + "_restore" if qualifier == "restore" else base
    return ContactIdEvent(qualifier=qualifier, code=match["code"], group=int(match["group"]),
                          zone=int(match["zone"]), name=name)


def event_names() -> frozenset[str]:
    """Every name this module can produce (for checking a site's rules)."""
    names: set[str] = set()
    for base in EVENT_NAMES.values():
        if base == "disarm":
            names |= {"arm", "disarm"}
        else:
            names |= {base, base + "_restore"}
    return frozenset(names)
