"""Two replicas of one hub on one broker: one sends the webhooks, with an Idempotency-Key
that is the same on both; the other takes over when the sender dies (its last will)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import aiomqtt
import pytest
import yaml
from aiohttp import web

from gateway.alarms.alarm import iso
from gateway.alarms.manager import AlarmManager, Transition
from gateway.alarms.webhook import WebhookSender
from gateway.config.models import WebhookConfig
from gateway.hub.config import HubAlarms, HubScope, load_hub_config
from gateway.hub.live import LivePicture
from gateway.hub.replicas import delivery_key
from gateway.hub.service import Hub
from gateway.hub.watch import GatewayWatch
from webhook_receiver import Receiver
from harness import wait_until


class Clock:
    def __init__(self, now: float):
        self.now = now

    def time(self) -> float:
        return self.now


def info(site: str, ts: str = "2026-12-01T08:00:00.000Z") -> bytes:
    return json.dumps({"site": site, "name": site, "health_interval": 1, "ts": ts, "hierarchy": {
        "subdistrict": "Riverside", "community": "North", "compound": "N1"}}).encode()


def health(site: str, ts: str) -> bytes:
    return json.dumps({"site": site, "ts": ts, "interval": 1}).encode()


# -- the key is the same on every replica -------------------------------------------------


def test_two_replicas_key_the_same_transitions_alike() -> None:
    """Each replica has its own clock, alarm ids and tick times; the keys still match."""

    def replica(start: float):
        clock = Clock(start)
        live = LivePicture(prefix="community", scope=HubScope(all=True), clock=clock)
        got: list[Transition] = []
        alarms = AlarmManager(clock=clock, listeners=[got.append])
        watch = GatewayWatch(live=live, alarms=alarms, config=HubAlarms())
        return clock, live, watch, alarms, got

    replicas = [replica(1_800_000_000.0), replica(1_800_000_000.7)]
    script = [("info", info("n-b1")), ("status", b"online"),
              ("health", health("n-b1", "2026-12-01T08:00:01.000Z")),
              ("status", b"offline"),  # raised
              ("status", b"online"), ("health", health("n-b1", "2026-12-01T08:05:00.000Z")),  # cleared
              ("status", b"offline"),  # repeated
              ]
    for suffix, payload in script:
        for clock, live, watch, _, _ in replicas:
            clock.now += 1.3
            live.handle(f"community/n-b1/{suffix}", payload)
            watch.check(clock.now)
    (_, _, _, alarms_a, got_a), (_, _, _, alarms_b, got_b) = replicas
    assert [t.event for t in got_a] == [t.event for t in got_b] == ["raised", "cleared", "repeated"]
    assert got_a[0].alarm["id"] != got_b[0].alarm["id"]  # each replica's own ids and times
    assert got_a[0].ts != got_b[0].ts
    keys_a = [delivery_key("north-room", t) for t in got_a]
    keys_b = [delivery_key("north-room", t) for t in got_b]
    assert keys_a == keys_b and all(shared for _, shared in keys_a)
    assert len({k for k, _ in keys_a}) == 3  # one key per transition
    assert got_a[0].alarm["details"]["last_seen"] == "2026-12-01T08:00:01.000Z"
    assert got_a[2].alarm["details"]["last_seen"] == "2026-12-01T08:05:00.000Z"
    # another hub id never shares a key; an operator's ack is this replica's own
    assert delivery_key("south-room", got_a[0])[0] != keys_a[0][0]
    alarms_a.ack(got_a[0].alarm["id"], by="wang")
    assert got_a[-1].event == "acked" and delivery_key("north-room", got_a[-1])[1] is False


async def test_a_held_sender_keeps_shared_entries_until_told_or_released() -> None:
    """The standby's queue: shared transitions wait; one the sender delivered is forgotten;
    an operator's own goes at once; a takeover sends what is left, key and all."""
    received: list[tuple[str | None, str]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((request.headers.get("Idempotency-Key"), (await request.json())["event"]))
        return web.Response(text="ok")

    app = web.Application()
    app.add_routes([web.post("/hook", hook)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    done: list[str] = []
    sender = WebhookSender(config=WebhookConfig(url=f"http://127.0.0.1:{port}/hook"),
                           delivery_key=lambda t: delivery_key("h", t), on_done=done.append)
    sender.hold(True)
    alarm = {"id": "a1", "rule": "gateway_offline", "device": "n-b1", "channel": None,
             "severity": 2, "count": 1, "escalated": 0, "first_ts": iso(1.0),
             "details": {"last_seen": "2026-12-01T08:00:01.000Z"}}
    task = asyncio.create_task(sender.run())
    try:
        for event in ("raised", "cleared"):
            sender.on_transition(Transition(event, alarm, 2.0))
        sender.on_transition(Transition("acked", alarm, 3.0, by="wang"))
        await wait_until(lambda: received, 5, "the operator's ack")
        assert [e for _, e in received] == ["acked"] and sender.pending == 2
        raised_key = delivery_key("h", Transition("raised", alarm, 9.0))[0]
        assert sender.forget(raised_key) and sender.pending == 1
        assert not sender.forget(raised_key)
        sender.hold(False)  # this replica takes over
        await wait_until(lambda: len(received) == 2, 5, "the held clear")
        assert received[1] == (delivery_key("h", Transition("cleared", alarm, 9.0))[0], "cleared")
        assert done == [received[0][0], received[1][0]] and sender.forgotten == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await runner.cleanup()


async def test_a_peer_whose_will_was_lost_is_taken_as_gone_once_it_falls_silent() -> None:
    """A will can be lost with a broker node: a peer not heard for three heartbeats no
    longer holds this replica back; one whose heartbeats keep coming does."""
    from gateway.hub.replicas import Replicas

    replicas = Replicas(prefix="community", hub_id="north-room", client_id="hub-b",
                        heartbeat=0.05)
    online = json.dumps({"state": "online"}).encode()
    replicas.on_message("community/_hub/north-room/replicas/hub-a", online)
    replicas.on_message("community/_hub/north-room/replicas/hub-c", online)
    assert replicas.peers == {"hub-a", "hub-c"} and not replicas.update(True)

    def hub_c_beats_and_hub_a_is_silent() -> bool:
        replicas.on_message("community/_hub/north-room/replicas/hub-c", online)
        return replicas.update(True)

    await wait_until(hub_c_beats_and_hub_a_is_silent, 5, "hub-a taken as gone")
    assert replicas.peers == {"hub-c"} and replicas.is_sender
    # a will (or an emptied retained presence) takes a peer off at once
    replicas.on_message("community/_hub/north-room/replicas/hub-a", online)
    assert not replicas.update(True)
    replicas.on_message("community/_hub/north-room/replicas/hub-a", b"")
    assert replicas.update(True) and replicas.peers == {"hub-c"}
    assert not replicas.update(False)  # never the sender while cut off


# -- two hubs, one broker, one receiver -----------------------------------------------------


def replica_file(tmp_path: Path, port: int, client_id: str, hook: str) -> Path:
    raw = {"hub": {"id": "north-room"},
           "broker": {"host": "127.0.0.1", "port": port, "keepalive": 5, "client_id": client_id},
           "scope": {"communities": ["North"]},
           "state_dir": str(tmp_path / f"{client_id}-state"),
           "alarms": {"tick_interval": 0.1},
           "webhooks": [{"url": hook, "max_retry_interval": 1}]}
    path = tmp_path / f"{client_id}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1, retain=True)


@pytest.mark.integration
async def test_one_replica_sends_and_the_other_takes_over_when_it_dies(tmp_path, mosquitto) -> None:
    port = mosquitto.port
    async with Receiver() as receiver:
        # replica "hub-a" as a process (killed with kill -9 below), "hub-b" in this process
        a = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "hub",
            str(replica_file(tmp_path, port, "hub-a", receiver.url)),
            stderr=asyncio.subprocess.DEVNULL, env=dict(os.environ))
        b = Hub(load_hub_config(replica_file(tmp_path, port, "hub-b", receiver.url)))
        task = asyncio.create_task(b.run(), name="hub-b")
        [webhook_b] = b.webhooks
        try:
            await wait_until(lambda: b.replicas.peers == {"hub-a"} and b.link.synced.is_set(),
                             30, "both replicas on the broker")
            assert not b.replicas.is_sender and webhook_b.holding

            now = time.time()
            await publish(port, [("community/n-b1/info", info("n-b1", iso(now))),
                                 ("community/n-b1/status", b"online"),
                                 ("community/n-b1/health", health("n-b1", iso(now)))])
            await wait_until(lambda: "n-b1" in b.live.sites and b.live.sites["n-b1"].health, 10,
                             "the gateway at hub-b")
            await publish(port, [("community/n-b1/status", b"offline")])
            # both raise it; the receiver hears it once, and hub-b drops its held copy
            await wait_until(lambda: receiver.events() == ["raised"], 10, "the raise, once")
            await wait_until(lambda: b.alarms.find("gateway_offline", "n-b1", None), 10,
                             "the raise at hub-b too")
            await wait_until(lambda: webhook_b.pending == 0, 10, "hub-b told it was delivered")
            assert webhook_b.sent == 0 and webhook_b.forgotten == 1

            await publish(port, [("community/n-b1/status", b"online"),
                                 ("community/n-b1/health", health("n-b1", iso(now + 60)))])
            await wait_until(lambda: receiver.events() == ["raised", "cleared"], 10, "the clear")
            await wait_until(lambda: b.alarms.find("gateway_offline", "n-b1", None).state
                             == "cleared", 10, "the clear at hub-b too")
            await wait_until(lambda: webhook_b.pending == 0, 10, "hub-b told again")

            # the sender dies without a word: its last will makes hub-b the sender
            a.send_signal(signal.SIGKILL)
            await a.wait()
            await wait_until(lambda: b.replicas.is_sender, 30, "hub-b taking over")
            await publish(port, [("community/n-b1/status", b"offline")])
            await wait_until(lambda: receiver.events() == ["raised", "cleared", "repeated"], 10,
                             "the next transition, from hub-b")
            # the receiver keeps a POST before it answers; hub-b counts it once answered
            await wait_until(lambda: webhook_b.sent == 1, 10, "hub-b counting its delivery")
            keys = [key for key, _ in receiver.posts]
            assert all(keys) and len(set(keys)) == 3
            assert all(body["alarm"]["device"] == "n-b1" for _, body in receiver.posts)
            ok, body = b.health()
            assert body["webhook_sender"] is True and body["replicas_online"] == 1
        finally:
            if a.returncode is None:
                a.kill()
                await a.wait()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.mark.integration
async def test_a_replica_that_stops_cleanly_hands_over_at_once(tmp_path, mosquitto) -> None:
    """A clean stop sends no will: the replica says offline itself, at once."""
    port = mosquitto.port
    async with Receiver() as receiver:
        a = Hub(load_hub_config(replica_file(tmp_path, port, "hub-a", receiver.url)))
        b = Hub(load_hub_config(replica_file(tmp_path, port, "hub-b", receiver.url)))
        tasks = {hub: asyncio.create_task(hub.run()) for hub in (a, b)}
        try:
            await wait_until(lambda: a.replicas.is_sender and b.replicas.peers == {"hub-a"},
                             20, "hub-a the sender")
            assert not b.replicas.is_sender
            tasks[a].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tasks[a]
            await wait_until(lambda: b.replicas.is_sender, 5, "hub-b taking over")
            assert b.replicas.peers == set()
        finally:
            for task in tasks.values():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
