"""The broker ACL shipped in deploy/mosquitto/ keeps devices off the command topics.

Mosquitto runs with a password file and deploy/mosquitto/community.acl as it is.
Refusal is shown by what arrives: a privileged subscriber gets a control message
sent after the refused ones (each publish waits for its PUBACK, so the broker has
routed or dropped it before the next is sent), and nothing before it.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from gateway.alarms.commands import COMMANDS
from gateway.alarms.signing import sign
from harness import running_gateway, wait_until, write_site
from servers import Mosquitto, ServerBinaryMissing

REPO = Path(__file__).resolve().parent.parent
ACL = REPO / "deploy" / "mosquitto" / "community.acl"
PASSWORDS = {user: secrets.token_hex(8)
             for user in ("b3", "hub-compound", "cam-analytics-b5", "T3E-01")}
HUB_SECRET = secrets.token_hex(32)


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    """Mosquitto with logins and the shipped ACL file."""
    try:
        server = Mosquitto(users=PASSWORDS, acl_file=ACL)
    except ServerBinaryMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.close()


def login(broker: Mosquitto, user: str, **kwargs) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", broker.port, username=user, password=PASSWORDS[user],
                          identifier=f"{user}-{secrets.token_hex(3)}", **kwargs)


async def next_message(client: aiomqtt.Client) -> aiomqtt.Message:
    async with asyncio.timeout(5):
        return await anext(aiter(client.messages))


async def test_a_cameras_credentials_cannot_reach_the_command_topics(broker) -> None:
    async with login(broker, "b3") as gateway_view, login(broker, "hub-compound") as hub_view:
        # The gateway's user reads the command topics and the camera's topic; the hub reads
        # everything under community/.
        await gateway_view.subscribe("community/b3/alarms/+/+", qos=1)
        await gateway_view.subscribe("thrown-objects/events", qos=1)
        await hub_view.subscribe("community/#", qos=1)

        async with login(broker, "cam-analytics-b5",
                         protocol=aiomqtt.ProtocolVersion.V5) as camera:
            forged = json.dumps({"by": "camera"})
            for command in COMMANDS:
                await camera.publish(f"community/b3/alarms/a1/{command}", forged, qos=1)
            await camera.publish("community/b3/alarms/a1", b"", qos=1, retain=True)
            await camera.publish("community/b3/status", b"offline", qos=1, retain=True)
            await camera.publish("thrown-objects/events", b'{"control": 1}', qos=1)

        # The gateway's own user sends no commands either (not even to itself).
        async with login(broker, "b3") as gateway:
            await gateway.publish("community/b3/alarms/a1/ack", forged, qos=1)
            await gateway.publish("community/b3/status", b"online", qos=1, retain=True)

        first = await next_message(gateway_view)
        assert str(first.topic) == "thrown-objects/events", first.payload
        first = await next_message(hub_view)
        assert (str(first.topic), first.payload) == ("community/b3/status", b"online")

        # The hub's commands arrive; it cannot fake an alarm's state.
        async with login(broker, "hub-compound") as hub:
            await hub.publish("community/b3/alarms/a1", b"{}", qos=1, retain=True)
            await hub.publish("community/b3/alarms/a1/shelve", b"signed", qos=1)
        message = await next_message(gateway_view)
        assert (str(message.topic), message.payload) == ("community/b3/alarms/a1/shelve", b"signed")
        message = await next_message(hub_view)
        assert str(message.topic) == "community/b3/alarms/a1/shelve"


async def test_strangers_cannot_log_in(broker) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("127.0.0.1", broker.port):
            pass
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("127.0.0.1", broker.port, username="hub-compound",
                                  password="wrong"):
            pass


def acl_site(tmp_path: Path, broker: Mosquitto) -> Path:
    """Site b3 as the ACL knows it: the gateway logs in as b3, takes signed commands from
    hub-compound and reads the camera analytics of building 5."""
    return write_site(tmp_path, {
        "site": {"id": "b3"},
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "username": "b3",
                 "password": {"env": "TEST_ACL_GATEWAY_PASSWORD"},
                 "commands": {"enabled": True, "keys": [
                     {"name": "hub-compound", "secret": {"env": "TEST_ACL_HUB_KEY"}}]}},
        "devices": [{"id": "camera-b5", "type": "mqtt", "profile": "thrown-object-camera",
                     "source": "cam-b5-east", "location": {"building": "5"}}],
        "rules": [{"id": "thrown", "type": "event", "select": {"devices": ["camera-b5"]},
                   "event": "throw", "severity": 1}],
    })


async def test_the_gateway_and_the_hub_work_under_the_acl(tmp_path, broker, monkeypatch) -> None:
    monkeypatch.setenv("TEST_ACL_GATEWAY_PASSWORD", PASSWORDS["b3"])
    monkeypatch.setenv("TEST_ACL_HUB_KEY", HUB_SECRET)
    async with running_gateway(acl_site(tmp_path, broker)) as gw, \
            login(broker, "cam-analytics-b5") as camera:
        transitions = []
        gw.alarms.add_listener(transitions.append)
        await wait_until(lambda: gw.mqtt.connected and gw.drivers["camera-b5"].connected, 10,
                         "gateway connected, camera topic subscribed")
        throw = {"event_id": "e1", "state": "start", "camera": "cam-b5-east",
                 "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "building": "5",
                 "facade": "east", "floor_est": [11, 13], "snapshot": "s", "clip": "c"}
        await camera.publish("thrown-objects/events", json.dumps(throw), qos=1)
        [alarm] = await wait_until(lambda: gw.alarms.open_alarms(), 5, "the throw alarm")
        alarm_id = alarm.id
        await wait_until(lambda: gw.mqtt.pending == 0, 5, "alarm published")

        # The camera tries the command topic (refused by the broker, never reaches the
        # gateway), then the hub sends a signed ack with the command-line tool.
        await camera.publish(f"community/b3/alarms/{alarm_id}/ack",
                             json.dumps({"by": "camera"}), qos=1)
        env = {**os.environ, "GATEWAY_COMMAND_KEY": HUB_SECRET,
               "MQTT_PASSWORD": PASSWORDS["hub-compound"]}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "sign-command", "ack", alarm_id, "--site", "b3",
            "--key", "hub-compound", "--by", "guard wang", "--publish",
            f"127.0.0.1:{broker.port}", "--username", "hub-compound", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        # a momentary alarm closes once acknowledged: its retained state is emptied
        assert out.decode().strip() == "done: closed"

        assert gw.mqtt.commands_applied == 1
        assert gw.mqtt.commands_rejected == 0  # the camera's ack never arrived
        assert ("acked", "guard wang via hub-compound") in [(t.event, t.by) for t in transitions]
        assert not gw.alarms.open_alarms()


async def test_hub_replicas_sync_and_see_each_other_under_the_acl(tmp_path, broker, caplog,
                                                                   monkeypatch) -> None:
    """The hub's own topics (community/_hub/...: its sync marker, the replicas' presence)
    are allowed: the picture is rebuilt by the marker, not by its timeout, and each
    replica sees the other."""
    import contextlib
    import logging

    import yaml

    from gateway.hub.config import load_hub_config
    from gateway.hub.service import Hub

    monkeypatch.setenv("TEST_ACL_HUB_PASSWORD", PASSWORDS["hub-compound"])
    caplog.set_level(logging.WARNING, logger="gateway.hub")
    hubs = []
    for client_id in ("hub-a", "hub-b"):
        path = tmp_path / f"{client_id}.yaml"
        path.write_text(yaml.safe_dump({
            "hub": {"id": "compound"}, "scope": {"all": True},
            "state_dir": str(tmp_path / client_id),
            "broker": {"host": "127.0.0.1", "port": broker.port, "client_id": client_id,
                       "username": "hub-compound",
                       "password": {"env": "TEST_ACL_HUB_PASSWORD"}}}))
        hubs.append(Hub(load_hub_config(path)))
    tasks = [asyncio.create_task(hub.run()) for hub in hubs]
    a, b = hubs
    try:
        await wait_until(lambda: a.replicas.peers == {"hub-b"} and b.replicas.peers == {"hub-a"},
                         15, "each replica seeing the other")
        await wait_until(lambda: a.link.synced.is_set() and b.link.synced.is_set(), 15, "synced")
        assert not [r for r in caplog.records if "sync marker" in r.getMessage()]
        # an operator's ack of a hub alarm (community/_hub/compound/alarms/...) reaches the other
        info = {"site": "b3", "name": "b3", "health_interval": 30,
                "ts": "2026-12-01T08:00:00.000Z", "hierarchy": {}}
        async with aiomqtt.Client("127.0.0.1", broker.port, username="b3",
                                  password=PASSWORDS["b3"]) as gateway:
            await gateway.publish("community/b3/info", json.dumps(info), qos=1, retain=True)
            await gateway.publish("community/b3/status", "offline", qos=1, retain=True)
        raised = await wait_until(lambda: a.alarms.find("gateway_offline", "b3", None)
                                  and b.alarms.find("gateway_offline", "b3", None), 15,
                                  "the hub alarm on both replicas")
        a.alarms.ack(a.alarms.find("gateway_offline", "b3", None).id, by="wang")
        await wait_until(lambda: raised.acked, 15, "the ack at hub-b")
        assert b.alarm_sync.skipped.total() == 0
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
