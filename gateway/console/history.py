"""Alarm history for the console: every transition, filtered on request.

The query keys are the console's history form: ``device``, ``rule``,
``severity``, ``event``, ``building``, ``q`` (text in the message, id, operator
or note), ``since`` (ISO 8601) and ``limit`` (default 200, at most 1000).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

EVENTS = frozenset({"raised", "repeated", "cleared", "acked", "closed", "reset", "shelved", "unshelved"})
DEFAULT_LIMIT = 200
MAX_LIMIT = 1000


def query_history(transitions: Iterable[dict[str, object]], query: Mapping[str, str]) -> list[dict[str, object]]:
    """The transitions matching ``query``, newest first; ValueError names a bad key."""
    unknown = set(query) - {"device", "rule", "severity", "event", "building", "q", "since", "limit"}
    if unknown:
        raise ValueError(f"unknown filter(s): {', '.join(sorted(unknown))}")
    device = query.get("device") or None
    rule = query.get("rule") or None
    event = query.get("event") or None
    building = query.get("building") or None
    text = (query.get("q") or "").strip().lower() or None
    since = query.get("since") or None
    try:
        severity = int(query["severity"]) if query.get("severity") else None
        limit = int(query.get("limit") or DEFAULT_LIMIT)
    except ValueError:
        raise ValueError("severity and limit must be whole numbers") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1..{MAX_LIMIT}")
    out: list[dict[str, object]] = []
    for t in reversed(list(transitions)):
        alarm = t["alarm"]
        assert isinstance(alarm, dict)
        if since is not None and str(t["ts"]) < since:
            break  # newest first: everything further is older
        if device and alarm.get("device") != device:
            continue
        if rule and alarm.get("rule") != rule:
            continue
        if event and t.get("event") != event:
            continue
        if severity is not None and alarm.get("severity") != severity:
            continue
        if building and str((alarm.get("location") or {}).get("building")) != building:
            continue
        if text and not any(text in str(v).lower() for v in (
                alarm.get("message"), alarm.get("id"), alarm.get("device"), t.get("by"), t.get("note"))):
            continue
        out.append(t)
        if len(out) >= limit:
            break
    return out
