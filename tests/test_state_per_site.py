"""Two site files on one machine without `state_dir` keep apart: each site id has its
own state folder, so one never restores the other's alarms or touches its outbox."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from gateway.runtime.site import load_site
from tests.harness import running_gateway, wait_until


def site_file(folder: Path, site_id: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{site_id}.yaml"
    path.write_text(yaml.safe_dump({
        "site": {"id": site_id},
        "local_series": {"path": str(folder / f"{site_id}.lp")},
        "devices": [{"id": "meter", "type": "synthetic", "kind": "meter", "fields": ["p"]}]}))
    return path


def test_each_site_id_has_its_own_default_state_folder(tmp_path: Path) -> None:
    root = Path(os.environ["STATE_DIRECTORY"])  # set by conftest, as systemd would
    a = load_site(site_file(tmp_path, "site-a")).config.state_dir
    b = load_site(site_file(tmp_path, "site-b")).config.state_dir
    assert (a, b) == (root / "site-a", root / "site-b")


async def test_a_second_site_does_not_restore_the_first_sites_alarms(tmp_path: Path,
                                                                    monkeypatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    first, second = site_file(tmp_path, "site-a"), site_file(tmp_path, "site-b")
    async with running_gateway(first) as gateway:
        await wait_until(lambda: gateway.started, what="site-a started")
        gateway.alarms.activate(rule="test", severity=1, device="meter", kind="meter",
                                channel=None, location={}, message="site-a's alarm", value=1.0,
                                ts=gateway.clock.time())
    async with running_gateway(second) as gateway:
        await wait_until(lambda: gateway.started, what="site-b started")
        assert gateway.alarms.open_alarms() == []
    async with running_gateway(first) as gateway:
        await wait_until(lambda: gateway.started, what="site-a started again")
        assert [a.message for a in gateway.alarms.open_alarms()] == ["site-a's alarm"]
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["site-a", "site-b"]


def test_without_systemd_or_root_state_goes_to_the_users_state_home(tmp_path: Path,
                                                                    monkeypatch) -> None:
    # os.geteuid is replaced: the tests run as root, and a real second user is not at hand.
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    state = load_site(site_file(tmp_path, "site-a")).config.state_dir
    assert state == tmp_path / "xdg" / "community-gateway" / "site-a"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert load_site(site_file(tmp_path, "site-a")).config.state_dir == \
        Path("/var/lib/community-gateway/site-a")
