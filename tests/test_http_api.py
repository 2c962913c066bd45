"""The local HTTP API against a running gateway: health, metrics, devices, alarms, stream, CLI."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import running_gateway, wait_until, write_site

TOKEN = "api-token-for-tests-7f3a"


@pytest.fixture(autouse=True)
def api_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_API_TOKEN", TOKEN)


def synthetic_site(site_id: str, http_port: int, *, token: bool = True, **extra) -> dict:
    """Two synthetic meters and a rule that always fires on one of them."""
    http: dict = {"listen": f"127.0.0.1:{http_port}"}
    if token:
        http["token"] = {"env": "TEST_API_TOKEN"}
    raw = {
        "site": {"id": site_id},
        "http": http,
        "devices": [
            {"id": "meter-a", "type": "synthetic", "kind": "meter", "fields": ["power"],
             "poll_interval": 0.05, "location": {"building": "3"}},
            {"id": "meter-b", "type": "synthetic", "kind": "meter", "fields": ["power", "temp"],
             "channels": 2, "poll_interval": 0.05},
        ],
        "rules": [{"id": "always", "type": "threshold", "select": {"devices": ["meter-a"]},
                   "field": "power", "above": -1, "severity": 2}],
    }
    raw.update(extra)
    return raw


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, dict | str]:
    async with session.get(url) as r:
        text = await r.text()
        try:
            return r.status, json.loads(text)
        except json.JSONDecodeError:
            return r.status, text


async def test_healthz_metrics_and_devices(tmp_path, free_port, unique_id) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with running_gateway(write_site(tmp_path, synthetic_site(unique_id, port))) as gw, \
            aiohttp.ClientSession() as s:
        await wait_until(lambda: gw.http.listening and all(r.health.polls > 2 for r in gw.runners),
                         5, "API up and devices polled")
        status, health = await get(s, f"{base}/healthz")
        assert status == 200 and health["status"] == "ok" and health["down"] == []

        status, text = await get(s, f"{base}/metrics")
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(text)}
        polls = {s.labels["device"]: s.value for s in families["community_gateway_device_polls"].samples
                 if s.name.endswith("_total")}
        assert polls.keys() == {"meter-a", "meter-b"} and min(polls.values()) > 2
        online = {s.labels["device"]: s.value for s in families["community_gateway_device_online"].samples}
        assert online == {"meter-a": 1.0, "meter-b": 1.0}
        assert [s.value for s in families["community_gateway_device_last_success_timestamp_seconds"].samples]
        assert [s.value for s in families["community_gateway_device_response_seconds"].samples]
        by_state = {(s.labels["state"], s.labels["acked"]): s.value
                    for s in families["community_gateway_alarms"].samples}
        assert by_state[("active", "false")] == 1
        assert families["community_gateway_pipeline_queue_capacity"].samples[0].value == 10_000
        assert families["community_gateway_readings"].samples[0].value > 0
        info = families["community_gateway_info"].samples[0]
        assert info.labels["site"] == unique_id

        status, body = await get(s, f"{base}/api/devices")
        devices = {d["id"]: d for d in body["devices"]}
        assert devices["meter-a"]["online"] is True and devices["meter-a"]["kind"] == "meter"
        assert devices["meter-a"]["location"] == {"building": "3"}
        assert [r["channel"] for r in devices["meter-b"]["readings"]] == [1, 2]
        assert set(devices["meter-b"]["readings"][0]["values"]) == {"power", "temp"}


async def test_healthz_names_what_is_down(tmp_path, free_port, unique_id) -> None:
    port = free_port()
    raw = synthetic_site(unique_id, port, mqtt={"host": "127.0.0.1", "port": free_port()})
    raw["buses"] = [{"id": "dead", "type": "modbus_tcp", "host": "127.0.0.1", "port": free_port(),
                     "timeout": 0.2, "retries": 0}]
    raw["devices"].append({"id": "charger-x", "type": "modbus", "bus": "dead",
                           "profile": "ev-cabinet", "poll_interval": 0.1, "offline_after": 1})
    async with running_gateway(write_site(tmp_path, raw)) as gw, aiohttp.ClientSession() as s:
        await wait_until(lambda: gw.http.listening, 5, "API up")
        await wait_until(lambda: any(r.health.online is False for r in gw.runners), 5, "offline")
        status, health = await get(s, f"http://127.0.0.1:{port}/healthz")
    assert status == 503 and health["status"] == "down"
    assert any(d.startswith("mqtt: not connected") for d in health["down"])
    assert "device charger-x: offline" in health["down"]
    assert health["devices"] == {"total": 3, "offline": 1}


async def test_ack_needs_the_token(tmp_path, free_port, unique_id) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with running_gateway(write_site(tmp_path, synthetic_site(unique_id, port))) as gw, \
            aiohttp.ClientSession() as s:
        await wait_until(lambda: gw.http.listening and gw.alarms.open_alarms(), 5, "an alarm")
        [alarm] = gw.alarms.open_alarms()
        url = f"{base}/api/alarms/{alarm.id}/ack"
        async with s.post(url, json={"by": "wang"}) as r:
            assert r.status == 401 and "Bearer" in r.headers["WWW-Authenticate"]
        async with s.post(url, json={"by": "wang"}, headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        assert not alarm.acked
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with s.post(url, json={"note": "no name"}, headers=auth) as r:
            assert r.status == 400 and "by" in (await r.json())["error"]
        async with s.post(f"{base}/api/alarms/nope/ack", json={"by": "wang"}, headers=auth) as r:
            assert r.status == 404
        async with s.post(url, json={"by": "wang", "note": "checked"}, headers=auth) as r:
            assert r.status == 200 and (await r.json())["acked"] is True
        assert alarm.acked and alarm.history[-1]["by"] == "wang"
        status, body = await get(s, f"{base}/api/alarms")
        assert body["alarms"][0]["id"] == alarm.id and body["alarms"][0]["acked"] is True


async def test_writes_are_off_without_a_token(tmp_path, free_port, unique_id) -> None:
    port = free_port()
    raw = synthetic_site(unique_id, port, token=False)
    async with running_gateway(write_site(tmp_path, raw)) as gw, aiohttp.ClientSession() as s:
        await wait_until(lambda: gw.http.listening and gw.alarms.open_alarms(), 5, "an alarm")
        [alarm] = gw.alarms.open_alarms()
        async with s.post(f"http://127.0.0.1:{port}/api/alarms/{alarm.id}/ack", json={"by": "x"},
                          headers={"Authorization": "Bearer anything"}) as r:
            assert r.status == 403 and "http.token" in (await r.json())["error"]
        assert not alarm.acked


async def test_stream_filters_and_carries_alarms(tmp_path, free_port, unique_id) -> None:
    port = free_port()
    async with running_gateway(write_site(tmp_path, synthetic_site(unique_id, port))) as gw, \
            aiohttp.ClientSession() as s:
        await wait_until(lambda: gw.http.listening and gw.alarms.open_alarms(), 5, "an alarm")
        [alarm] = gw.alarms.open_alarms()
        events: list[tuple[str, dict]] = []
        async with s.get(f"http://127.0.0.1:{port}/api/stream?device=meter-a") as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            gw.alarms.ack(alarm.id, by="zhao")
            name = None
            async with asyncio.timeout(5):
                async for raw in r.content:
                    line = raw.decode().strip()
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        events.append((name, json.loads(line[5:])))
                    kinds = {n for n, _ in events}
                    if {"reading", "alarm"} <= kinds and sum(n == "reading" for n, _ in events) >= 3:
                        break
    readings = [b for n, b in events if n == "reading"]
    assert {b["device"] for b in readings} == {"meter-a"}
    assert len({b["ts"] for b in readings}) == len(readings)  # each reading once
    [acked] = [b for n, b in events if n == "alarm"]
    assert acked["event"] == "acked" and acked["by"] == "zhao" and acked["alarm"]["id"] == alarm.id


async def test_stopping_with_a_stream_open_is_quick(tmp_path, free_port, unique_id) -> None:
    port = free_port()
    async with aiohttp.ClientSession() as s:
        async with running_gateway(write_site(tmp_path, synthetic_site(unique_id, port))) as gw:
            await wait_until(lambda: gw.http.listening, 5, "API up")
            response = await s.get(f"http://127.0.0.1:{port}/api/stream")
            await response.content.readline()
            stop = asyncio.get_running_loop().time()
        assert asyncio.get_running_loop().time() - stop < 5  # not aiohttp's 60 s grace period
        response.close()


async def run_cli(*args: str, env: dict | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)
    async with asyncio.timeout(20):
        out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


async def test_alarms_and_tail_commands(tmp_path, free_port, unique_id) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with running_gateway(write_site(tmp_path, synthetic_site(unique_id, port))) as gw:
        await wait_until(lambda: gw.http.listening and gw.alarms.open_alarms(), 5, "an alarm")
        [alarm] = gw.alarms.open_alarms()

        rc, out, _ = await run_cli("alarms", "list", "--url", url)
        assert rc == 0 and alarm.id in out and "meter-a" in out and "building 3" in out

        no_token = {k: v for k, v in os.environ.items() if k != "GATEWAY_API_TOKEN"}
        rc, _, err = await run_cli("alarms", "ack", alarm.id, "--by", "wang", "--url", url,
                                   env=no_token)
        assert rc == 1 and "GATEWAY_API_TOKEN" in err and not alarm.acked
        rc, _, err = await run_cli("alarms", "ack", alarm.id, "--by", "wang", "--url", url,
                                   env={**no_token, "GATEWAY_API_TOKEN": "wrong"})
        assert rc == 1 and "refused the token" in err and not alarm.acked
        rc, out, _ = await run_cli("alarms", "ack", alarm.id, "--by", "wang", "--note", "seen",
                                   "--url", url, "--token-env", "TEST_API_TOKEN")
        assert rc == 0 and "acknowledged" in out and alarm.acked

        rc, out, _ = await run_cli("tail", "--url", url, "--device", "meter-b", "--count", "6")
        lines = out.splitlines()
        assert rc == 0 and len(lines) == 6
        assert all(" reading  meter-b ch " in line and "power=" in line for line in lines)

    rc, _, err = await run_cli("tail", "--url", url)
    assert rc == 1 and "cannot reach the gateway" in err


async def test_a_taken_port_does_not_stop_the_gateway(tmp_path, free_port, unique_id, caplog) -> None:
    port = free_port()
    blocker = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
    with caplog.at_level(logging.ERROR, logger="gateway.operations.http_api"):
        async with running_gateway(write_site(tmp_path, synthetic_site(unique_id, port))) as gw:
            await wait_until(lambda: "cannot listen" in caplog.text, 5, "bind failure logged")
            polls = gw.runners[0].health.polls
            await wait_until(lambda: gw.runners[0].health.polls > polls + 3, 5, "still polling")
            blocker.close()
            await blocker.wait_closed()
            await wait_until(lambda: gw.http.listening, 10, "listening once the port is free")
            async with aiohttp.ClientSession() as s:
                status, _ = await get(s, f"http://127.0.0.1:{port}/healthz")
            assert status == 200
    assert caplog.text.count("cannot listen") == 1


async def test_metrics_cover_the_upstream_and_the_outbox(tmp_path, free_port, unique_id,
                                                         victoria, monkeypatch) -> None:
    monkeypatch.setenv("TEST_INFLUX_TOKEN", "t")
    port = free_port()
    raw = synthetic_site(unique_id, port, influxdb={
        "url": victoria.url, "org": "o", "bucket": "b", "token": {"env": "TEST_INFLUX_TOKEN"},
        "flush_interval": 0.1})
    async with running_gateway(write_site(tmp_path, raw)) as gw, aiohttp.ClientSession() as s:
        await wait_until(lambda: gw.http.listening and gw.sinks[0].written > 0, 5,
                         "written upstream")
        _, text = await get(s, f"http://127.0.0.1:{port}/metrics")
    samples = {(m.name, tuple(sorted(m.labels.items()))): m.value
               for f in text_string_to_metric_families(text) for m in f.samples}
    assert samples[("community_gateway_sink_written_total", (("sink", "influxdb"),))] > 0
    assert samples[("community_gateway_sink_up", (("sink", "influxdb"),))] == 1
    assert ("community_gateway_sink_last_success_timestamp_seconds",
            (("sink", "influxdb"),)) in samples
    # the outbox's own stats, whatever they are, as metrics (counters end in _total)
    outbox = {name for name, _ in samples if name.startswith("community_gateway_outbox_")}
    assert "community_gateway_outbox_committed_total" in outbox
    assert "community_gateway_outbox_oldest_unsent_age_seconds" in outbox
    assert ("community_gateway_sink_lag_rows", (("sink", "influxdb"),)) in samples
    # each sink number once, under the sink_ family (no upstream_ or outbox_sink_ twin)
    assert not [n for n, _ in samples
                if n.startswith(("community_gateway_upstream_", "community_gateway_outbox_sink_"))]
    # the process's own health: event-loop lag and bytes written to disk (issue 16)
    assert samples[("community_gateway_process_disk_write_bytes_total", ())] >= 0
    assert ("community_gateway_process_disk_write_bytes_per_hour", ()) in samples
    assert samples[("community_gateway_process_event_loop_lag_p99_seconds", ())] >= 0
    assert ("community_gateway_process_event_loop_stalls_total", ()) in samples
