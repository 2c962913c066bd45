"""``type: mqtt`` devices, the door and camera profiles, and the site's privacy settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gateway.runtime.app import Gateway
from gateway.runtime.site import load_site
from gateway.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
EXAMPLE = CONFIGS / "example-site.yaml"
KEY = "0123456789abcdef0123"


def site(**extra) -> dict:
    raw = {
        "site": {"id": "s1"},
        "mqtt": {"host": "127.0.0.1", "port": 1883},
        "privacy": {"key": {"env": "TEST_PSEUDONYM_KEY"}},
        "devices": [{"id": "terminal", "type": "mqtt", "profile": "access-terminal",
                     "source": "T3E-01", "channels": 2}],
    }
    raw.update(extra)
    return raw


def problems_of(tmp_path: Path, raw: dict) -> dict[str, str]:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_site(path)
    return dict(info.value.problems)


def test_example_site_carries_all_four_kinds_in_two_buildings() -> None:
    s = load_site(EXAMPLE)
    kinds = {spec.kind for spec in s.devices.values()}
    assert kinds == {"ev_charging", "door_access", "fall_radar", "thrown_object"}
    assert {spec.location()["building"] for spec in s.devices.values()} == {"3", "5"}
    doors = s.devices["doors-b3-u1"]
    assert (doors.channel_name, doors.channel_count) == ("door", 2)
    assert doors.fields == {"door_open", "exit_button", "lock"} and doors.writable == {"lock"}
    terminal = s.devices["terminal-b3-u1"]
    assert (terminal.channel_name, terminal.channel_count) == ("door", 2)
    assert {"granted", "denied", "exit_button", "duress", "tamper", "door_opened",
            "door_closed"} <= terminal.events
    assert s.devices["camera-b5-east"].events == {"throw"}
    rules = {r.id: r.type for r in s.config.rules}
    assert {"door-forced": "forced", "door-held": "held", "repeated-denials": "count",
            "duress": "event", "thrown-object": "event"}.items() <= rules.items()


def test_door_module_register_layout() -> None:
    doors = load_site(EXAMPLE).devices["doors-b3-u1"]
    at = {(p.name, p.channel): (p.table, p.address) for p in doors.points}
    assert at[("door_open", 2)] == ("discrete", 2) and at[("exit_button", 2)] == ("discrete", 3)
    assert at[("lock", 2)] == ("coil", 1)


def test_mqtt_device_needs_a_broker(tmp_path: Path) -> None:
    raw = site()
    del raw["mqtt"]
    assert "no broker" in problems_of(tmp_path, raw)["devices[0].broker"]


def test_pseudonymising_profile_needs_a_privacy_key(tmp_path: Path) -> None:
    raw = site()
    del raw["privacy"]
    assert "privacy" in problems_of(tmp_path, raw)["devices[0].profile"]


def test_keep_raw_needs_a_file(tmp_path: Path) -> None:
    raw = site(privacy={"key": {"env": "X"}, "keep_raw": True})
    assert "raw_file" in problems_of(tmp_path, raw)["privacy"]


def test_inline_privacy_key_is_refused_without_echoing_it(tmp_path: Path) -> None:
    raw = site(privacy={"key": "my-inline-secret-key"})
    problems = problems_of(tmp_path, raw)
    assert "privacy.key" in problems and "my-inline-secret-key" not in str(problems)


def test_bad_mqtt_profile_names_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "cam.yaml").write_text(
        "kind: camera\ntopic: cams/+/events\ndevice_id: {topic_segment: 2}\nfields: {x: x}\n")
    raw = site(devices=[{"id": "c", "type": "mqtt", "profile": "cam"}])
    msg = problems_of(tmp_path, raw)["devices[0].profile"]
    assert "cam.yaml" in msg and "topic_segment" in msg


def test_channels_on_a_profile_without_them(tmp_path: Path) -> None:
    raw = site(devices=[{"id": "c", "type": "mqtt", "profile": "thrown-object-camera",
                         "channels": 2}])
    assert "no channels" in problems_of(tmp_path, raw)["devices[0].channels"]


def test_source_may_not_hold_topic_wildcards(tmp_path: Path) -> None:
    raw = site()
    raw["devices"][0]["source"] = "T3/+"
    assert "devices[0].source" in problems_of(tmp_path, raw)


def test_short_key_stops_the_gateway_before_it_starts(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_PSEUDONYM_KEY", "short")
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site()))
    with pytest.raises(ConfigError) as info:
        Gateway(load_site(path))
    assert info.value.problems[0][0] == "privacy.key" and "16" in info.value.problems[0][1]


async def test_keep_raw_writes_the_lookup_file_beside_the_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_PSEUDONYM_KEY", KEY)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site(privacy={"key": {"env": "TEST_PSEUDONYM_KEY"},
                                                 "keep_raw": True, "raw_file": "raw-ids.jsonl"})))
    gateway = Gateway(load_site(path))
    driver = gateway.drivers["terminal"]
    assert driver.client_id == "gateway-s1-terminal" and driver.topic_filter == "access/T3E-01/events"
    [event] = driver.handle("access/T3E-01/events",
                            json.dumps({"code": 1, "door": 2, "card_no": "55501234"}).encode())
    await driver.raw_log.flush()
    [entry] = [json.loads(x) for x in (tmp_path / "raw-ids.jsonl").read_text().splitlines()]
    assert entry["value"] == "55501234" and entry["pseudonym"] == event.attrs["card"]
    assert "55501234" not in json.dumps(event.attrs)


def test_example_site_alarms_every_controller_alarm_code() -> None:
    # shared/devices.md section 3: 34 duress, 37 held, 38 forced, 39 fire, 41 burglary,
    # 43 emergency; an installer copies this file, so none may go unwatched.
    from drivers.mqtt.profile import MqttProfile
    from gateway.config.rules import EventRule

    profile = MqttProfile.model_validate(
        yaml.safe_load((CONFIGS / "profiles" / "access-terminal.yaml").read_text()))
    alarm_events = {profile.events.codes[str(code)].event for code in (34, 37, 38, 39, 41, 43)}
    watched = {name for rule in load_site(EXAMPLE).config.rules
               if isinstance(rule, EventRule) and rule.alarm for name in rule.event or ()}
    assert alarm_events <= watched, alarm_events - watched
