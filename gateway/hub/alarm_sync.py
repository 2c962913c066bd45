"""Operators' actions on the hub's own alarms, shared by the replicas of one hub.

Every replica raises the same hub alarms (gateway.hub.watch), but an operator's ack,
shelve, unshelve or reset reaches one replica only: the one whose console received it.
That replica publishes the alarm's operator state, retained, on

    {prefix}/_hub/{hub id}/alarms/{key}

and every replica applies what it receives to its own copy. ``key`` is made of what
all replicas agree on (``alarm_key``: the hub id, the alarm's rule, site and channel,
and the gateway's ``last_seen`` at this occurrence, the same input as the webhooks'
Idempotency-Key), never of a replica's own alarm id or clock. A new occurrence of the
alarm (``repeated``) has a new ``last_seen``, so a new key, and needs a new ack.

- Retained, so a replica started later (or restarted without its state) applies it
  when it raises the alarm; a state for an alarm not raised here yet is kept until it is.
- Emptied (an empty retained payload) when the alarm ends: every replica whose alarm
  closes empties it (the same empty payload, so it does not matter which is first). A
  command that closes the alarm (an ack of a cleared alarm, a reset) publishes the
  state first, then the empty payload: the others close theirs on the first.
- Idempotent: an ack already made, a shelve to the same end, or a replica's own
  message coming back changes nothing. Shelving is last-writer-wins by the action's
  time (``at``), so an older message never undoes a newer shelve or unshelve.
- What cannot be a hub alarm's state (a payload that is not JSON, unknown fields, a key
  that does not match its contents, another hub) is skipped, counted and logged.

Webhooks: the replica that received the command sends its webhooks (with their own
Idempotency-Key, as before); the transitions the others make from the shared state are
not sent again (``local_only`` wraps their webhook listeners). That includes the end of
a shelving made on another replica: its replica sends it.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import re
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.alarms.alarm import iso
from gateway.alarms.manager import AlarmCommandRefused, AlarmManager, Transition, UnknownAlarm
from gateway.backoff import Backoff
from gateway.hub.live import parse_ts
from gateway.hub.watch import RULE

log = logging.getLogger(__name__)

KEY = re.compile(r"[0-9a-f]{32}")
OPERATOR_EVENTS = frozenset({"acked", "shelved", "unshelved", "reset"})
MAX_STATES = 10_000  # retained states kept for alarms (most not raised here yet), at most
MAX_OUTGOING = 10_000  # states waiting for the broker, at most (then counted, dropped)
LOGGED_SKIPS = 20  # skips logged one by one; then every 1000th


def alarm_key(hub_id: str, alarm: dict[str, Any]) -> str:
    """The alarm's occurrence, the same on every replica (see the module's docstring)."""
    details = alarm.get("details") if isinstance(alarm.get("details"), dict) else {}
    parts = [hub_id, alarm.get("rule"), alarm.get("device"), alarm.get("channel"),
             details.get("last_seen")]  # type: ignore[union-attr]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]


def _when(value: str) -> str:
    if parse_ts(value) is None:
        raise ValueError("not an ISO 8601 time")
    return value


class Action(BaseModel):
    """Who did it, when (ISO 8601) and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    by: str = Field(min_length=1, max_length=200)
    at: str
    note: str | None = Field(default=None, max_length=1000)

    _at = field_validator("at")(_when)


class Shelving(Action):
    until: str

    _until = field_validator("until")(_when)


class SharedState(BaseModel):
    """The payload: which alarm (what its key is made of) and what operators did to it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1]
    hub: str
    site: str
    rule: str
    channel: int | None
    last_seen: str | None
    replica: str
    acked: Action | None = None
    shelved: Shelving | None = None
    unshelved: Action | None = None
    reset: Action | None = None

    def key(self) -> str:
        return alarm_key(self.hub, {"rule": self.rule, "device": self.site,
                                    "channel": self.channel,
                                    "details": {"last_seen": self.last_seen}})


class HubAlarmSync:
    """Publishes this replica's operators' actions on hub alarms; applies the others'."""

    def __init__(self, *, prefix: str, hub_id: str, client_id: str, alarms: AlarmManager,
                 clock):
        self.hub_id = hub_id
        self.client_id = client_id
        self.topic_prefix = f"{prefix}/_hub/{hub_id}/alarms/"
        self.alarms = alarms
        self._clock = clock
        self._states: OrderedDict[str, SharedState] = OrderedDict()  # by key, from the broker
        self._shelve_time: dict[str, float] = {}  # key -> time of the newest shelve/unshelve
        self._key_of: dict[str, str] = {}  # open alarm id -> its key
        self._remote_shelves: set[str] = set()  # alarm ids shelved from another replica
        self._applying = False  # transitions made now come from another replica
        self._outgoing: deque[tuple[str, bytes]] = deque()
        self._wake = asyncio.Event()
        self.received = 0
        self.applied = 0  # actions applied from another replica
        self.published = 0
        self.dropped = 0  # states that could not be queued or kept (counted, logged)
        self.skipped: collections.Counter[str] = collections.Counter()

    # -- the MQTT side (gateway.hub.service wires these to gateway.hub.link) ----------------

    def handles(self, topic: str) -> bool:
        return topic.startswith(self.topic_prefix)

    async def on_connect(self, client) -> None:
        """Subscribe (before the link's sync marker, so the retained states are in by the
        time alarms are judged). The broker sends every retained state again."""
        self._states.clear()
        for alarm in self.alarms.open_alarms():
            self._key_of.setdefault(alarm.id, alarm_key(self.hub_id, alarm.to_json()))
        await client.subscribe(self.topic_prefix + "+", qos=1)

    def on_message(self, topic: str, payload: bytes) -> None:
        self.received += 1
        key = topic[len(self.topic_prefix):]
        if not KEY.fullmatch(key):
            self._skip("topic", f"{topic}: not a hub alarm's key")
            return
        if not payload:  # the alarm ended
            self._states.pop(key, None)
            return
        try:
            body = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            self._skip("not_json", f"{topic}: payload is not JSON")
            return
        try:
            state = SharedState.model_validate(body)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'payload'}: "
                f"{'unknown field' if e['type'] == 'extra_forbidden' else e['msg']}"
                for e in exc.errors()[:5])
            self._skip("fields", f"{topic}: {problems}")
            return
        if state.hub != self.hub_id or state.rule != RULE or state.key() != key:
            self._skip("key", f"{topic}: the key does not match a hub alarm of {self.hub_id} "
                              f"({state.hub}, {state.rule}, {state.site})")
            return
        self._states[key] = state
        self._states.move_to_end(key)
        while len(self._states) > MAX_STATES:
            old, _ = self._states.popitem(last=False)
            self.dropped += 1
            log.warning("hub %s: more than %d shared alarm states; the oldest (%s) is forgotten",
                        self.hub_id, MAX_STATES, old)
        alarm_id = self._open_with_key(key)
        if alarm_id is not None:
            self._apply(alarm_id, state)

    async def run(self, publish: Callable[..., Awaitable[None]],
                  ready: Callable[[], Awaitable[Any]]) -> None:
        """Publish the states in order (retained, QoS 1); one that cannot go now waits for
        the next connection (``ready``), never dropped."""
        backoff = Backoff(initial=0.2, cap=5.0)
        while True:
            while not self._outgoing:
                self._wake.clear()
                await self._wake.wait()
            topic, payload = self._outgoing[0]
            try:
                await publish(topic, payload, retain=True)
            except ConnectionError:
                await asyncio.sleep(backoff.next_delay())
                await ready()
                continue
            backoff.reset()
            self._outgoing.popleft()
            self.published += 1

    # -- the alarm side ----------------------------------------------------------------------

    def local_only(self, listener: Callable[[Transition], None]) -> Callable[[Transition], None]:
        """``listener`` (a webhook's) without the transitions another replica's operator
        caused here: that replica sends them (see the module's docstring)."""
        def filtered(t: Transition) -> None:
            if self._applying:
                return
            if (t.event == "unshelved" and t.by is None
                    and t.alarm.get("id") in self._remote_shelves):
                return  # the end of another replica's shelving: that replica announces it
            listener(t)
        return filtered

    def on_transition(self, t: Transition) -> None:
        """Alarm listener (after the webhooks'): publish this replica's operators' actions,
        empty the state of an alarm that ended, apply a state kept for a new alarm."""
        alarm_id = str(t.alarm.get("id"))
        key = alarm_key(self.hub_id, t.alarm)
        if t.event in ("unshelved", "closed"):
            self._remote_shelves.discard(alarm_id)
        if t.event in ("raised", "repeated"):
            old = self._key_of.get(alarm_id)
            self._key_of[alarm_id] = key
            if t.event == "repeated" and old is not None:
                # a new occurrence: the old one's state is over (the same key only without a
                # last_seen: its old ack must not count for the new occurrence either)
                self._forget(old)
                self._queue(old, b"")
            if key in self._states:
                # after the transition's other listeners: this one comes first for them
                _soon(self._apply_kept, alarm_id, key)
        elif t.event == "closed":
            self._key_of.pop(alarm_id, None)
            self._forget(key)
            # every replica whose alarm ends empties it (the same payload, whoever is
            # first); one closed by another replica's command: that replica empties it
            if not self._applying:
                self._queue(key, b"")
        elif t.event in OPERATOR_EVENTS and t.by is not None and not self._applying:
            if t.event in ("shelved", "unshelved"):
                self._shelve_time[key] = parse_ts(iso(t.ts)) or t.ts
                self._remote_shelves.discard(alarm_id)
            self._queue(key, json.dumps(self._state_of(t), ensure_ascii=False).encode())

    def counts(self) -> dict[str, Any]:
        """For /healthz."""
        return {"received": self.received, "applied": self.applied,
                "published": self.published, "skipped": sum(self.skipped.values()),
                "dropped": self.dropped, "waiting": len(self._outgoing)}

    # -- inside ------------------------------------------------------------------------------

    def _state_of(self, t: Transition) -> dict[str, Any]:
        """The alarm's operator state after this replica's operator acted on it: the ack
        and the shelving as the alarm's own history records them."""
        alarm, record = t.alarm, t.record or {}
        details = alarm.get("details") if isinstance(alarm.get("details"), dict) else {}
        out: dict[str, Any] = {"v": 1, "hub": self.hub_id, "site": alarm.get("device"),
                               "rule": alarm.get("rule"), "channel": alarm.get("channel"),
                               "last_seen": details.get("last_seen"),  # type: ignore[union-attr]
                               "replica": self.client_id}
        history = record.get("history") if isinstance(record.get("history"), list) else []
        this = {"by": t.by, "at": iso(t.ts), "note": t.note}
        if alarm.get("acked"):
            out["acked"] = this if t.event in ("acked", "reset") else _last(history, "acked") \
                or {"by": t.by, "at": iso(t.ts), "note": None}
        if record.get("shelved_until") is not None:
            shelving = this if t.event == "shelved" else _last(history, "shelved") \
                or {"by": t.by, "at": iso(t.ts), "note": None}
            out["shelved"] = {**shelving, "until": iso(float(record["shelved_until"]))}
        elif t.event == "unshelved":
            out["unshelved"] = this
        if t.event == "reset":
            out["reset"] = this
        return out

    def _apply(self, alarm_id: str, state: SharedState) -> None:
        """Bring this replica's copy to ``state`` (what is already so changes nothing)."""
        key = state.key()
        self._applying = True
        try:
            alarm = self.alarms.get(alarm_id)
            if state.reset is not None or (state.acked is not None and not alarm.acked):
                action = state.reset or state.acked
                assert action is not None
                self._ack_or_reset(alarm_id, action, reset=state.reset is not None)
            if self.alarms.find(alarm.rule, alarm.device, alarm.channel) is not alarm:
                return  # closed by it
            shelving = state.shelved or state.unshelved
            at = parse_ts(shelving.at) if shelving is not None else None
            if shelving is None or at is None or at <= self._shelve_time.get(key, float("-inf")):
                return  # nothing about shelving, or older than what this replica did or applied
            self._shelve_time[key] = at
            if state.shelved is not None:
                until = parse_ts(state.shelved.until)
                if until is None or (alarm.shelved_until is not None
                                     and abs(until - alarm.shelved_until) < 0.001):
                    return  # already so (the payload's times are to the millisecond)
                try:
                    self.alarms.shelve_until(alarm_id, until=until, by=state.shelved.by,
                                             note=state.shelved.note)
                except AlarmCommandRefused as exc:
                    log.info("hub %s: shelving of %s from %s not applied: %s", self.hub_id,
                             alarm_id, state.replica, exc.reason)
                    return
                self._remote_shelves.add(alarm_id)
                self.applied += 1
            elif alarm.shelved_until is not None and state.unshelved is not None:
                self.alarms.unshelve(alarm_id, by=state.unshelved.by, note=state.unshelved.note)
                self.applied += 1
        except UnknownAlarm:
            pass  # closed meanwhile: nothing left to apply
        finally:
            self._applying = False

    def _ack_or_reset(self, alarm_id: str, action: Action, *, reset: bool) -> None:
        if reset:
            try:
                self.alarms.reset(alarm_id, by=action.by, note=action.note)
                self.applied += 1
                return
            except AlarmCommandRefused:
                pass  # its condition is still present here (this replica lags): ack it
        if not self.alarms.get(alarm_id).acked:
            self.alarms.ack(alarm_id, by=action.by, note=action.note)
            self.applied += 1

    def _apply_kept(self, alarm_id: str, key: str) -> None:
        state = self._states.get(key)
        if state is not None and self._key_of.get(alarm_id) == key:
            self._apply(alarm_id, state)

    def _open_with_key(self, key: str) -> str | None:
        for alarm_id, alarm_key_ in self._key_of.items():
            if alarm_key_ == key:
                return alarm_id
        return None

    def _forget(self, key: str) -> None:
        self._states.pop(key, None)
        self._shelve_time.pop(key, None)

    def _queue(self, key: str, payload: bytes) -> None:
        if len(self._outgoing) >= MAX_OUTGOING:
            self.dropped += 1
            log.error("hub %s: %d alarm states wait for the broker; the state of %s is dropped",
                      self.hub_id, MAX_OUTGOING, key)
            return
        self._outgoing.append((self.topic_prefix + key, payload))
        self._wake.set()

    def _skip(self, reason: str, message: str) -> None:
        self.skipped[reason] += 1
        total = sum(self.skipped.values())
        if total <= LOGGED_SKIPS or total % 1000 == 0:
            log.warning("hub %s: shared alarm state skipped (%d so far): %s", self.hub_id,
                        total, message)


def _last(history: list[Any], event: str) -> dict[str, Any] | None:
    """The newest ``event`` entry of the alarm's history, as an Action's fields."""
    for entry in reversed(history):
        if isinstance(entry, dict) and entry.get("event") in ("raised", "repeated"):
            return None  # an action before this occurrence does not count
        if isinstance(entry, dict) and entry.get("event") == event and entry.get("by"):
            return {"by": entry["by"], "at": entry["ts"], "note": entry.get("note")}
    return None


def _soon(callback: Callable[..., None], *args: Any) -> None:
    try:
        asyncio.get_running_loop().call_soon(callback, *args)
    except RuntimeError:  # no loop (a synchronous caller): now
        callback(*args)
