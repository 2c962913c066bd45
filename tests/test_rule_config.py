"""Rule configs of every kind: a good file loads; a rule naming an unknown device, field,
kind or event is an error naming its key path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from alarm_support import DEVICES
from gateway.runtime.site import load_site
from gateway.config.rules import (AbsenceRule, ConfirmRule, CountRule, EventRule, ForcedRule,
                                  HeldRule, RateRule, ThresholdRule)
from gateway.errors import ConfigError

DOCS = Path(__file__).resolve().parent.parent / "docs" / "alarms.md"


def yaml_block_after(heading: str) -> str:
    """The first ```yaml block under a heading of docs/alarms.md: the documentation is tested."""
    text = DOCS.read_text(encoding="utf-8")
    rest = text[text.index(heading):]
    return rest.split("```yaml\n", 1)[1].split("```", 1)[0]


EXAMPLE_RULES = yaml_block_after("## Rule kinds")


def site(tmp_path: Path, rules: list[dict] | None = None, devices: list[dict] | None = None) -> Path:
    raw = {"site": {"id": "t"}, "devices": devices or DEVICES,
           "rules": rules if rules is not None else yaml.safe_load(EXAMPLE_RULES)["rules"]}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return path


def problems(tmp_path: Path, rules: list[dict], devices: list[dict] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_site(site(tmp_path, rules, devices))
    return dict(info.value.problems)


def test_one_rule_of_every_kind_loads(tmp_path) -> None:
    loaded = load_site(site(tmp_path))  # the examples in docs/alarms.md
    kinds = [type(r) for r in loaded.config.rules]
    assert set(kinds) == {ThresholdRule, HeldRule, EventRule, CountRule, AbsenceRule, RateRule,
                          ConfirmRule, ForcedRule}
    held = loaded.config.rules[1]
    assert held.for_ == 90 and held.equals == 1
    assert loaded.devices["doors"].events is not None and "granted" in loaded.devices["doors"].events


def test_documented_site_settings_load(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_TOKEN", "x")
    settings = yaml.safe_load(yaml_block_after("## Site settings"))
    raw = {"site": {"id": "t"}, "devices": DEVICES, **settings}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_site(path).config
    assert cfg.alarms.escalate_after == 300 and cfg.webhooks[0].min_severity == 2


def test_unknown_fields_name_their_key(tmp_path) -> None:
    found = problems(tmp_path, [
        {"id": "a", "type": "held", "select": {"devices": ["doors"]}, "field": "dor_open", "for": 9},
        {"id": "b", "type": "rate", "select": {"devices": ["charger"]}, "field": "temp", "above": 1},
        {"id": "c", "type": "confirm", "select": {"devices": ["radar"]}, "first": {"event": "fall"},
         "then": {"field": "motoin", "equals": 0, "for": 30}},
        {"id": "d", "type": "forced", "select": {"devices": ["terminal"]}},
        {"id": "e", "type": "event", "select": {"devices": ["radar"]}, "field": "fal"},
    ])
    assert "'dor_open'" in found["rules[0].field"] and "door_open" in found["rules[0].field"]
    assert "'temp'" in found["rules[1].field"]
    assert "'motoin'" in found["rules[2].then.field"]
    assert "'door_open'" in found["rules[3].field"]
    assert "'fal'" in found["rules[4].field"]


def test_unknown_events_devices_and_kinds_name_their_key(tmp_path) -> None:
    found = problems(tmp_path, [
        {"id": "a", "type": "event", "select": {"devices": ["camera"]}, "event": ["thrown"]},
        {"id": "b", "type": "count", "select": {"devices": ["terminal"]}, "event": "denied",
         "count": 5, "window": 60, "reset_on": ["grant"]},
        {"id": "c", "type": "forced", "select": {"devices": ["doors"]}, "grants_from": ["termnal"]},
        {"id": "d", "type": "forced", "select": {"devices": ["doors"]},
         "unless_events": ["granted", "remote_open"]},
        {"id": "e", "type": "absence", "select": {"kinds": ["fall-radar"]}, "for": 60},
        {"id": "f", "type": "confirm", "select": {"devices": ["radar"]}, "first": {"event": "falls"},
         "then": {"field": "motion", "for": 30}},
        {"id": "g", "type": "event", "select": {"devices": ["doors"]}, "event": "tamper",
         "actions": [{"write": "door_open", "value": 0}]},
    ])
    assert "'thrown'" in found["rules[0].event"] and "throw" in found["rules[0].event"]
    assert "'grant'" in found["rules[1].reset_on"]
    assert found["rules[2].grants_from[0]"] == \
        "no device with id 'termnal' (did you mean 'terminal'?)"
    assert "'remote_open'" in found["rules[3].unless_events[1]"]
    assert "'fall-radar'" in found["rules[4].select.kinds[0]"]
    assert "'falls'" in found["rules[5].first.event"]
    assert "no writable field 'door_open'" in found["rules[6].actions[0].write"]


def test_devices_that_do_not_declare_events_accept_any_name(tmp_path) -> None:
    rule = {"id": "a", "type": "event", "select": {"devices": ["camera"]}, "event": "anything_at_all"}
    # the camera declares its events: a name it never sends is refused, with its key path ...
    assert "'anything_at_all'" in problems(tmp_path, [rule])["rules[0].event"]
    devices = [dict(d) for d in DEVICES]
    del devices[3]["events"]  # ... one that declares none may send any name
    loaded = load_site(site(tmp_path, [rule], devices))
    [event_rule] = loaded.config.rules
    assert isinstance(event_rule, EventRule) and event_rule.event == ["anything_at_all"]
    assert loaded.devices["camera"].events is None


def test_shape_errors(tmp_path) -> None:
    found = problems(tmp_path, [
        {"id": "a", "type": "held", "select": {"devices": ["doors"]}, "field": "door_open"},
        {"id": "b", "type": "event", "event": "throw", "field": "status"},
        {"id": "c", "type": "count", "event": "denied", "count": 1, "window": 60},
        {"id": "d", "type": "rate", "field": "power"},
        {"id": "e", "type": "wobble"},
        {"id": "f", "type": "event", "event": "fall", "message": {"fr": "chute"}},
        {"id": "g", "type": "event", "event": "fall", "severity": 5},
        {"id": "h", "type": "confirm", "first": {"event": "fall"},
         "then": {"field": "motion", "for": 30}, "within": 10},
    ])
    assert found["rules[0].for"] == "required key is missing"
    assert "exactly one of 'event'" in found["rules[1]"]
    assert "rules[2].count" in found
    assert "exactly one of 'above' or 'below'" in found["rules[3]"]
    assert "wobble" in found["rules[4]"] and "forced" in found["rules[4]"]
    assert any(k.startswith("rules[5].message") for k in found)
    assert "rules[6].severity" in found
    assert "'within' must be at least" in found["rules[7]"]
