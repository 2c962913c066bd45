"""deploy/: the systemd units (the gateway's and the hub's) pass systemd-analyze, and the
install script agrees with them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNIT = DEPLOY / "community-gateway.service"
HUB_UNIT = DEPLOY / "community-gateway-hub.service"
UNITS = pytest.mark.parametrize("shipped", [UNIT, HUB_UNIT], ids=["gateway", "hub"])
INSTALL = DEPLOY / "install.sh"
EXEC = "/opt/community-gateway/venv/bin/community-gateway"


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze is missing (Debian package `systemd`); run "
                    "`bash scripts/test.sh`", pytrace=False)
    return path


def unit_for_this_machine(tmp_path: Path, shipped: Path = UNIT) -> Path:
    """The unit with ExecStart pointed at an executable that exists here.

    systemd-analyze verify checks that the command exists; the venv under /opt only
    exists on an installed gateway. Everything else is verified as shipped.
    """
    stand_in = tmp_path / "community-gateway"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    text = shipped.read_text()
    assert text.count(EXEC) == 1
    unit = tmp_path / shipped.name
    unit.write_text(text.replace(EXEC, str(stand_in)))
    return unit


@UNITS
def test_unit_passes_systemd_analyze_verify(tmp_path, shipped) -> None:
    result = subprocess.run([systemd_analyze(), "verify",
                             str(unit_for_this_machine(tmp_path, shipped))],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # Unknown or misspelt keys are only warnings: none may be there.
    assert result.stderr.strip() == "", result.stderr


@UNITS
def test_unit_exposure_is_low(tmp_path, shipped) -> None:
    result = subprocess.run([systemd_analyze(), "security", "--offline=true", "--no-pager",
                             str(unit_for_this_machine(tmp_path, shipped))],
                            capture_output=True, text=True)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout


def unit_settings(unit: Path = UNIT) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_says_what_the_issue_asks() -> None:
    s = unit_settings()
    assert s["Type"] == ["notify"] and s["WatchdogSec"] and s["Restart"] == ["on-failure"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["User"] == ["community-gateway"] and s["SupplementaryGroups"] == ["dialout"]
    assert s["StateDirectory"] == ["community-gateway"]
    assert s["ReadWritePaths"] == ["/var/lib/community-gateway"]
    assert s["ProtectSystem"] == ["strict"] and s["NoNewPrivileges"] == ["yes"]
    assert s["CapabilityBoundingSet"] == [""] and s["ProtectHome"] == ["yes"]
    assert s["ExecStart"][0].startswith(EXEC + " run /etc/community-gateway/")
    # room for the HTTP connection cap twice over (the cap stays under half the limit)
    from gateway.config.models import HttpConfig

    assert int(s["LimitNOFILE"][0]) >= 4 * HttpConfig().max_connections


def test_install_script_matches_the_unit() -> None:
    assert subprocess.run(["bash", "-n", str(INSTALL)]).returncode == 0
    script = INSTALL.read_text()
    assert "VENV=$PREFIX/venv" in script and "PREFIX=/opt/community-gateway" in script
    assert "SERVICE_USER=community-gateway" in script and "--groups dialout" in script
    assert "CONF=/etc/community-gateway" in script
    assert 'install -m 0644 "$SRC/deploy/community-gateway.service" "$UNIT"' in script


def test_the_hub_unit_is_hardened_like_the_gateways_with_its_own_user_and_state() -> None:
    gateway, hub = unit_settings(UNIT), unit_settings(HUB_UNIT)
    # every hardening setting of the gateway's unit, with the same value, apart from the
    # serial ports the hub never opens (it has no device at all: PrivateDevices)
    paths = {"User", "Group", "EnvironmentFile", "ConfigurationDirectory", "StateDirectory",
             "WorkingDirectory", "ReadWritePaths", "ExecStart", "ExecReload", "Description",
             "Documentation", "SupplementaryGroups", "DeviceAllow"}
    for key, values in gateway.items():
        if key not in paths:
            assert hub.get(key) == values, key
    assert "DeviceAllow" not in hub and "SupplementaryGroups" not in hub
    assert hub["PrivateDevices"] == ["yes"] and hub["DevicePolicy"] == ["closed"]
    assert hub["User"] == hub["Group"] == ["community-gateway-hub"]
    assert hub["StateDirectory"] == ["community-gateway-hub"]
    assert hub["ReadWritePaths"] == hub["WorkingDirectory"] == ["/var/lib/community-gateway-hub"]
    assert hub["ConfigurationDirectory"] == ["community-gateway-hub"]
    assert hub["EnvironmentFile"] == ["-/etc/community-gateway-hub/secrets.env"]
    assert hub["ExecStart"] == [EXEC + " hub /etc/community-gateway-hub/hub.yaml"]
    assert "ExecReload" not in hub  # the hub has no reload: a restart re-reads hub.yaml
    # the example hub file keeps its state where the unit lets it write
    from gateway.hub.config import load_hub_config

    example = load_hub_config(DEPLOY.parent / "configs" / "hub" / "subdistrict-hub.yaml")
    assert str(example.state_dir) == hub["ReadWritePaths"][0]


def test_install_script_installs_the_hub_with_its_own_user() -> None:
    script = INSTALL.read_text()
    assert 'install -m 0644 "$SRC/deploy/community-gateway-hub.service" "$UNIT"' in script
    assert "SERVICE_USER=community-gateway-hub" in script
    assert "CONF=/etc/community-gateway-hub" in script
    assert "EXAMPLE=configs/hub/subdistrict-hub.yaml" in script
    assert (DEPLOY.parent / "configs" / "hub" / "subdistrict-hub.yaml").is_file()
    result = subprocess.run(["bash", str(INSTALL), "--nonsense"], capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr
