"""The hub's parts without a broker: its config file, the gateway's info and health
payloads, the live picture's scope and rebuild, the history store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from gateway.runtime.site import load_site
from gateway.hub.config import HubScope, load_hub_config
from gateway.hub.history import HistoryQuery, HubHistory
from gateway.hub.live import LivePicture
from gateway.runtime.site_status import health_payload, info_payload

ROOT = Path(__file__).resolve().parents[1]
HUB_EXAMPLE = ROOT / "configs" / "hub" / "subdistrict-hub.yaml"


class Clock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def time(self) -> float:
        return self.now


def hub_file(tmp_path: Path, **extra) -> Path:
    raw = {"hub": {"id": "north-room"}, "broker": {"host": "127.0.0.1", "port": 1883},
           "scope": {"communities": ["North"]}, "state_dir": "state", **extra}
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# -- config ---------------------------------------------------------------------------------


def test_the_example_hub_file_loads() -> None:
    config = load_hub_config(HUB_EXAMPLE)
    assert config.scope.subdistrict == "Riverside"
    assert config.client_id == "hub-riverside-subdistrict"
    assert config.broker.port == 8883  # tls without a port


def test_check_recognises_a_hub_file(tmp_path: Path, capsys) -> None:
    path = hub_file(tmp_path)
    assert main(["check", str(path)]) == 0
    assert "hub north-room" in capsys.readouterr().out
    # relative paths are taken from the file's folder
    assert load_hub_config(path).state_dir == tmp_path / "state"


def test_check_names_the_bad_key_of_a_hub_file(tmp_path: Path, capsys) -> None:
    path = hub_file(tmp_path, history={"retention_dayz": 3})
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "history.retention_dayz: unknown key" in err
    path = hub_file(tmp_path, scope={})
    assert main(["check", str(path)]) == 2
    assert "scope: name a subdistrict, communities or compounds" in capsys.readouterr().err


def test_the_hub_imports_no_gateway_runtime_and_no_driver() -> None:
    # The console package is shared with the gateway (one console for many sites); the
    # gateway's runtime, its site loader and the drivers stay out of the hub.
    code = ("import sys, gateway.hub.service, gateway.hub.cli; "
            "print(sorted(m for m in sys.modules if m.startswith(('gateway.runtime', "
            "'gateway.config.loader', 'drivers.', 'pymodbus', 'serial'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_scope_by_subdistrict_community_and_compound() -> None:
    north = {"subdistrict": "Riverside", "community": "North", "compound": "N1"}
    south = {"subdistrict": "Riverside", "community": "South", "compound": "S1"}
    assert HubScope(subdistrict="Riverside").covers(north) and HubScope(subdistrict="Riverside").covers(south)
    assert HubScope(communities=["North"]).covers(north)
    assert not HubScope(communities=["North"]).covers(south)
    assert HubScope(compounds=["S1"]).covers(south) and not HubScope(compounds=["S1"]).covers(north)
    assert not HubScope(subdistrict="Hillside").covers(north)
    assert not HubScope(communities=["North"]).covers(None)


# -- what a gateway publishes ---------------------------------------------------------------


def test_info_and_health_payloads(tmp_path: Path) -> None:
    site = {"site": {"id": "n-b1", "name": "North 1", "subdistrict": "Riverside",
                     "community": "North", "compound": "N1"},
            "state_dir": str(tmp_path / "state"),
            "mqtt": {"host": "127.0.0.1", "health_interval": 5},
            "devices": [{"id": "meter-1", "type": "synthetic", "kind": "meter", "fields": ["p"],
                         "location": {"building": "3", "floor": "B1"}},
                        {"id": "meter-2", "type": "synthetic", "kind": "meter", "fields": ["p"],
                         "location": {"building": "4"}}]}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site))
    loaded = load_site(path)
    info = info_payload(loaded.config, loaded.devices, version="1.2.3", now=0)
    assert info["hierarchy"] == {"subdistrict": "Riverside", "community": "North",
                                 "compound": "N1", "buildings": ["3", "4"]}
    assert info["devices"][0] == {"id": "meter-1", "kind": "meter", "type": "synthetic",
                                  "location": {"building": "3", "floor": "B1"}}
    assert info["health_interval"] == 5 and info["version"] == "1.2.3"
    # a gateway for one building says so, whatever its devices' locations
    site["site"]["building"] = "3"
    path.write_text(yaml.safe_dump(site))
    loaded = load_site(path)
    assert info_payload(loaded.config, loaded.devices, version="x", now=0)["hierarchy"]["buildings"] == ["3"]

    health = health_payload(site="n-b1", now=100.0, started=40.0, interval=5,
                            devices_online={"a": True, "b": False, "c": None},
                            outbox={"rows": 12, "oldest_unsent_age_seconds": 7.25},
                            upstreams=[("influxdb", {"failing": True, "buffered": 12,
                                                     "last_success": 90.0})],
                            last_reading=99.5, open_alarms=2, unacked_urgent=1)
    assert health["devices"] == {"total": 3, "online": 1, "offline": 1, "offline_ids": ["b"]}
    assert health["outbox"] == {"rows": 12, "oldest_unsent_age_s": 7.2}
    assert health["upstreams"][0]["up"] is False
    assert health["uptime_s"] == 60.0 and health["last_reading"].endswith("39.500Z")
    json.dumps(health)


# -- the live picture -----------------------------------------------------------------------


def info(site: str, community: str) -> bytes:
    return json.dumps({"site": site, "name": site, "hierarchy": {
        "subdistrict": "Riverside", "community": community, "compound": f"{community}-1",
        "buildings": []}, "health_interval": 1}).encode()


def alarm(alarm_id: str, severity: int = 2, acked: bool = False) -> dict:
    return {"id": alarm_id, "rule": "r", "severity": severity, "state": "active", "acked": acked,
            "device": "d", "kind": "meter", "location": {"building": "3"}, "message": "m",
            "last_ts": "2026-01-01T00:00:00.000Z"}


def event(alarm_id: str, name: str = "raised", ts: str = "2026-01-01T00:00:00.000Z") -> bytes:
    return json.dumps({"event": name, "ts": ts, "alarm": alarm(alarm_id)}).encode()


def test_live_picture_keeps_only_the_sites_in_scope() -> None:
    live = LivePicture(prefix="community", scope=HubScope(communities=["North"]), clock=Clock())
    events = []
    # messages before a site's info are held until its info says where it is
    events += live.handle("community/n1/alarm_events", event("a1"))
    events += live.handle("community/s1/alarm_events", event("b1"))
    live.handle("community/n1/alarms/a1", json.dumps(alarm("a1")).encode())
    live.handle("community/s1/alarms/b1", json.dumps(alarm("b1")).encode())
    assert events == []
    events += live.handle("community/n1/info", info("n1", "North"))
    events += live.handle("community/s1/info", info("s1", "South"))
    events += live.handle("community/s1/alarm_events", event("b2"))
    live.handle("community/s1/alarms/b2", json.dumps(alarm("b2")).encode())
    assert [(e.site, e.body["alarm"]["id"]) for e in events] == [("n1", "a1")]
    assert [s.site for s in live.in_scope()] == ["n1"]
    assert [(s.site, a["id"]) for s, a in live.open_alarms()] == [("n1", "a1")]
    assert live.out_of_scope == 2
    # bad payloads are counted, nothing raises
    live.handle("community/n1/alarms/a9", b"{not json")
    live.handle("community/n1/alarm_events", b"[]")
    assert live.skipped == 2


def test_a_rebuild_drops_alarms_closed_while_the_hub_was_away() -> None:
    live = LivePicture(prefix="community", scope=HubScope(all=True), clock=Clock())
    live.handle("community/n1/info", info("n1", "North"))
    for a in ("a1", "a2"):
        live.handle(f"community/n1/alarms/{a}", json.dumps(alarm(a)).encode())
    live.begin_sync()
    live.handle("community/n1/alarms/a2", json.dumps(alarm("a2")).encode())  # a1 is gone
    assert live.end_sync() == 1
    assert [a["id"] for _, a in live.open_alarms()] == ["a2"]


# -- history --------------------------------------------------------------------------------


async def test_history_dedups_searches_exports_and_forgets_past_retention(tmp_path: Path) -> None:
    clock = Clock(1_767_225_600.0)  # 2026-01-01T00:00:00Z
    path = tmp_path / "h.sqlite3"
    history = HubHistory(path=path, retention_days=30, clock=clock)
    await history.open()
    north = {"subdistrict": "Riverside", "community": "North", "compound": "N1"}
    south = {"subdistrict": "Riverside", "community": "South", "compound": "S1"}
    first = json.loads(event("a1", ts="2026-01-01T00:00:00.000Z"))
    history.add(site="n1", place=north, body=first)
    history.add(site="n1", place=north, body=first)  # a redelivery
    history.add(site="n1", place=north, body=json.loads(event("a1", "acked", "2026-01-01T00:01:00.000Z")))
    history.add(site="s1", place=south, body=json.loads(event("b1", ts="2025-11-01T00:00:00.000Z")))
    history.add(site="s1", place=south, body={"event": "raised", "alarm": {}})  # skipped, counted
    await history.flush()
    assert (history.written, history.duplicates, history.skipped) == (3, 1, 1)
    rows = await history.search(HistoryQuery(community="North"))
    assert [(r["event"], r["alarm_id"]) for r in rows] == [("acked", "a1"), ("raised", "a1")]
    assert rows[0]["building"] == "3" and rows[0]["kind"] == "meter"
    assert await history.search(HistoryQuery.from_params({"level": "1"})) == []
    since = HistoryQuery.from_params({"since": "2026-01-01T00:00:30Z"})
    assert [r["event"] for r in await history.search(since)] == ["acked"]
    text = await history.csv(HistoryQuery(site="n1"))
    lines = text.strip().splitlines()
    assert lines[0].startswith("ts,site,subdistrict,community,compound,building,device,kind")
    assert [line.split(",")[9] for line in lines[1:]] == ["raised", "acked"]  # oldest first
    await history.close()
    # kept across a restart; what is past retention goes at the next open
    reopened = HubHistory(path=path, retention_days=30, clock=clock)
    await reopened.open()
    assert await reopened.count() == 2
    reopened.add(site="n1", place=north, body=first)  # redelivered after the restart
    await reopened.flush()
    assert reopened.duplicates == 1 and await reopened.count() == 2
    await reopened.close()


async def test_history_rejects_a_bad_filter(tmp_path: Path) -> None:
    from gateway.hub.history import HistoryError

    with pytest.raises(HistoryError, match="since"):
        HistoryQuery.from_params({"since": "yesterday"})
    with pytest.raises(HistoryError, match="level"):
        HistoryQuery.from_params({"level": "urgent"})


# -- the hub's own alarms and the console's seam ----------------------------------------------


async def test_gateway_watch_and_the_view_of_hub_alarms(tmp_path: Path) -> None:
    from gateway.alarms.manager import AlarmManager
    from gateway.hub.config import HubAlarms
    from gateway.hub.view import CommandNotDelivered, HubAlarmsView
    from gateway.hub.watch import GatewayWatch

    clock = Clock()
    live = LivePicture(prefix="community", scope=HubScope(communities=["North"]), clock=clock)
    alarms = AlarmManager(clock=clock)
    history = HubHistory(path=tmp_path / "h.sqlite3", retention_days=1, clock=clock)
    watch = GatewayWatch(live=live, alarms=alarms, config=HubAlarms(silent_after_intervals=3))
    view = HubAlarmsView(hub_id="room", live=live, alarms=alarms, history=history,
                         silent_after_intervals=3, clock=clock)
    for site, community in (("n1", "North"), ("n2", "North"), ("s1", "South")):
        live.handle(f"community/{site}/info", info(site, community))
        live.handle(f"community/{site}/status", b"online")
        live.handle(f"community/{site}/health", b'{"interval": 1}')
    live.handle("community/n2/alarms/a1", json.dumps(alarm("a1", severity=1)).encode())
    live.handle("community/n2/alarms/a2", json.dumps(alarm("a2", severity=3)).encode())
    watch.check(clock.time())
    assert alarms.open_alarms() == []
    live.handle("community/n1/status", b"offline")  # its last will
    live.handle("community/s1/status", b"offline")  # outside the scope: never an alarm
    clock.now += 2
    watch.check(clock.time())
    [hub_alarm] = alarms.open_alarms()
    assert (hub_alarm.device, hub_alarm.kind, hub_alarm.details) == ("n1", "gateway",
                                                                      {"gateway": "offline",
                                                                       "last_seen": None})
    rows = view.open_alarms()
    # unacknowledged urgent first, then the others by severity
    assert [(r["site"], r["id"], r["origin"]) for r in rows] == [
        ("n2", "a1", "gateway"), ("n1", hub_alarm.id, "hub"), ("n2", "a2", "gateway")]
    assert [r["id"] for r in view.open_alarms({"compound": "North-1", "level": "2"})] == \
        ["a1", hub_alarm.id]
    fleet = view.fleet()
    assert fleet["counts"] == {"gateways": 2, "gateways_offline": 1, "devices": 0,
                               "devices_offline": 0, "open_alarms": 3, "unacked_urgent": 1}
    # n2 goes silent: no health for 3 intervals
    clock.now += 5
    watch.check(clock.time())
    assert {a.device for a in alarms.open_alarms()} == {"n1", "n2"}
    # the console's seam: the hub's own alarms are acted on here, a gateway's need signing
    acked = await view.apply_command(site="n1", alarm_id=hub_alarm.id, command="ack",
                                     body={"note": "on it"}, by="wang")
    assert acked["acked"] is True
    with pytest.raises(CommandNotDelivered):
        await view.apply_command(site="n2", alarm_id="a1", command="ack", body={}, by="wang")
    live.handle("community/n1/status", b"online")
    live.handle("community/n1/health", b'{"interval": 1}')
    watch.check(clock.time())
    assert {a.device for a in alarms.open_alarms()} == {"n2"}  # acked and back: closed


def test_the_hub_command_refuses_a_bad_file_or_a_missing_secret(tmp_path: Path, capsys,
                                                                monkeypatch) -> None:
    def hub(path: Path) -> subprocess.CompletedProcess:
        # a process of its own: the command sets up logging for the whole interpreter
        return subprocess.run([sys.executable, "-m", "gateway", "hub", str(path)], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)

    bad = hub_file(tmp_path, scope={"communities": "North"})
    done = hub(bad)
    assert done.returncode == 2 and "scope.communities" in done.stderr
    monkeypatch.delenv("HUB_TEST_PASSWORD", raising=False)
    path = hub_file(tmp_path, broker={"host": "127.0.0.1", "password": {"env": "HUB_TEST_PASSWORD"}})
    assert main(["check", str(path)]) == 0
    assert "broker.password (env HUB_TEST_PASSWORD)" in capsys.readouterr().out  # a warning
    done = hub(path)
    assert done.returncode == 2
    assert "broker.password: environment variable HUB_TEST_PASSWORD is not set" in done.stderr


def test_a_gateway_that_never_sent_health_is_judged_by_its_status_only() -> None:
    clock = Clock()
    live = LivePicture(prefix="community", scope=HubScope(all=True), clock=clock)
    live.handle("community/old/info", info("old", "North"))
    live.handle("community/old/status", b"online")  # a version without health
    clock.now += 3600
    assert live.sites["old"].gateway_state(clock.time(), 3) == "online"
    live.handle("community/old/health", b'{"interval": 1}')
    clock.now += 4
    assert live.sites["old"].gateway_state(clock.time(), 3) == "silent"
