"""Alarms over real Mosquitto and HTTP: operators' commands change the retained state, a
restarted gateway republishes its open alarms unchanged, a webhook that was down gets
every alarm once it is back."""

from __future__ import annotations

import json
import time

import aiohttp
import aiomqtt
import pytest
from aiohttp import web

from gateway.readings import DeviceEvent, Reading
from harness import MqttRecorder, running_gateway, wait_until, write_site

TOKEN = "alarm-api-token-5d1c"


@pytest.fixture(autouse=True)
def api_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_ALARM_API_TOKEN", TOKEN)


def alarm_site(site_id: str, *, mqtt_port: int | None = None, **extra) -> dict:
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


async def test_commands_over_mqtt_change_the_retained_state(tmp_path, mosquitto, unique_id) -> None:
    base = f"community/{unique_id}"
    async with MqttRecorder(mosquitto.port, f"{base}/alarms/#") as mqtt, \
            running_gateway(write_site(tmp_path, alarm_site(unique_id, mqtt_port=mosquitto.port))) as gw, \
            aiomqtt.Client("127.0.0.1", mosquitto.port, identifier=f"console-{unique_id}") as console:
        await wait_until(lambda: gw.mqtt.connected and all(r.health.polls for r in gw.runners), 5,
                         "gateway ready")
        power, emergency = await raise_both(gw)

        def state(alarm_id: str) -> dict | None:
            payload = retained(mqtt, alarm_id)
            return json.loads(payload) if payload else None

        def errors(command: str) -> list[dict]:
            return [json.loads(p) for _, t, p in mqtt.messages if t.endswith(f"/{command}/error")]

        await wait_until(lambda: state(power) and state(emergency), 3, "retained alarms")
        assert state(emergency)["location"] == {"building": "3", "unit": "2", "floor": "5", "channel": 2}
        assert state(emergency)["details"] == {"button": "lift"}

        await console.publish(f"{base}/alarms/{power}/ack",
                              json.dumps({"by": "guard wang", "note": "on my way"}), qos=1)
        await wait_until(lambda: state(power)["acked"], 3, "acked in the retained state")
        await console.publish(f"{base}/alarms/{power}/shelve",
                              json.dumps({"by": "guard wang", "note": "meter swap", "minutes": 30}), qos=1)
        await wait_until(lambda: state(power)["shelved_until"], 3, "shelved")

        # bad commands are answered on .../error, and the link stays up
        await console.publish(f"{base}/alarms/{power}/ack", b"not json", qos=1)
        await console.publish(f"{base}/alarms/{power}/reset", json.dumps({"by": "x"}), qos=1)
        await console.publish(f"{base}/alarms/no-such-alarm/ack", json.dumps({"by": "x"}), qos=1)
        await console.publish(f"{base}/alarms/{emergency}/shelve", json.dumps({"by": "x"}), qos=1)
        await wait_until(lambda: len(errors("ack")) == 2 and errors("reset") and errors("shelve"), 3,
                         "error answers")
        assert sorted(e["status"] for e in errors("ack")) == [400, 404]
        assert errors("reset")[0]["status"] == 409 and "still present" in errors("reset")[0]["error"]
        assert "minutes" in errors("shelve")[0]["error"]
        assert gw.mqtt.commands_rejected == 4 and gw.mqtt.connected

        # the latched emergency: acknowledged it stays, reset it closes (empty retained)
        await console.publish(f"{base}/alarms/{emergency}/ack", json.dumps({"by": "guard li"}), qos=1)
        await wait_until(lambda: state(emergency)["acked"], 3, "emergency acked")
        assert state(emergency)["state"] == "active"
        await console.publish(f"{base}/alarms/{emergency}/reset",
                              json.dumps({"by": "guard li", "note": "resident fine"}), qos=1)
        await wait_until(lambda: retained(mqtt, emergency) == b"", 3, "emergency closed")

    # a console that connects now sees the truth: the acked, shelved over-power alarm only
    async with MqttRecorder(mosquitto.port, f"{base}/alarms/+") as late:
        await wait_until(lambda: retained(late, power), 3, "retained state for a late console")
        now = json.loads(retained(late, power))
        assert now["acked"] and now["shelved_until"] and now["state"] == "active"
        assert retained(late, emergency) is None


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
