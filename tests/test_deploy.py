"""deploy/: the systemd unit passes systemd-analyze, and the install script agrees with it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNIT = DEPLOY / "community-gateway.service"
INSTALL = DEPLOY / "install.sh"
EXEC = "/opt/community-gateway/venv/bin/community-gateway"


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze is missing (Debian package `systemd`); run "
                    "`bash scripts/test.sh`", pytrace=False)
    return path


def unit_for_this_machine(tmp_path: Path) -> Path:
    """The unit with ExecStart pointed at an executable that exists here.

    systemd-analyze verify checks that the command exists; the venv under /opt only
    exists on an installed gateway. Everything else is verified as shipped.
    """
    stand_in = tmp_path / "community-gateway"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    text = UNIT.read_text()
    assert text.count(EXEC) == 1
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(EXEC, str(stand_in)))
    return unit


def test_unit_passes_systemd_analyze_verify(tmp_path) -> None:
    result = subprocess.run([systemd_analyze(), "verify", str(unit_for_this_machine(tmp_path))],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # Unknown or misspelt keys are only warnings: none may be there.
    assert result.stderr.strip() == "", result.stderr


def test_unit_exposure_is_low(tmp_path) -> None:
    result = subprocess.run([systemd_analyze(), "security", "--offline=true", "--no-pager",
                             str(unit_for_this_machine(tmp_path))], capture_output=True, text=True)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
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
