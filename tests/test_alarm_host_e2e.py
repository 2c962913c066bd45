"""Alarm hosts end to end: a simulated panel dials the gateway over TCP (SIA DC-09 /
Contact ID) -> alarms on MQTT with the zone's place, supervision readings in
VictoriaMetrics, a silent panel offline; the simulator's command line."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import yaml

from harness import MqttRecorder, running_gateway, wait_until, write_site
from simulators.alarm_panel import AlarmPanelSimulator

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "configs", "alarm-host-site.yaml")


def panel_site(site_id: str, *, mqtt_port: int, listen_port: int, influx_url: str | None = None,
               silence_timeout: float = 300) -> dict:
    """The example site, on test ports (its rules are the ones under test)."""
    with open(EXAMPLE, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    raw["site"]["id"] = site_id
    raw["mqtt"] = {"host": "127.0.0.1", "port": mqtt_port}
    raw.pop("local_series")
    panel = raw["devices"][0]
    panel["listen"] = f"127.0.0.1:{listen_port}"
    panel["silence_timeout"] = silence_timeout
    if influx_url is not None:
        raw["influxdb"] = {"url": influx_url, "org": "o", "bucket": "b",
                           "token": {"env": "TEST_INFLUX_TOKEN"}, "flush_interval": 0.2}
    return raw


def events(mqtt: MqttRecorder, kind: str) -> list[dict]:
    return [e["alarm"] for _, e in mqtt.json_on("/alarm_events") if e["event"] == kind]


async def test_one_key_intrusion_and_restore_reach_mqtt_with_the_zone_place(
        tmp_path, mosquitto, victoria, unique_id, free_port, monkeypatch) -> None:
    monkeypatch.setenv("TEST_INFLUX_TOKEN", "test-token")
    port = free_port()
    raw = panel_site(unique_id, mqtt_port=mosquitto.port, listen_port=port,
                     influx_url=victoria.url)
    async with MqttRecorder(mosquitto.port, f"community/{unique_id}/#") as mqtt, \
            running_gateway(write_site(tmp_path, raw)) as gw:
        receiver = gw.receivers[f"127.0.0.1:{port}"]
        await wait_until(lambda: receiver.bound_port == port, 5, "receiver listening")
        async with AlarmPanelSimulator(receiver=("127.0.0.1", port), account="1234",
                                       heartbeat_s=0.2) as panel:
            assert await panel.send_event(1, "120", 5) == "ACK"  # one-key button, zone 5
            assert await panel.send_event(1, "130", 3) == "ACK"  # fence, zone 3
            assert await panel.send_event(3, "130", 3) == "ACK"  # fence restored
            assert await panel.send_event(1, "301", 0) == "ACK"  # mains lost
            fault = "device_fault:mains_power_lost"
            await wait_until(lambda: any(a.rule == fault and a.condition
                                         for a in gw.alarms.open_alarms()), 5, "mains fault")
            assert await panel.send_event(3, "301", 0) == "ACK"  # mains back
            await wait_until(lambda: not any(a.rule == fault and a.condition
                                             for a in gw.alarms.open_alarms()), 5, "restored")
            raised = await mqtt.wait_for(lambda: len(events(mqtt, "raised")) == 3 and
                                         events(mqtt, "cleared") and events(mqtt, "raised"), 5)
            online = await victoria.wait_for_series_async(
                f'alarm_host_online{{site="{unique_id}"}}', lambda s: len(s) == 1, timeout=10)
    by_rule = {a["rule"]: a for a in raised}
    one_key = by_rule["one-key-alarm"]
    assert one_key["severity"] == 1 and one_key["device"] == "panel-b7"
    assert one_key["location"] == {"building": "7", "zone": 5, "zone_name": "emergency button",
                                   "unit": "2", "floor": "6", "room": "602"}
    assert one_key["message"] == ("One-key alarm: emergency button at building 7, unit 2, "
                                  "floor 6, 602, zone 5")
    assert one_key["details"]["code"] == "1120"
    intrusion = by_rule["intrusion"]
    assert intrusion["location"]["zone_name"].startswith("north fence")
    assert {c["rule"] for c in events(mqtt, "cleared")} == {"intrusion",
                                                            "device_fault:mains_power_lost"}
    # the latched one-key alarm stays open until a guard resets it; the intrusion's
    # condition went with its restore
    still_open = {a.rule: a for a in gw.alarms.open_alarms()}
    assert still_open["one-key-alarm"].latched
    assert "intrusion" not in still_open or not still_open["intrusion"].condition
    assert online[0]["metric"]["device"] == "panel-b7"


async def test_a_silent_panel_goes_offline_and_comes_back(tmp_path, mosquitto, unique_id,
                                                         free_port) -> None:
    port = free_port()
    raw = panel_site(unique_id, mqtt_port=mosquitto.port, listen_port=port, silence_timeout=0.6)
    async with running_gateway(write_site(tmp_path, raw)) as gw:
        runner = next(r for r in gw.runners if r.device_id == "panel-b7")
        receiver = gw.receivers[f"127.0.0.1:{port}"]
        await wait_until(lambda: receiver.bound_port == port, 5, "receiver listening")
        async with AlarmPanelSimulator(receiver=("127.0.0.1", port), account="1234",
                                       heartbeat_s=0.1) as panel:
            await wait_until(lambda: runner.health.online is True, 5, "online")
            panel.fault = "silent"
            await wait_until(lambda: runner.health.online is False, 5, "offline")
            assert any(a.rule == "device_offline" for a in gw.alarms.open_alarms())
            panel.fault = None
            await wait_until(lambda: runner.health.online is True, 5, "back online")


async def test_simulate_alarm_panel_from_the_command_line(free_port) -> None:
    """The installer's tool: it dials a receiver and prints what the receiver answered."""
    from drivers.sia_dc09.receiver import AlarmHostDevice, Dc09Receiver
    from gateway.clock import SystemClock

    port = free_port()
    receiver = Dc09Receiver(name="rx", host="127.0.0.1", port=port, clock=SystemClock())
    got: list = []

    async def emit(items):
        got.extend(items)

    task = asyncio.create_task(AlarmHostDevice(device_id="p", receiver=receiver,
                                               account="1234").stream(emit))
    await wait_until(lambda: receiver.bound_port == port, 5, "listening")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "simulate", "alarm-panel", "--receiver",
        f"127.0.0.1:{port}", "--account", "1234", "--scenario", "one-key",
        "--incident-after", "0.1", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        await wait_until(lambda: any(getattr(i, "name", None) == "emergency" for i in got), 10,
                         "one-key event")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await proc.communicate()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert proc.returncode == 0, err.decode()
    assert "1120 zone 5: ACK" in out.decode()
