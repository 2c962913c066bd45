"""One typo, one problem: the root is reported with the name that was probably meant,
and what only follows from it (rules about a device whose profile is missing) is not."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.runtime.site import load_site
from gateway.config.suggest import nearest
from gateway.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
CHARGING = CONFIGS / "charging-site.yaml"


def problems(tmp_path: Path, text: str, name: str = "site.yaml") -> list[tuple[str, str]]:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_site(path)
    return info.value.problems


def test_a_misspelt_profile_is_one_problem_with_the_name_meant(tmp_path: Path) -> None:
    text = CHARGING.read_text().replace("profile: ev-cabinet", "profile: ev-cabinett")
    site = tmp_path / "site.yaml"
    site.write_text(text)
    run = subprocess.run([sys.executable, "-m", "gateway", "check", str(site)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "1 problem(s)" in run.stderr, run.stderr
    assert "devices[0].profile: no profile 'ev-cabinett' (did you mean 'ev-cabinet'?)" in run.stderr
    assert "selects no device" not in run.stderr and "rules[" not in run.stderr


def test_rules_about_other_devices_are_still_checked(tmp_path: Path) -> None:
    raw = yaml.safe_load(CHARGING.read_text())
    raw["devices"].append({"id": "meter", "type": "synthetic", "kind": "meter",
                           "fields": ["volts"]})
    raw["devices"][0]["profile"] = "ev-cabinett"
    raw["rules"].append({"id": "low", "type": "threshold", "select": {"kinds": ["meter"]},
                         "field": "volt", "below": 200})
    found = problems(tmp_path, yaml.safe_dump(raw))
    assert [p for p, _ in found] == ["devices[0].profile", f"rules[{len(raw['rules']) - 1}].field"]
    assert "(did you mean 'volts'?)" in found[1][1]


@pytest.mark.parametrize("old, new, where, meant", [
    ("field: power\n", "field: powr\n", "rules[0].field", "power"),
    ("bus: cabinet-link", "bus: cabinet-lnk", "devices[0].bus", "cabinet-link"),
    ("    poll_interval: 1.0", "    poll_intervall: 1.0", "devices[0].poll_intervall",
     "poll_interval"),
    ("kinds: [ev_charging]}\n    field: power\n", "kinds: [ev_chargin]}\n    field: power\n",
     "rules[0].select.kinds[0]", "ev_charging"),
    ("{write: relay, value: 0}\n  # Port", "{write: rely, value: 0}\n  # Port",
     "rules[0].actions[0].write", "relay"),
    ("type: modbus_tcp", "type: modbus_tpc", "buses[0]", "modbus_tcp"),
])
def test_did_you_mean(tmp_path: Path, old: str, new: str, where: str, meant: str) -> None:
    text = CHARGING.read_text()
    assert old in text
    found = problems(tmp_path, text.replace(old, new, 1))
    assert (where, ) == tuple(p for p, _ in found if p == where)
    [msg] = [m for p, m in found if p == where]
    assert f"(did you mean {meant!r}?)" in msg


def test_a_misspelt_required_key_is_not_also_reported_missing(tmp_path: Path) -> None:
    found = problems(tmp_path, CHARGING.read_text().replace("profile: ev-cabinet", "profle: ev-cabinet"))
    assert found == [("devices[0].profle", "unknown key (did you mean 'profile'?)")]


def test_a_typo_inside_a_local_profile_names_its_key(tmp_path: Path) -> None:
    profile = (CONFIGS / "profiles" / "ev-cabinet.yaml").read_text()
    assert "slave_stride:" in profile
    (tmp_path / "my-cabinet.yaml").write_text(profile.replace("slave_stride:", "slave_strid:", 1))
    text = CHARGING.read_text().replace("profile: ev-cabinet", "profile: my-cabinet.yaml")
    [(where, msg)] = problems(tmp_path, text)
    assert where == "devices[0].profile" and "my-cabinet.yaml" in msg
    assert "slave_strid: unknown key (did you mean 'slave_stride'?)" in msg


def test_a_problem_of_the_whole_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("site: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_site(path)
    assert "<top>" not in str(info.value)
    assert str(info.value).startswith(f"{path}: not valid YAML")


def test_nearest_suggests_nothing_far_away() -> None:
    assert nearest("powr", ["power", "voltage"]) == "power"
    assert nearest("Power", ["power"]) == "power"
    assert nearest("xyz", ["power", "voltage"]) is None


def test_check_exits_non_zero_when_the_gateway_would_not_start(tmp_path: Path) -> None:
    """configs/example-site.yaml without its secrets and users file: valid, but not startable;
    the command it advises creates the users file as printed."""
    site = tmp_path / "example-site.yaml"
    site.write_text((CONFIGS / "example-site.yaml").read_text())
    env = {k: v for k, v in os.environ.items()
           if k not in ("INFLUX_TOKEN", "GATEWAY_PSEUDONYM_KEY", "GATEWAY_API_TOKEN")}
    check = [sys.executable, "-m", "gateway", "check", str(site)]
    run = subprocess.run(check, capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "OK" not in run.stdout and "the gateway will not start" in run.stderr
    assert "GATEWAY_PSEUDONYM_KEY is not set" in run.stderr
    [advice] = re.findall(r"`(community-gateway user add [^`]*)`", run.stderr)
    assert "--role operator" in advice and f"--config {site}" in advice
    argv = shlex.split(advice.replace("NAME", "wang"))
    added = subprocess.run([sys.executable, "-m", "gateway", *argv[1:], "--password-stdin"],
                           input="correct horse battery staple\n", capture_output=True,
                           text=True, timeout=60, env=env)
    assert added.returncode == 0, added.stderr
    env.update(GATEWAY_PSEUDONYM_KEY="k" * 32, GATEWAY_API_TOKEN="t" * 32)
    run = subprocess.run(check, capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{site}: OK" in run.stdout
