"""The drivers' own protocol counters in /metrics: ``community_gateway_driver_events_total``."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.operations.metrics import driver_metrics
from harness import running_gateway, wait_until, write_site
from simulators.door import DoorSimulator
from simulators.radar import radar_on_pty
from test_door_e2e import door_site
from test_radar_e2e import radar_site

EVENTS = "community_gateway_driver_events_total"
FAILING = "community_gateway_driver_failing_slaves"


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_PSEUDONYM_KEY", "test-pseudonym-key-0123456789")


async def scrape(port: int, name: str = EVENTS,
                 labels: tuple[str, ...] = ("device", "counter")) -> dict[tuple[str, ...], float]:
    """Samples of ``name`` by the values of ``labels``, parsed with prometheus_client's parser."""
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics") as r:
        assert r.status == 200
        text = await r.text()
    return {tuple(m.labels[k] for k in labels): m.value
            for f in text_string_to_metric_families(text) for m in f.samples if m.name == name}


async def test_radar_bad_checksums_show_in_the_metrics(tmp_path, free_port, unique_id) -> None:
    port = free_port()
    async with radar_on_pty(protocol="mr60fda1", scenario="normal", seed=3, interval=0.05,
                            refresh=0.2, heartbeat=0.2) as (sim, pair):
        raw = radar_site(unique_id, port=pair.link_a, codec="mr60fda1")
        raw["http"] = {"listen": f"127.0.0.1:{port}"}
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            driver = gw.drivers["radar-1"]
            await wait_until(lambda: gw.http.listening and driver.counters()["frames_ok"] >= 3,
                             5, "radar frames decoded")
            before = await scrape(port)
            assert before[("radar-1", "frames_ok")] >= 3 and before[("radar-1", "opens")] == 1
            sim.faults.bad_checksum = True
            await wait_until(lambda: driver.counters()["bad_checksum"]
                             >= before[("radar-1", "bad_checksum")] + 3, 5, "bad checksums")
            after = await scrape(port)
    assert after[("radar-1", "bad_checksum")] >= before[("radar-1", "bad_checksum")] + 3
    # every counter the driver keeps is exported, nothing else under this device
    assert {c for d, c in after if d == "radar-1"} == set(driver.counters())


async def test_mqtt_problems_and_modbus_requests_show_in_the_metrics(
        tmp_path, mosquitto, free_port, unique_id) -> None:
    port = free_port()
    async with DoorSimulator(broker=("127.0.0.1", mosquitto.port), terminal_id=unique_id,
                             heartbeat_s=0.2) as sim:
        raw = door_site(unique_id, mqtt_port=mosquitto.port, modbus_port=sim.modbus_port,
                        terminal=unique_id)
        raw["http"] = {"listen": f"127.0.0.1:{port}"}
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            terminal, doors = gw.drivers["terminal"], gw.drivers["doors"]
            await wait_until(lambda: gw.http.listening and terminal.connected
                             and doors.requests >= 2, 5, "terminal subscribed, doors polled")
            sim.set_fault("malformed")
            sim.deny(1)
            await wait_until(lambda: terminal.stats.get("malformed_json", 0) >= 1, 5,
                             "malformed message counted")
            samples = await scrape(port)
            failing = await scrape(port, FAILING, ("device",))
    assert samples[("terminal", "malformed_json")] >= 1
    assert samples[("terminal", "messages")] >= 1
    assert samples[("doors", "requests")] >= 2
    assert ("doors", "request_errors") in samples
    assert failing == {("doors",): 0}


def test_only_numbers_from_counters_are_exported_and_failing_slaves_is_a_gauge() -> None:
    class Counting:
        failing_slaves = frozenset({2, 5})

        def counters(self) -> dict:
            return {"requests": 7, "flag": True, "note": "x"}

    events, failing = driver_metrics({"b": Counting(), "a": object()})
    assert [(s.name, s.labels, s.value) for s in events.samples] == [
        (EVENTS, {"device": "b", "counter": "requests"}, 7)]
    assert events.type == "counter" and failing.type == "gauge"
    assert [(s.labels, s.value) for s in failing.samples] == [({"device": "b"}, 2)]
