"""Several gateways (one per building) sharing one broker and one TSDB keep their data apart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys

import yaml

from harness import MqttRecorder, wait_until

SITES = ("north-b1", "north-b2", "south-b7")


def building_site(site_id: str, mqtt_port: int, victoria_url: str, state_dir: str) -> dict:
    """The same device ids in every building, plus one of its own."""
    own = f"meter-{site_id}"
    return {
        "site": {"id": site_id},
        "state_dir": state_dir,
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port},
        "influxdb": {"url": victoria_url, "org": "district", "bucket": "sensing",
                     "token": {"env": "TEST_INFLUX_TOKEN"}, "flush_interval": 0.2},
        "devices": [{"id": d, "type": "synthetic", "kind": "meter", "fields": ["power"],
                     "poll_interval": 0.1} for d in ("meter-1", own)],
        "rules": [{"id": "always", "type": "threshold", "select": {"kinds": ["meter"]},
                   "field": "power", "above": -1, "severity": 3}],
    }


async def test_three_gateways_share_a_broker_and_a_tsdb(tmp_path, mosquitto, victoria) -> None:
    suffix = tmp_path.name[-6:].replace("_", "").lower()
    sites = [f"{s}-{suffix}" for s in SITES]
    env = dict(os.environ, TEST_INFLUX_TOKEN="district-token")
    procs = []
    async with MqttRecorder(mosquitto.port, "community/#") as mqtt:
        try:
            for i, site in enumerate(sites):
                folder = tmp_path / site
                folder.mkdir()
                path = folder / "site.yaml"
                # The last one writes through a path prefix, as to a VictoriaMetrics
                # cluster's vminsert (/insert/<tenant>/influx): the client keeps the prefix.
                url = victoria.url + ("/influx" if i == 2 else "")
                path.write_text(yaml.safe_dump(building_site(site, mosquitto.port, url,
                                                             str(folder / "state"))))
                procs.append(await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "gateway", "run", str(path), env=env,
                    stderr=asyncio.subprocess.DEVNULL))

            def raised_by_site() -> dict[str, set[str]]:
                out: dict[str, set[str]] = {}
                for _, topic, payload in mqtt.messages:
                    parts = topic.split("/")
                    if parts[-1] == "alarm_events" and b'"raised"' in payload:
                        out.setdefault(parts[1], set()).add(
                            re.search(rb'"device": ?"([^"]+)"', payload).group(1).decode())
                return out

            await wait_until(lambda: all(len(raised_by_site().get(s, ())) == 2 for s in sites),
                             15, "every building's alarms")
            series = await victoria.wait_for_series_async(
                'meter_power{device="meter-1"}', lambda s: len(s) == 3, timeout=15)
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        await mqtt.wait_for(lambda: all(
            [p for _, t, p in mqtt.messages if t == f"community/{s}/status"][-1:] == [b"offline"]
            for s in sites), 5)

    # MQTT: each site's alarms name only its own devices, on its own topics
    raised = raised_by_site()
    assert set(raised) == set(sites)
    for site in sites:
        assert raised[site] == {"meter-1", f"meter-{site}"}
    assert all(topic.split("/")[1] in sites for _, topic, _ in mqtt.messages)

    # one client id per gateway, and none took another's session over
    log = mosquitto.log()
    for site in sites:
        assert len(re.findall(rf"as gateway-{re.escape(site)} ", log)) == 1
    assert "already connected" not in log and "session taken over" not in log.lower()

    # TSDB: the shared device id is three series told apart by site; no series mixes sites
    assert sorted(s["metric"]["site"] for s in series) == sorted(sites)
    everything = await victoria.export_async('{__name__=~"meter_.*"}')
    by_site: dict[str, set[str]] = {}
    for s in everything:
        by_site.setdefault(s["metric"]["site"], set()).add(s["metric"]["device"])
    assert by_site == {site: {"meter-1", f"meter-{site}"} for site in sites}
