"""Site config checking: good files pass, every kind of bad file names file, key and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from gateway.runtime.site import load_site
from gateway.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
EXAMPLE = CONFIGS / "charging-site.yaml"


def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def problems_of(tmp_path: Path, data: dict) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_site(write(tmp_path, data))
    assert info.value.file.endswith("site.yaml")
    return info.value.problems


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_is_valid(path: Path) -> None:
    site = load_site(path)
    assert site.devices


def test_example_resolves_the_cabinet_profile() -> None:
    site = load_site(EXAMPLE)
    spec = site.devices["charger-b3"]
    assert spec.kind == "ev_charging"
    assert spec.channel_name == "port" and spec.channel_count == 4
    assert {"power", "relay", "smoke", "cabinet_temperature"} <= spec.fields
    assert spec.writable == {"relay"}
    # port 3's meter is slave 3; its relay is coil 2 on the controller
    relay3 = next(p for p in spec.points if p.name == "relay" and p.channel == 3)
    assert (relay3.slave, relay3.table, relay3.address) == (100, "coil", 2)
    power3 = next(p for p in spec.points if p.name == "power" and p.channel == 3)
    assert (power3.slave, power3.address, power3.word_order) == (3, 3, "little")


def test_unknown_key_is_named(tmp_path: Path) -> None:
    data = example()
    data["devices"][0]["pol_interval"] = 2
    assert ("devices[0].pol_interval", "unknown key (did you mean 'poll_interval'?)") \
        in problems_of(tmp_path, data)


def test_wrong_type_names_key_and_expectation(tmp_path: Path) -> None:
    data = example()
    data["devices"][0]["poll_interval"] = "often"
    [(path, msg)] = problems_of(tmp_path, data)
    assert path == "devices[0].poll_interval"
    assert "number" in msg and "'often'" in msg


def test_unknown_device_type(tmp_path: Path) -> None:
    data = example()
    data["devices"][0]["type"] = "bacnet"
    [(path, msg)] = problems_of(tmp_path, data)
    assert path == "devices[0]" and "bacnet" in msg and "modbus" in msg


def test_rule_naming_unknown_device(tmp_path: Path) -> None:
    data = example()
    data["rules"][0]["select"] = {"devices": ["charger-b9"]}
    problems = problems_of(tmp_path, data)
    assert ("rules[0].select.devices[0]",
            "no device with id 'charger-b9' (did you mean 'charger-b3'?)") in problems


def test_rule_naming_unknown_field(tmp_path: Path) -> None:
    data = example()
    data["rules"][0]["field"] = "powr"
    [(path, msg)] = problems_of(tmp_path, data)
    assert path == "rules[0].field" and "'powr'" in msg and "power" in msg


def test_action_on_unwritable_field(tmp_path: Path) -> None:
    data = example()
    data["rules"][0]["actions"][0]["write"] = "power"
    [(path, msg)] = problems_of(tmp_path, data)
    assert path == "rules[0].actions[0].write" and "relay" in msg


def test_duplicate_device_ids(tmp_path: Path) -> None:
    data = example()
    data["devices"].append(dict(data["devices"][0]))
    assert ("devices[1].id", "duplicate id 'charger-b3'") in problems_of(tmp_path, data)


def test_unknown_bus_and_profile(tmp_path: Path) -> None:
    data = example()
    data["devices"][0]["bus"] = "nowhere"
    data["devices"][0]["profile"] = "no-such-profile"
    problems = dict(problems_of(tmp_path, data))
    assert "nowhere" in problems["devices[0].bus"]
    assert "no profile 'no-such-profile'" in problems["devices[0].profile"]


def test_bad_profile_is_named(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "bad.yaml").write_text(
        "kind: meter\nfields:\n  - {name: power, table: input, address: 0, type: bool}\n")
    data = example()
    data["devices"][0]["profile"] = "bad"
    data["devices"][0].pop("channels")
    data["rules"] = []
    [(path, msg)] = problems_of(tmp_path, data)
    assert path == "devices[0].profile"
    assert "bad.yaml" in msg and "fields[0]" in msg and "type 'bit'" in msg


def test_inline_secret_is_refused(tmp_path: Path) -> None:
    data = example()
    data["influxdb"]["token"] = "s3cret"
    [(path, _msg)] = problems_of(tmp_path, data)
    assert path == "influxdb.token"


def test_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("site: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_site(path)
    assert "not valid YAML" in str(info.value) and "line" in str(info.value)


def test_check_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["check", str(EXAMPLE)]) == 0
    assert "OK" in capsys.readouterr().out
    data = example()
    data["rules"][0]["field"] = "powr"
    assert main(["check", str(write(tmp_path, data))]) == 2
    err = capsys.readouterr().err
    assert "site.yaml" in err and "rules[0].field" in err and "powr" in err


def test_check_never_prints_secrets(tmp_path: Path, capsys: pytest.CaptureFixture,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFLUX_TOKEN", "tok-very-secret")
    assert main(["check", str(EXAMPLE)]) == 0
    out = capsys.readouterr()
    assert "tok-very-secret" not in out.out + out.err
