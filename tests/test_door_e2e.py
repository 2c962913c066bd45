"""Door access end to end: door I/O module (real Modbus server) and access terminal (real
Mosquitto) -> gateway -> alarms on MQTT, readings and events in VictoriaMetrics / a local file.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import aiomqtt
import pytest

from drivers.mqtt.mapping import parse_timestamp
from harness import MqttRecorder, SteppedClock, running_gateway, wait_until, write_site
from simulators.door import RESIDENTS, STRANGER_CARD, DoorSimulator

KEY = "test-pseudonym-key-0123456789"
CARD = sorted(RESIDENTS)[3]


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_INFLUX_TOKEN", "test-token")
    monkeypatch.setenv("TEST_PSEUDONYM_KEY", KEY)


def door_site(site_id: str, *, mqtt_port: int, modbus_port: int, terminal: str,
              influx_url: str | None = None, series: Path | None = None,
              rules: list[dict] | None = None, silence_timeout: float | None = None) -> dict:
    """A building entrance: door module (2 doors) polled every 0.1 s, and its terminal."""
    terminal_dev = {"id": "terminal", "type": "mqtt", "profile": "access-terminal",
                    "source": terminal, "channels": 2,
                    "location": {"building": "3", "unit": "1"}}
    if silence_timeout is not None:
        terminal_dev["silence_timeout"] = silence_timeout
    raw: dict = {
        "site": {"id": site_id},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port},
        "privacy": {"key": {"env": "TEST_PSEUDONYM_KEY"}},
        "buses": [{"id": "door-link", "type": "modbus_tcp", "host": "127.0.0.1",
                   "port": modbus_port, "timeout": 0.2, "retries": 0}],
        "devices": [{"id": "doors", "type": "modbus", "bus": "door-link", "profile": "door-io",
                     "channels": 2, "poll_interval": 0.1, "offline_after": 2,
                     "location": {"building": "3", "unit": "1"}},
                    terminal_dev],
        "rules": rules or [],
    }
    if influx_url is not None:
        raw["influxdb"] = {"url": influx_url, "org": "o", "bucket": "b",
                           "token": {"env": "TEST_INFLUX_TOKEN"}, "flush_interval": 0.2}
    if series is not None:
        raw["local_series"] = {"path": str(series)}
    return raw


DOOR_RULES = [
    {"id": "door-forced", "type": "forced", "select": {"devices": ["doors"]},
     "grants_from": ["terminal"], "within": 2, "severity": 1},
    {"id": "door-held", "type": "held", "select": {"devices": ["doors"]}, "field": "door_open",
     "equals": 1, "for": 0.6, "severity": 2},
    {"id": "denials", "type": "count", "select": {"devices": ["terminal"]}, "event": "denied",
     "count": 5, "window": 60, "reset_on": ["granted"], "severity": 3},
    {"id": "duress", "type": "event", "select": {"devices": ["terminal"]}, "event": "duress",
     "severity": 1},
]


def holds_any(text: str, identifiers: list[str]) -> bool:
    """Whether any identifier appears in ``text`` as a token of its own (a card number
    inside a longer run of digits, e.g. a nanosecond timestamp, is not one)."""
    return any(re.search(rf"(?<![0-9A-Za-z]){re.escape(i)}(?![0-9A-Za-z])", text) for i in identifiers)


def raised(mqtt: MqttRecorder, rule: str) -> list[dict]:
    return [e["alarm"] for _, e in mqtt.json_on("/alarm_events")
            if e["event"] == "raised" and e["alarm"]["rule"] == rule]


async def test_readings_and_events_reach_victoriametrics_and_no_raw_card_leaves(
        tmp_path, mosquitto, victoria, unique_id) -> None:
    series = tmp_path / "series.lp"
    async with DoorSimulator(broker=("127.0.0.1", mosquitto.port), terminal_id=unique_id,
                             walk_s=0.4, release_s=1.0) as sim, \
            MqttRecorder(mosquitto.port, "#") as everything:
        raw = door_site(unique_id, mqtt_port=mosquitto.port, modbus_port=sim.modbus_port,
                        terminal=unique_id, influx_url=victoria.url, series=series,
                        rules=DOOR_RULES)
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            terminal = gw.drivers["terminal"]
            await wait_until(lambda: terminal.connected, 5, "terminal subscribed")
            sim.swipe(1, CARD)
            await sim.walk_through(1)
            for _ in range(5):
                sim.deny(2, STRANGER_CARD, code=7)
            sim.duress(2, CARD)
            await sim.publisher.flush()
            await wait_until(lambda: terminal.stats["events"] >= 10, 5, "terminal events")
            opened = await victoria.wait_for_series_async(
                f'door_access_door_open{{site="{unique_id}",door="1"}}',
                lambda s: bool(s) and 1 in s[0]["values"], timeout=10)
            granted = await victoria.wait_for_series_async(
                f'door_access_event_count{{site="{unique_id}",event="granted"}}',
                lambda s: len(s) == 2, timeout=10)
            denied = await victoria.wait_for_series_async(
                f'door_access_event_count{{site="{unique_id}",event="denied"}}',
                lambda s: sum(len(x["values"]) for x in s) == 5, timeout=10)
            denials = await everything.wait_for(lambda: raised(everything, "denials"), 5)
            await everything.wait_for(lambda: raised(everything, "duress"), 5)
            export = await victoria.export_async(f'{{site="{unique_id}"}}')
            await wait_until(lambda: series.exists() and "event=duress" in series.read_text(), 5,
                             "local series")
    assert opened[0]["metric"]["device"] == "doors" and opened[0]["metric"]["building"] == "3"
    assert {s["metric"]["door"] for s in granted} == {"1", "2"}  # door 2: the duress entry
    assert {s["metric"]["door"] for s in denied} == {"2"}
    assert denials[0]["location"]["door"] == 2 and denials[0]["details"]["reason"] == "wrong_pin"
    assert len(denials[0]["details"]["card"]) == 16
    local = series.read_text()
    pseudonym = [line for line in local.splitlines() if "event=granted" in line][0]
    assert 'card="' in pseudonym and 'method="card"' in pseudonym
    # The raw card numbers and person ids travel only on the terminal's own topic,
    # device -> gateway. Nothing the gateway publishes or stores upstream holds them.
    secrets = [CARD, STRANGER_CARD, RESIDENTS[CARD]]
    upstream = [(topic, payload) for _, topic, payload in everything.messages
                if topic != sim.topic]
    assert any(topic.startswith(f"community/{unique_id}/") for topic, _ in upstream)
    for topic, payload in upstream:
        assert not holds_any(f"{topic} {payload.decode(errors='replace')}", secrets), topic
    assert not holds_any(json.dumps(export), secrets)
    assert not holds_any(local, secrets)
    assert holds_any(json.dumps(sim.published), secrets)  # the terminal did send them


async def test_forced_and_held_doors_raise_alarms_a_granted_door_does_not(
        tmp_path, mosquitto, unique_id) -> None:
    clock = SteppedClock()  # the terminal's and the gateway's time
    async with DoorSimulator(broker=("127.0.0.1", mosquitto.port), terminal_id=unique_id,
                             walk_s=0.3, release_s=1.0, clock=clock) as sim, \
            MqttRecorder(mosquitto.port, f"community/{unique_id}/alarm_events") as mqtt:
        raw = door_site(unique_id, mqtt_port=mosquitto.port, modbus_port=sim.modbus_port,
                        terminal=unique_id, rules=DOOR_RULES)
        async with running_gateway(write_site(tmp_path, raw), clock=clock) as gw:
            await wait_until(lambda: gw.drivers["terminal"].connected
                             and ("doors", 2) in gw.pipeline.latest, 5, "gateway ready")

            async def granted(grant) -> None:
                # A person opens the door a moment after the grant: the gateway has the
                # grant (MQTT) before it polls the opening (Modbus), as on site.
                events = gw.pipeline.events
                await grant
                await wait_until(lambda: gw.pipeline.events > events, 5, "the grant seen")

            await granted(asyncio.sleep(0, sim.swipe(1)))
            await sim.walk_through(1)      # granted: no alarm
            await granted(sim.press_exit(2))
            await sim.walk_through(2)      # exit button: no alarm
            await granted(sim.press_exit(2))  # pressed, but nobody goes through: a grant unused
            closed = clock.time()
            # Before time moves on, the gateway has seen the door module polled since the
            # doors closed, at the time it happened.
            await wait_until(lambda: all(gw.pipeline.latest[("doors", d)].ts > closed
                                         for d in (1, 2)), 5, "the walks seen")
            clock.advance(2.2)             # scenario time: the grants age past `within`
            await sim.force_open(2, 0.3)   # nobody granted: forced
            forced = await mqtt.wait_for(lambda: raised(mqtt, "door-forced"), 3)
            await granted(asyncio.sleep(0, sim.swipe(1)))
            await sim.walk_through(1, 1.2)  # granted, but open past 0.6 s: held
            held = await mqtt.wait_for(lambda: raised(mqtt, "door-held"), 3)
    assert [a["location"] for a in forced] == [{"building": "3", "unit": "1", "door": 2}]
    assert forced[0]["severity"] == 1
    assert [a["location"]["door"] for a in held] == [1]
    assert len(raised(mqtt, "door-forced")) == 1


async def test_session_keeps_what_the_terminal_sends_while_the_gateway_is_down(
        tmp_path, mosquitto, unique_id) -> None:
    series = tmp_path / "series.lp"
    async with DoorSimulator(broker=("127.0.0.1", mosquitto.port), terminal_id=unique_id) as sim:
        path = write_site(tmp_path, door_site(unique_id, mqtt_port=mosquitto.port,
                                              modbus_port=sim.modbus_port, terminal=unique_id,
                                              series=series))
        async with running_gateway(path) as gw:
            await wait_until(lambda: gw.drivers["terminal"].connected, 5, "first session")
        # the gateway is stopped: the broker holds the terminal's QoS 1 messages
        sent = [sim.deny(1, f"4400{i:04d}") for i in range(6)]
        await sim.publisher.flush()
        stamps = [doc["time"] for doc in sim.published if doc.get("code") == 6]
        async with running_gateway(path) as gw:
            terminal = gw.drivers["terminal"]
            await wait_until(lambda: terminal.stats["events"] >= 6, 5, "queued events delivered")
        assert terminal.stats["events"] == 6 and terminal.client_id == f"gateway-{unique_id}-terminal"
    lines = {line for line in series.read_text().splitlines() if "event=denied" in line}
    assert len(lines) == 6
    # each keeps the time the terminal gave it (not the time it arrived), spaced at
    # least 1 ms apart so that none overwrites another upstream
    kept = sorted(int(line.rsplit(" ", 1)[1]) / 1e9 for line in lines)
    given = sorted(parse_timestamp(t) for t in stamps)
    assert all(abs(k - g) < 0.01 for k, g in zip(kept, given)) and len(set(kept)) == 6
    assert not holds_any(series.read_text(), sent)


async def test_malformed_messages_are_counted_and_silence_takes_the_terminal_offline(
        tmp_path, mosquitto, unique_id) -> None:
    async with DoorSimulator(broker=("127.0.0.1", mosquitto.port), terminal_id=unique_id,
                             heartbeat_s=0.2) as sim, \
            MqttRecorder(mosquitto.port, f"community/{unique_id}/alarm_events") as mqtt:
        raw = door_site(unique_id, mqtt_port=mosquitto.port, modbus_port=sim.modbus_port,
                        terminal=unique_id, silence_timeout=1.0)
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            terminal = gw.drivers["terminal"]
            runner = next(r for r in gw.runners if r.device_id == "terminal")
            await wait_until(lambda: runner.health.online is True, 5, "terminal online")
            sim.set_fault("malformed")
            for _ in range(3):
                sim.deny(1)
            await wait_until(lambda: terminal.stats.get("malformed_json", 0) >= 3
                             and terminal.stats.get("no_content", 0) >= 3, 5, "bad messages counted")
            assert terminal.stats["events"] >= 3 and runner.health.online is True
            sim.set_fault("silence")  # terminal quiet, door module not answering
            offline = await mqtt.wait_for(lambda: {a["device"] for _, e in mqtt.json_on("")
                                                   if e["event"] == "raised"
                                                   for a in [e["alarm"]]
                                                   if a["rule"] == "device_offline"} >= {"terminal", "doors"}, 5)
            sim.set_fault(None)
            await wait_until(lambda: runner.health.online is True, 5, "terminal back")
    assert offline


async def test_simulate_door_from_the_command_line(mosquitto, unique_id, free_port) -> None:
    async with MqttRecorder(mosquitto.port, f"access/{unique_id}/events") as mqtt:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "simulate", "door", "--scenario", "tamper",
            "--incident-after", "0.2", "--terminal-id", unique_id,
            "--broker", f"127.0.0.1:{mosquitto.port}", "--tcp", f"127.0.0.1:{free_port()}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            await mqtt.wait_for(lambda: [d for _, d in mqtt.json_on("events")
                                         if d.get("code") == "tamper"], 10)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert "INCIDENT tamper" in out.decode() and "Modbus TCP" in out.decode()


async def test_a_retained_event_is_not_replayed_as_new_at_each_start(
        tmp_path, mosquitto, unique_id) -> None:
    topic = f"access/{unique_id}/events"
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        await client.publish(topic, json.dumps({"code": 34, "door": 1}).encode(), qos=1,
                             retain=True)
    async with DoorSimulator(broker=("127.0.0.1", mosquitto.port), terminal_id=unique_id) as sim:
        raw = door_site(unique_id, mqtt_port=mosquitto.port, modbus_port=sim.modbus_port,
                        terminal=unique_id, rules=[r for r in DOOR_RULES if r["id"] == "duress"])
        path = write_site(tmp_path, raw)
        for _ in range(2):  # a first start, and a restart with the session kept
            async with running_gateway(path) as gw:
                terminal = gw.drivers["terminal"]
                await wait_until(lambda: terminal.stats.get("retained_events") == 1, 5,
                                 "retained duress seen")
                sim.tamper()  # a live event still goes through
                await wait_until(lambda: terminal.stats["events"] == 1, 5, "live event")
                assert not gw.alarms.open_alarms()
