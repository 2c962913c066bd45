"""Replicas of one hub share operators' actions on the hub's own alarms (gateway offline):
an ack or a shelve on one shows on the other, on one started later, and its webhook is
heard once; the shared state is emptied when the alarm ends; garbage on the topic is
skipped and counted. A real Mosquitto; one replica as a process, the others in the test."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import aiohttp
import aiomqtt
import pytest
import yaml

from gateway.alarms.alarm import iso
from gateway.alarms.manager import AlarmCommandRefused, AlarmManager, Transition
from gateway.console.passwords import hash_password
from gateway.console.users import UsersFile
from gateway.hub.alarm_sync import HubAlarmSync, alarm_key
from gateway.hub.config import load_hub_config
from gateway.hub.service import Hub
from gateway.hub.watch import RULE
from webhook_receiver import Receiver
from harness import wait_until

HUB = "north-room"
TOPICS = f"community/_hub/{HUB}/alarms/"


class Clock:
    def __init__(self, now: float):
        self.now = now

    def time(self) -> float:
        return self.now


def info(site: str, ts: str) -> bytes:
    return json.dumps({"site": site, "name": site, "health_interval": 1, "ts": ts, "hierarchy": {
        "subdistrict": "Riverside", "community": "North", "compound": "N1"}}).encode()


def health(site: str, ts: str) -> bytes:
    return json.dumps({"site": site, "ts": ts, "interval": 1}).encode()


def replica_file(tmp_path: Path, port: int, client_id: str, hook: str,
                 http_port: int | None = None) -> Path:
    raw = {"hub": {"id": HUB},
           "broker": {"host": "127.0.0.1", "port": port, "keepalive": 5, "client_id": client_id},
           "scope": {"communities": ["North"]},
           "state_dir": str(tmp_path / f"{client_id}-state"),
           "alarms": {"tick_interval": 0.1},
           "webhooks": [{"url": hook, "max_retry_interval": 1}]}
    if http_port is not None:
        raw["http"] = {"listen": f"127.0.0.1:{http_port}"}
    path = tmp_path / f"{client_id}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def publish(port: int, messages: list[tuple[str, bytes]], retain: bool = True) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1, retain=retain)


async def retained_states(port: int) -> dict[str, bytes]:
    """The retained messages under the shared-state topics now: a probe published after
    the subscription comes back after every retained message (the broker keeps order)."""
    found: dict[str, bytes] = {}
    probe = f"community/_probe/{time.monotonic_ns()}"
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(TOPICS + "+", qos=1)
        await client.subscribe(probe, qos=1)
        await client.publish(probe, b"x", qos=1)
        async for message in client.messages:
            if str(message.topic) == probe:
                return found
            found[str(message.topic)] = bytes(message.payload)  # type: ignore[arg-type]
    return found


def own_alarm(hub: Hub):
    return hub.alarms.find(RULE, "n-b1", None)


@contextlib.asynccontextmanager
async def running(hub: Hub):
    task = asyncio.create_task(hub.run(), name=f"hub {hub.config.client_id}")
    try:
        yield hub
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def gateway_goes_offline(port: int) -> float:
    now = time.time()
    await publish(port, [("community/n-b1/info", info("n-b1", iso(now))),
                         ("community/n-b1/status", b"online"),
                         ("community/n-b1/health", health("n-b1", iso(now)))])
    return now


async def api_alarms(session: aiohttp.ClientSession, http_port: int) -> list[dict]:
    try:
        async with session.get(f"http://127.0.0.1:{http_port}/api/alarms") as response:
            return (await response.json())["alarms"] if response.status == 200 else []
    except aiohttp.ClientError:
        return []


async def until_api(session, http_port: int, predicate, timeout: float, what: str) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = [r for r in await api_alarms(session, http_port) if r.get("origin") == "hub"]
        if predicate(rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}: {rows}")
        await asyncio.sleep(0.05)


async def acked_by(hub: Hub) -> list[str]:
    """Who acked, from the hub's history (what is queued for it written first)."""
    await hub.history.flush()
    return [t["transition"]["by"] for t in await hub.view.search_history({"event": "acked"})]


# -- two replicas, one broker, one receiver ------------------------------------------------


@pytest.mark.integration
async def test_an_ack_and_a_shelve_on_one_replica_show_on_the_other(tmp_path, mosquitto,
                                                                     free_port) -> None:
    """hub-a a process (the webhook sender), hub-b in the test: the guard acks and shelves
    on hub-b; hub-a's API shows both within a second, each webhook is heard once, and the
    alarm's end empties the retained state."""
    port, http_a = mosquitto.port, free_port()
    async with Receiver() as receiver, aiohttp.ClientSession() as session:
        a = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "hub",
            str(replica_file(tmp_path, port, "hub-a", receiver.url, http_a)),
            stderr=asyncio.subprocess.DEVNULL, env=dict(os.environ))
        try:
            b = Hub(load_hub_config(replica_file(tmp_path, port, "hub-b", receiver.url)))
            async with running(b):
                await wait_until(lambda: b.replicas.peers == {"hub-a"} and b.link.synced.is_set(),
                                 30, "both replicas on the broker")
                now = await gateway_goes_offline(port)
                await wait_until(lambda: "n-b1" in b.live.sites and b.live.sites["n-b1"].health,
                                 10, "the gateway at hub-b")
                await publish(port, [("community/n-b1/status", b"offline")])
                await wait_until(lambda: own_alarm(b), 10, "the alarm at hub-b")
                await until_api(session, http_a, lambda rows: len(rows) == 1, 10,
                                "the alarm at hub-a")
                alarm_b = own_alarm(b)

                # the guard acks on hub-b (its console / API answers as before)
                answer = await b.view.apply_command(site="n-b1", alarm_id=alarm_b.id,
                                                    command="ack", body={"note": "on my way"},
                                                    by="wang")
                assert answer["acked"] is True
                [row] = await until_api(session, http_a, lambda rows: rows and rows[0]["acked"],
                                        10, "the ack at hub-a")
                assert row["state"] == "active"
                async with session.get(f"http://127.0.0.1:{http_a}/api/history",
                                       params={"event": "acked"}) as response:
                    [acked] = (await response.json())["transitions"]
                assert acked["transition"]["by"] == "wang"
                assert acked["transition"]["note"] == "on my way"

                # shelve on hub-b: hub-a shelves to the same end
                await b.view.apply_command(site="n-b1", alarm_id=alarm_b.id, command="shelve",
                                           body={"minutes": 30}, by="li")
                [row] = await until_api(session, http_a,
                                        lambda rows: rows and rows[0]["shelved_until"], 10,
                                        "the shelve at hub-a")
                assert row["shelved_until"] == iso(own_alarm(b).shelved_until)

                states = await retained_states(port)
                [(topic, payload)] = states.items()
                shared = json.loads(payload)
                assert topic == TOPICS + alarm_key(HUB, alarm_b.to_json())
                assert shared["acked"]["by"] == "wang" and shared["shelved"]["by"] == "li"
                assert shared["replica"] == "hub-b" and "id" not in shared

                # the gateway is back: the acked alarm closes on both, the state is emptied
                await publish(port, [("community/n-b1/status", b"online"),
                                     ("community/n-b1/health", health("n-b1", iso(now + 60)))])
                await until_api(session, http_a, lambda rows: rows == [], 10, "closed at hub-a")
                await wait_until(lambda: own_alarm(b) is None, 10, "closed at hub-b")
                await wait_until(lambda: "closed" in receiver.events(), 10, "the close, sent")
                await wait_until(lambda: b.webhooks[0].pending == 0, 10, "hub-b told of it")
                assert await retained_states(port) == {}
                # each transition heard once: the operator's from hub-b, the rest from hub-a
                assert receiver.events() == ["raised", "acked", "shelved", "closed"]
                assert b.webhooks[0].sent == 2
                assert b.alarm_sync.skipped.total() == 0
        finally:
            if a.returncode is None:
                a.terminate()
                await a.wait()


@pytest.mark.integration
async def test_a_replica_started_after_the_ack_shows_it_acked(tmp_path, mosquitto,
                                                              free_port) -> None:
    """The state is retained: hub-c, started (with no state of its own) after hub-a's
    operator acked and shelved, raises the alarm acked and shelved. An operator's unshelve
    on hub-c shows on hub-a, in its console's live feed too."""
    port = mosquitto.port
    async with Receiver() as receiver:
        path = replica_file(tmp_path, port, "hub-a", receiver.url, free_port())
        users = UsersFile(path=tmp_path / "hub-users.yaml")
        users.add("chen", "admin", hash_password("a long password"))
        raw = yaml.safe_load(path.read_text())
        path.write_text(yaml.safe_dump({**raw, "console": {"users_file": "hub-users.yaml"}}))
        a = Hub(load_hub_config(path))
        assert a.console_alarms is not None
        feed: list = []
        a.console_alarms.add_listener(lambda t: feed.append(t.to_json()))
        async with running(a):
            await wait_until(lambda: a.link.synced.is_set(), 20, "hub-a on the broker")
            await gateway_goes_offline(port)
            await wait_until(lambda: "n-b1" in a.live.sites and a.live.sites["n-b1"].health,
                             10, "the gateway at hub-a")
            await publish(port, [("community/n-b1/status", b"offline")])
            alarm = await wait_until(lambda: own_alarm(a), 10, "the alarm at hub-a")
            await a.view.apply_command(site="n-b1", alarm_id=alarm.id, command="ack", body={},
                                       by="wang")
            await a.view.apply_command(site="n-b1", alarm_id=alarm.id, command="shelve",
                                       body={"minutes": 10}, by="wang")
            deadline = time.monotonic() + 10
            while b'"shelved"' not in b"".join((await retained_states(port)).values()):
                assert time.monotonic() < deadline, "the state on the broker"
                await asyncio.sleep(0.05)

            c = Hub(load_hub_config(replica_file(tmp_path, port, "hub-c", receiver.url)))
            async with running(c):
                late = await wait_until(lambda: own_alarm(c), 10, "the alarm at hub-c")
                await wait_until(lambda: late.acked and late.shelved_until, 5,
                                 "hub-c's copy acked and shelved")
                assert iso(late.shelved_until) == iso(alarm.shelved_until)  # to the ms
                [row] = [r for r in c.view.open_alarms() if r["origin"] == "hub"]
                assert row["acked"] is True and row["shelved_until"] == iso(alarm.shelved_until)
                assert await acked_by(c) == ["wang"]

                await c.view.apply_command(site="n-b1", alarm_id=late.id, command="unshelve",
                                           body={}, by="zhou")
                await wait_until(lambda: own_alarm(a).shelved_until is None, 5,
                                 "the unshelve at hub-a")
                [shown] = [t for t in feed if t["event"] == "unshelved"]
                assert shown["by"] == "zhou" and shown["alarm"]["id"] == f"n-b1:{alarm.id}"
                assert own_alarm(a).acked
                assert c.alarm_sync.applied == 2 and a.alarm_sync.applied == 1
            # hub-c's operator's unshelve was sent by hub-c; hub-c's own copies of hub-a's
            # ack and shelve were not sent again
            events = receiver.events()
            assert events.count("acked") == 1 and events.count("shelved") == 1
            assert events.count("unshelved") == 1


@pytest.mark.integration
async def test_a_restart_comes_back_with_the_ack_and_the_shelve(tmp_path, mosquitto) -> None:
    """With its state: the same alarm, nothing applied twice (no new transition). Without
    it (a new machine): raised again, then acked and shelved from the retained state."""
    port = mosquitto.port
    async with Receiver() as receiver:
        path = replica_file(tmp_path, port, "hub-a", receiver.url)
        a = Hub(load_hub_config(path))
        async with running(a):
            await wait_until(lambda: a.link.synced.is_set(), 20, "hub-a on the broker")
            await gateway_goes_offline(port)
            await wait_until(lambda: "n-b1" in a.live.sites and a.live.sites["n-b1"].health,
                             10, "the gateway at hub-a")
            await publish(port, [("community/n-b1/status", b"offline")])
            alarm = await wait_until(lambda: own_alarm(a), 10, "the alarm")
            await a.view.apply_command(site="n-b1", alarm_id=alarm.id, command="ack", body={},
                                       by="wang")
            await a.view.apply_command(site="n-b1", alarm_id=alarm.id, command="shelve",
                                       body={"minutes": 10}, by="li")
            await wait_until(lambda: a.alarm_sync.published == 2, 10, "the state published")
            until = alarm.shelved_until

        again = Hub(load_hub_config(path))
        async with running(again):
            await wait_until(lambda: again.link.synced.is_set() and again.alarm_sync.received,
                             20, "hub-a back, the retained state in")
            restored = own_alarm(again)
            assert restored.id == alarm.id and restored.acked and restored.shelved_until == until
            assert again.alarm_sync.applied == 0 and again.alarms.transitions == 0

        for file in (tmp_path / "hub-a-state").iterdir():
            file.unlink()
        fresh = Hub(load_hub_config(path))
        async with running(fresh):
            raised = await wait_until(lambda: own_alarm(fresh), 20, "the alarm raised again")
            await wait_until(lambda: raised.acked and raised.shelved_until, 5,
                             "acked and shelved from the retained state")
            assert iso(raised.shelved_until) == iso(until)
            assert fresh.alarm_sync.applied == 2
        assert receiver.events().count("acked") == 1  # the restarts sent nothing again
        assert receiver.events().count("shelved") == 1


@pytest.mark.integration
async def test_garbage_and_forged_states_are_skipped_and_counted(tmp_path, mosquitto) -> None:
    """What cannot be this hub's alarm state changes nothing and is counted in /healthz;
    an ack from a genuine state still applies afterwards."""
    port = mosquitto.port
    async with Receiver() as receiver:
        b = Hub(load_hub_config(replica_file(tmp_path, port, "hub-b", receiver.url)))
        async with running(b):
            await wait_until(lambda: b.link.synced.is_set(), 20, "hub-b on the broker")
            await gateway_goes_offline(port)
            await wait_until(lambda: "n-b1" in b.live.sites and b.live.sites["n-b1"].health,
                             10, "the gateway at hub-b")
            await publish(port, [("community/n-b1/status", b"offline")])
            alarm = await wait_until(lambda: own_alarm(b), 10, "the alarm")
            key = alarm_key(HUB, alarm.to_json())
            genuine = {"v": 1, "hub": HUB, "site": "n-b1", "rule": RULE, "channel": None,
                       "last_seen": alarm.details["last_seen"], "replica": "hub-a",
                       "acked": {"by": "wang", "at": iso(time.time())}}
            forged = {**genuine, "acked": {"by": "mallory", "at": iso(time.time())}}
            await publish(port, [
                (TOPICS + key, b"{not json"),
                (TOPICS + key, json.dumps({**forged, "admin": True}).encode()),  # unknown field
                (TOPICS + key, json.dumps({**forged, "site": "n-b2"}).encode()),  # key mismatch
                (TOPICS + key, json.dumps({**forged, "hub": "south-room"}).encode()),
                (TOPICS + key, json.dumps({**forged, "acked": {"by": "x", "at": "soon"}}).encode()),
                (TOPICS + "not-a-key", json.dumps(forged).encode()),
            ], retain=False)
            # then a genuine state from another replica: it applies, and is not sent from here
            await publish(port, [(TOPICS + key, json.dumps(genuine).encode())], retain=False)
            await wait_until(lambda: own_alarm(b).acked, 10, "the genuine ack")
            # the broker keeps order: every bad one came (and was skipped) before it
            assert b.alarm_sync.skipped == {"not_json": 1, "fields": 2, "key": 2, "topic": 1}
            assert await acked_by(b) == ["wang"]
            ok, body = b.health()
            assert body["shared_alarm_states"]["skipped"] == 6
            assert b.alarm_sync.applied == 1 and b.alarm_sync.published == 0
            assert "acked" not in [t.event for t in b.webhooks[0]._queue]  # noqa: SLF001


# -- the parts, without a broker -----------------------------------------------------------


def test_shelve_until_takes_the_other_replicas_end() -> None:
    clock = Clock(1_800_000_000.0)
    got: list[Transition] = []
    alarms = AlarmManager(clock=clock, listeners=[got.append], max_shelve=3600)
    alarm = alarms.activate(rule=RULE, severity=2, device="n-b1", kind="gateway", channel=None,
                            location={}, message="offline", value=None, ts=clock.now)
    assert alarm is not None
    alarms.shelve_until(alarm.id, until=clock.now + 600.5, by="li", note="ladder")
    assert alarm.shelved_until == clock.now + 600.5 and alarm.next_escalation is None
    assert (got[-1].event, got[-1].by, got[-1].note) == ("shelved", "li", "ladder")
    with pytest.raises(AlarmCommandRefused):
        alarms.shelve_until(alarm.id, until=clock.now - 1, by="li")
    with pytest.raises(AlarmCommandRefused):
        alarms.shelve_until(alarm.id, until=clock.now + 3601, by="li")


def test_a_state_for_an_alarm_not_raised_yet_is_applied_when_it_is() -> None:
    """The other replica acked before this one's tick raised the alarm: kept, then applied;
    an ack of an earlier occurrence (another last_seen) is not."""
    clock = Clock(1_800_000_000.0)
    got: list[Transition] = []
    alarms = AlarmManager(clock=clock, listeners=[got.append])
    sync = HubAlarmSync(prefix="community", hub_id=HUB, client_id="hub-b", alarms=alarms,
                        clock=clock)
    sent: list[Transition] = []
    alarms.add_listener(sync.local_only(sent.append))
    alarms.add_listener(sync.on_transition)
    seen = "2026-12-01T08:00:01.000Z"
    state = {"v": 1, "hub": HUB, "site": "n-b1", "rule": RULE, "channel": None,
             "last_seen": seen, "replica": "hub-a", "acked": {"by": "wang", "at": iso(clock.now)}}
    key = alarm_key(HUB, {"rule": RULE, "device": "n-b1", "channel": None,
                          "details": {"last_seen": seen}})
    old = {**state, "last_seen": "2026-12-01T07:00:00.000Z"}
    old_key = alarm_key(HUB, {"rule": RULE, "device": "n-b1", "channel": None,
                              "details": {"last_seen": old["last_seen"]}})
    sync.on_message(TOPICS + old_key, json.dumps(old).encode())
    sync.on_message(TOPICS + key, json.dumps(state).encode())
    alarm = alarms.activate(rule=RULE, severity=2, device="n-b1", kind="gateway", channel=None,
                            location={}, message="offline", value=None, ts=clock.now,
                            details={"gateway": "offline", "last_seen": seen})
    assert alarm is not None and alarm.acked  # no loop running: applied at once
    assert [t.event for t in got] == ["raised", "acked"] and got[-1].by == "wang"
    assert [t.event for t in sent] == ["raised"]  # the ack is hub-a's to send
    assert sync.applied == 1 and not sync._outgoing  # noqa: SLF001  nothing published back
    sync.on_message(TOPICS + key, json.dumps(state).encode())  # again: nothing changes
    assert len(got) == 2 and sync.applied == 1


def test_a_new_occurrence_empties_the_old_state_and_needs_a_new_ack() -> None:
    """Without a last_seen every occurrence has the same key: the state of the first
    (an ack) is forgotten and emptied at the repeat, not applied to the second."""
    clock = Clock(1_800_000_000.0)
    alarms = AlarmManager(clock=clock)
    sync = HubAlarmSync(prefix="community", hub_id=HUB, client_id="hub-b", alarms=alarms,
                        clock=clock)
    alarms.add_listener(sync.on_transition)
    key = alarm_key(HUB, {"rule": RULE, "device": "n-b1", "channel": None, "details": {}})
    raise_it = dict(rule=RULE, severity=2, device="n-b1", kind="gateway", channel=None,
                    location={}, message="offline", value=None,
                    details={"gateway": "offline", "last_seen": None})
    alarm = alarms.activate(ts=clock.now, **raise_it)
    alarms.deactivate(rule=RULE, device="n-b1", channel=None, value=None, ts=clock.now + 1)
    assert alarm is not None and alarm.state == "cleared" and not alarm.acked
    state = {"v": 1, "hub": HUB, "site": "n-b1", "rule": RULE, "channel": None,
             "last_seen": None, "replica": "hub-a",
             "shelved": {"by": "li", "at": iso(clock.now + 2), "until": iso(clock.now + 600)}}
    clock.now += 2
    sync.on_message(TOPICS + key, json.dumps(state).encode())
    assert alarm.shelved_until is not None and sync.applied == 1
    clock.now += 1
    alarms.activate(ts=clock.now, **raise_it)  # the gateway is offline again
    assert alarm.count == 2 and not alarm.acked
    assert list(sync._outgoing) == [(TOPICS + key, b"")]  # noqa: SLF001
    # an ack of the new occurrence from hub-a applies
    sync.on_message(TOPICS + key, json.dumps(
        {**state, "acked": {"by": "wang", "at": iso(clock.now)}}).encode())
    assert alarm.acked and sync.applied == 2
