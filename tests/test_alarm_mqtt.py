"""Alarms over real Mosquitto and HTTP: operators' signed commands change the retained
state (unsigned, forged, stale and replayed ones are refused), a restarted gateway
republishes its open alarms unchanged, a webhook that was down gets every alarm once it
is back."""

from __future__ import annotations

import json
import time

import aiohttp
import aiomqtt
import pytest
from aiohttp import web

from gateway.alarms.signing import sign
from gateway.readings import DeviceEvent, Reading
from harness import MqttRecorder, running_gateway, wait_until, write_site
from servers import Mosquitto

TOKEN = "alarm-api-token-5d1c"
HUB_KEY = "hub-key-0123456789abcdef0123456789abcdef"
COMMANDS_ON = {"enabled": True, "keys": [{"name": "hub-compound",
                                          "secret": {"env": "TEST_HUB_COMMAND_KEY"}}]}


@pytest.fixture(autouse=True)
def api_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_ALARM_API_TOKEN", TOKEN)
    monkeypatch.setenv("TEST_HUB_COMMAND_KEY", HUB_KEY)


def alarm_site(site_id: str, *, mqtt_port: int | None = None, commands: dict | None = None,
               **extra) -> dict:
    """A meter (over-power rule) and a panel with a latched emergency button; the
    synthetic devices poll once an hour, so the test says what they read."""
    raw: dict = {
        "site": {"id": site_id},
        "devices": [
            {"id": "meter", "type": "synthetic", "kind": "power_meter", "fields": ["power"],
             "poll_interval": 3600, "location": {"building": "3", "unit": "1"}},
            {"id": "panel", "type": "synthetic", "kind": "panel", "fields": ["battery"],
             "events": ["emergency"], "channels": 2, "poll_interval": 3600,
             "location": {"building": "3", "unit": "2", "floor": "5"}},
        ],
        "rules": [
            {"id": "over-power", "type": "threshold", "select": {"devices": ["meter"]},
             "field": "power", "above": 1000, "hysteresis": 100, "severity": 2},
            {"id": "emergency", "type": "event", "select": {"devices": ["panel"]},
             "event": "emergency", "severity": 1, "latch": True},
        ],
        **extra,
    }
    if mqtt_port is not None:
        raw["mqtt"] = {"host": "127.0.0.1", "port": mqtt_port}
        if commands is not None:
            raw["mqtt"]["commands"] = commands
    return raw


async def raise_both(gw) -> tuple[str, str]:
    """Over power on the meter, the emergency button on panel channel 2; their ids."""
    await gw.pipeline.put([Reading("meter", None, {"power": 1500.0}, time.time())])
    await gw.pipeline.put([DeviceEvent("panel", 2, "emergency", time.time(), {"button": "lift"})])
    await wait_until(lambda: len(gw.alarms.open_alarms()) == 2, 3, "two alarms")
    ids = {a.rule: a.id for a in gw.alarms.open_alarms()}
    return ids["over-power"], ids["emergency"]


def retained(mqtt: MqttRecorder, alarm_id: str) -> bytes | None:
    """The latest payload seen on an alarm's retained topic."""
    found = [p for _, t, p in mqtt.messages if t.endswith(f"/alarms/{alarm_id}")]
    return found[-1] if found else None


async def test_signed_commands_over_mqtt_change_the_retained_state(
        tmp_path, mosquitto, unique_id, caplog) -> None:
    base = f"community/{unique_id}"
    site = alarm_site(unique_id, mqtt_port=mosquitto.port, commands=COMMANDS_ON)
    async with MqttRecorder(mosquitto.port, f"{base}/alarms/#") as mqtt, \
            running_gateway(write_site(tmp_path, site)) as gw, \
            aiomqtt.Client("127.0.0.1", mosquitto.port, identifier=f"console-{unique_id}") as console:
        await wait_until(lambda: gw.mqtt.connected and all(r.health.polls for r in gw.runners), 5,
                         "gateway ready")
        transitions = []
        gw.alarms.add_listener(transitions.append)
        power, emergency = await raise_both(gw)

        def state(alarm_id: str) -> dict | None:
            payload = retained(mqtt, alarm_id)
            return json.loads(payload) if payload else None

        def errors(command: str) -> list[dict]:
            return [json.loads(p) for _, t, p in mqtt.messages if t.endswith(f"/{command}/error")]

        async def send(alarm_id: str, command: str, body: dict | str, **signing) -> bytes:
            topic = f"{base}/alarms/{alarm_id}/{command}"
            payload = sign(topic, body, key=signing.pop("key", "hub-compound"),
                           secret=signing.pop("secret", HUB_KEY), **signing)
            await console.publish(topic, payload, qos=1)
            return payload

        await wait_until(lambda: state(power) and state(emergency), 3, "retained alarms")
        assert state(emergency)["location"] == {"building": "3", "unit": "2", "floor": "5", "channel": 2}
        assert state(emergency)["details"] == {"button": "lift"}

        ack = await send(power, "ack", {"by": "guard wang", "note": "on my way"})
        await wait_until(lambda: state(power)["acked"], 3, "acked in the retained state")
        await send(power, "shelve", {"note": "meter swap", "minutes": 30})  # no name: the key's
        await wait_until(lambda: state(power)["shelved_until"], 3, "shelved")
        assert [(t.event, t.by, t.note) for t in transitions[-2:]] == [
            ("acked", "guard wang via hub-compound", "on my way"),
            ("shelved", "hub-compound", "meter swap")]

        # refused by the signature check, each answered on .../error (401), nothing applied
        now = int(time.time())
        await console.publish(f"{base}/alarms/{power}/unshelve", json.dumps({"by": "x"}), qos=1)
        await send(power, "unshelve", {"by": "x"}, secret="not-the-key-0123456789abcdef0123456")
        await send(power, "unshelve", {"by": "x"}, key="someone-else")
        await send(power, "unshelve", {"by": "x"}, issued_at=now - 61)
        await send(power, "unshelve", {"by": "x"}, issued_at=now + 60)
        await console.publish(f"{base}/alarms/{power}/ack", ack, qos=1)  # a replay
        # signed for one alarm, sent to another: the topic is part of what is signed
        await console.publish(f"{base}/alarms/{emergency}/ack", ack, qos=1)
        await wait_until(lambda: len(errors("unshelve")) == 5 and len(errors("ack")) == 2, 3,
                         "refusals answered")
        refusals = [e["error"] for e in errors("unshelve") + errors("ack")]
        assert {e["status"] for e in errors("unshelve") + errors("ack")} == {401}
        for expected in ("unsigned", "bad signature", "unknown key", "stale", "future",
                         "replayed", "bad signature"):
            assert any(expected in r for r in refusals), (expected, refusals)
        assert state(power)["shelved_until"] and not state(emergency)["acked"]

        # signed but wrong for the alarm: the command layer's answers, as before
        await send(power, "ack", "not json")
        await send(power, "reset", {"by": "x"})
        await send("no-such-alarm", "ack", {"by": "x"})
        await send(emergency, "shelve", {"by": "x"})
        await wait_until(lambda: len(errors("ack")) == 4 and errors("reset") and errors("shelve"),
                         3, "error answers")
        assert sorted(e["status"] for e in errors("ack")[2:]) == [400, 404]
        assert errors("reset")[0]["status"] == 409 and "still present" in errors("reset")[0]["error"]
        assert "minutes" in errors("shelve")[0]["error"]
        assert gw.mqtt.commands_rejected == 11 and gw.mqtt.connected
        # a flood of refusals is not a flood of log lines: the first, then a count later
        assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1

        # the latched emergency: acknowledged it stays, reset it closes (empty retained)
        await send(emergency, "ack", {"by": "guard li"})
        await wait_until(lambda: state(emergency)["acked"], 3, "emergency acked")
        assert state(emergency)["state"] == "active"
        await send(emergency, "reset", {"by": "guard li", "note": "resident fine"})
        await wait_until(lambda: retained(mqtt, emergency) == b"", 3, "emergency closed")
        assert gw.mqtt.commands_applied == 4

    # a console that connects now sees the truth: the acked, shelved over-power alarm only
    async with MqttRecorder(mosquitto.port, f"{base}/alarms/+") as late:
        await wait_until(lambda: retained(late, power), 3, "retained state for a late console")
        now = json.loads(retained(late, power))
        assert now["acked"] and now["shelved_until"] and now["state"] == "active"
        assert retained(late, emergency) is None


async def test_commands_are_rate_limited_per_alarm(tmp_path, mosquitto, unique_id) -> None:
    base = f"community/{unique_id}"
    site = alarm_site(unique_id, mqtt_port=mosquitto.port,
                      commands={**COMMANDS_ON, "max_per_alarm_per_minute": 3})
    async with MqttRecorder(mosquitto.port, f"{base}/alarms/+/+/error") as mqtt, \
            running_gateway(write_site(tmp_path, site)) as gw, \
            aiomqtt.Client("127.0.0.1", mosquitto.port) as console:
        await wait_until(lambda: gw.mqtt.connected and all(r.health.polls for r in gw.runners), 5,
                         "gateway ready")
        power, emergency = await raise_both(gw)
        for command in ("shelve", "unshelve", "shelve", "unshelve"):
            topic = f"{base}/alarms/{power}/{command}"
            await console.publish(topic, sign(topic, {"minutes": 5} if command == "shelve" else {},
                                              key="hub-compound", secret=HUB_KEY), qos=1)
        topic = f"{base}/alarms/{emergency}/ack"
        await console.publish(topic, sign(topic, {}, key="hub-compound", secret=HUB_KEY), qos=1)
        await wait_until(lambda: gw.mqtt.commands_applied == 4 and mqtt.messages, 3,
                         "three commands on one alarm, one on the other, one refusal")
        [(_, topic, payload)] = mqtt.messages
        assert topic == f"{base}/alarms/{power}/unshelve/error"
        assert json.loads(payload)["status"] == 429
        assert gw.alarms.get(power).shelved_until  # the fourth never applied


@pytest.mark.parametrize("enabled", [False, True])
async def test_without_commands_the_gateway_does_not_subscribe(tmp_path, unique_id,
                                                               enabled) -> None:
    with Mosquitto(extra_config=["log_type subscribe", "log_type unsubscribe"]) as broker:
        site = alarm_site(unique_id, mqtt_port=broker.port,
                          commands=COMMANDS_ON if enabled else None)
        client = f"gateway-{unique_id}"
        last = f"{client} {'1 ' if enabled else ''}community/{unique_id}/alarms/+/unshelve"
        async with running_gateway(write_site(tmp_path, site)):
            await wait_until(lambda: last in broker.log(), 5, "the link's (un)subscriptions")
        subscribed = [line for line in broker.log().splitlines()
                      if f" {client} 1 community/{unique_id}/alarms/" in line]
    assert len(subscribed) == (4 if enabled else 0)


async def test_restart_republishes_open_alarms_unchanged(tmp_path, mosquitto, unique_id) -> None:
    base = f"community/{unique_id}"
    path = write_site(tmp_path, alarm_site(unique_id, mqtt_port=mosquitto.port))
    async with MqttRecorder(mosquitto.port, f"{base}/alarms/+") as mqtt:
        async with running_gateway(path) as gw:
            await wait_until(lambda: gw.mqtt.connected and all(r.health.polls for r in gw.runners),
                             5, "gateway ready")
            # Event alarms: nothing the devices read on the next start can change them (an
            # over-power alarm would rightly clear on the synthetic meter's first reading).
            for channel in (1, 2):
                await gw.pipeline.put([DeviceEvent("panel", channel, "emergency", time.time(),
                                                   {"button": f"stair {channel}"})])
            await wait_until(lambda: len(gw.alarms.open_alarms()) == 2, 3, "two alarms")
            first, second = sorted(a.id for a in gw.alarms.open_alarms())
            gw.alarms.ack(first, by="guard li", note="going up")
            await wait_until(lambda: b'"acked": true' in (retained(mqtt, first) or b"")
                             and retained(mqtt, second), 3, "published")
        before = {i: retained(mqtt, i) for i in (first, second)}

    # the broker loses its retained messages (a new broker, a wiped store)
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as wiper:
        for alarm_id in before:
            await wiper.publish(f"{base}/alarms/{alarm_id}", b"", qos=1, retain=True)

    async with MqttRecorder(mosquitto.port, f"{base}/alarms/+") as mqtt:
        async with running_gateway(path) as gw:
            await wait_until(lambda: all(retained(mqtt, i) for i in before), 5, "republished")
            after = {i: retained(mqtt, i) for i in before}
            assert {a.id for a in gw.alarms.open_alarms()} == set(before)
    assert after == before  # byte for byte


async def test_webhook_gets_the_alarms_after_being_down(tmp_path, free_port, unique_id) -> None:
    port = free_port()
    received: list[dict] = []
    answers = [503]  # the first request once it is up fails too

    async def hook(request: web.Request) -> web.Response:
        if answers:
            return web.Response(status=answers.pop())
        received.append(await request.json())
        return web.json_response({"ok": True})

    raw = alarm_site(unique_id, webhooks=[{"url": f"http://127.0.0.1:{port}/hook", "timeout": 1,
                                           "max_retry_interval": 0.3, "min_severity": 2}])
    async with running_gateway(write_site(tmp_path, raw)) as gw:
        [webhook] = gw.webhooks
        await wait_until(lambda: all(r.health.polls for r in gw.runners), 5, "first polls")
        power, emergency = await raise_both(gw)
        gw.alarms.ack(power, by="guard wang", note="seen")
        await wait_until(lambda: webhook.failures >= 3, 5, "failed tries while the receiver is down")
        assert webhook.pending == 3 and received == []
        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
            await wait_until(lambda: len(received) == 3, 5, "every transition delivered")
        finally:
            await runner.cleanup()
    assert [(r["event"], r["alarm"]["id"]) for r in received] == [
        ("raised", power), ("raised", emergency), ("acked", power)]
    assert received[2]["by"] == "guard wang" and received[2]["note"] == "seen"
    assert received[1]["alarm"]["details"] == {"button": "lift"}
    assert webhook.sent == 3 and webhook.pending == 0


async def test_http_api_commands_and_history(tmp_path, free_port, unique_id) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    raw = alarm_site(unique_id, http={"listen": f"127.0.0.1:{port}",
                                      "token": {"env": "TEST_ALARM_API_TOKEN"}})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with running_gateway(write_site(tmp_path, raw)) as gw, aiohttp.ClientSession() as s:
        await wait_until(lambda: gw.http.listening and all(r.health.polls for r in gw.runners), 5,
                         "API up")
        power, emergency = await raise_both(gw)
        async with s.post(f"{url}/api/alarms/{power}/shelve", headers=auth,
                          json={"by": "guard wang", "note": "meter swap", "minutes": 20}) as r:
            assert r.status == 200 and (await r.json())["shelved_until"]
        async with s.post(f"{url}/api/alarms/{power}/shelve", headers=auth,
                          json={"by": "guard wang", "minutes": "soon"}) as r:
            assert r.status == 400 and "minutes" in (await r.json())["error"]
        async with s.post(f"{url}/api/alarms/{emergency}/reset", headers=auth,
                          json={"by": "guard li"}) as r:
            assert r.status == 200 and (await r.json())["state"] == "closed"
        async with s.post(f"{url}/api/alarms/{power}/reset", headers=auth, json={"by": "x"}) as r:
            assert r.status == 409
        await gw.alarm_store.wait_written()
        async with s.get(f"{url}/api/alarms") as r:
            body = await r.json()
        assert [a["id"] for a in body["alarms"]] == [power]
        assert [a["id"] for a in body["closed"]] == [emergency]
        assert [(h["event"], h["by"]) for h in body["history"][:3]] == [
            ("closed", "guard li"), ("reset", "guard li"), ("shelved", "guard wang")]
        async with s.get(f"{url}/api/alarms/{power}/history") as r:
            assert [h["event"] for h in (await r.json())["history"]] == ["shelved", "raised"]
