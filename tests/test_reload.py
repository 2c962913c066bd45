"""Config reload under load: unchanged devices run on untouched, the rest follows the file."""

from __future__ import annotations

import logging

import pytest

from gateway.runtime.reload import plan_reload, reload_config
from gateway.runtime.site import load_site
from harness import running_gateway, wait_until, write_site
from servers import VictoriaMetrics

KEEP = [f"keep-{i}" for i in range(1, 9)]


@pytest.fixture(autouse=True)
def influx_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_INFLUX_TOKEN", "test-token")


def meter(device_id: str, *, fields=("power",), **extra) -> dict:
    return {"id": device_id, "type": "synthetic", "kind": "meter", "fields": list(fields),
            "poll_interval": 0.01, **extra}


def site(site_id: str, victoria_url: str, devices: list[dict], rules: list[dict] | None = None) -> dict:
    return {"site": {"id": site_id},
            "influxdb": {"url": victoria_url, "org": "o", "bucket": "b",
                         "token": {"env": "TEST_INFLUX_TOKEN"}, "flush_interval": 0.2},
            "devices": devices, "rules": rules or []}


@pytest.fixture
def raw_victoria():
    """VictoriaMetrics keeping every sample: two readings in one millisecond (a runner
    catching up under load) must not merge, or they would look lost."""
    with VictoriaMetrics(dedup=False) as server:
        yield server


async def test_reload_adds_changes_and_removes_devices_without_losing_readings(
        tmp_path, raw_victoria, unique_id) -> None:
    victoria = raw_victoria
    first = [meter(d) for d in KEEP] + [meter("change-me"), meter("remove-me")]
    path = write_site(tmp_path, site(unique_id, victoria.url, first))
    async with running_gateway(path) as gw:
        await wait_until(lambda: all(r.health.polls >= 10 for r in gw.runners), 5, "polling")
        kept_tasks = {d: gw.device_tasks[d] for d in KEEP}
        kept_runners = {r.device_id: r for r in gw.runners if r.device_id in KEEP}
        old_change = gw.device_tasks["change-me"]

        # 1: change one (a field and its location), remove one, add one
        second = ([meter(d) for d in KEEP] + [meter("change-me", fields=("power", "temp"),
                                                    location={"building": "7"}),
                                              meter("new-1")])
        write_site(tmp_path, site(unique_id, victoria.url, second))
        assert await reload_config(gw)
        assert {d: gw.device_tasks[d] for d in KEEP} == kept_tasks
        assert all(not t.done() for t in kept_tasks.values())
        assert old_change.done() and gw.device_tasks["change-me"] is not old_change
        assert "remove-me" not in gw.device_tasks and "remove-me" not in gw.drivers
        assert not any(key[0] == "remove-me" for key in gw.pipeline.latest)
        await wait_until(lambda: "temp" in gw.pipeline.latest.get(("change-me", None)).values
                         and ("new-1", None) in gw.pipeline.latest, 5, "changed and new devices")

        # 2: remove the new one again and add two, still under load
        third = [meter(d) for d in KEEP] + [meter("change-me", fields=("power", "temp"),
                                                  location={"building": "7"}),
                                            meter("new-2"), meter("new-3")]
        write_site(tmp_path, site(unique_id, victoria.url, third))
        assert await reload_config(gw)
        assert {d: gw.device_tasks[d] for d in KEEP} == kept_tasks
        assert sorted(gw.device_tasks) == sorted(KEEP + ["change-me", "new-2", "new-3"])
        await wait_until(lambda: all(r.health.polls >= 10 for r in gw.runners), 5, "new polling")
        assert gw.reloads == {"applied": 2}

        # Every reading an untouched device made up to now (across both reloads) reaches
        # the TSDB: P polls done by time L means P points stamped at or before L.
        done = {d: (r.health.polls, r.health.last_success) for d, r in kept_runners.items()}

        def all_there(series: list[dict]) -> bool:
            seen = {s["metric"]["device"]: s["timestamps"] for s in series}
            # (the next poll may follow within 5 ms when a runner catches up: >=)
            return all(sum(ts <= last * 1000 + 5 for ts in seen.get(d, ())) >= polls
                       for d, (polls, last) in done.items())

        await victoria.wait_for_series_async(
            f'meter_power{{site="{unique_id}",device=~"keep-.*"}}', all_there, timeout=15)
        [changed] = await victoria.wait_for_series_async(
            f'meter_temp{{site="{unique_id}",device="change-me"}}')
    assert changed["metric"]["building"] == "7"


async def test_bad_reload_keeps_the_running_config(tmp_path, victoria, unique_id, caplog) -> None:
    path = write_site(tmp_path, site(unique_id, victoria.url, [meter("m1"), meter("m2")]))
    async with running_gateway(path) as gw:
        await wait_until(lambda: all(r.health.polls >= 5 for r in gw.runners), 5, "polling")
        before_site, before_tasks = gw.site, dict(gw.device_tasks)
        path.write_text(path.read_text().replace("kind: meter", "kind: Not A Kind", 1)
                        + "unknown_section: 1\n")
        with caplog.at_level(logging.ERROR, logger="gateway.runtime.reload"):
            assert not await reload_config(gw)
        assert gw.site is before_site and gw.device_tasks == before_tasks
        polls = gw.runners[0].health.polls
        await wait_until(lambda: gw.runners[0].health.polls > polls + 5, 5, "still polling")
        assert gw.reloads == {"refused": 1}
    [line] = [r.getMessage() for r in caplog.records if r.name == "gateway.runtime.reload"]
    assert "refused, still running the previous config" in line and "\n" not in line
    assert "devices[0].kind" in line and "unknown_section: unknown key" in line


async def test_reload_clears_alarms_that_nothing_can_hold(tmp_path, victoria, unique_id) -> None:
    rules = [{"id": "hot", "type": "threshold", "select": {"kinds": ["meter"]}, "field": "power",
              "above": -1, "severity": 2},
             {"id": "cold", "type": "threshold", "select": {"devices": ["m1"]}, "field": "power",
              "below": 1000, "severity": 3}]
    path = write_site(tmp_path, site(unique_id, victoria.url, [meter("m1"), meter("m2")], rules))
    async with running_gateway(path) as gw:
        await wait_until(lambda: len(gw.alarms.open_alarms()) == 3, 5, "three alarms")
        write_site(tmp_path, site(unique_id, victoria.url, [meter("m1")], rules[:1]))
        assert await reload_config(gw)
        states = {(a.rule, a.device): a.state for a in gw.alarms.open_alarms()}
        # m2 is gone and so is the rule 'cold': their alarms are cleared (waiting for an ack);
        # 'hot' on m1 still holds and stays active.
        assert states == {("hot", "m1"): "active", ("hot", "m2"): "cleared",
                          ("cold", "m1"): "cleared"}


def test_sections_that_need_a_restart_are_named(tmp_path) -> None:
    base = {"site": {"id": "s"}, "devices": [meter("m1")]}
    old = load_site(write_site(tmp_path, dict(base)))
    changed = dict(base, mqtt={"host": "broker.example"}, devices=[meter("m1"), meter("m2")])
    new = load_site(write_site(tmp_path, changed))
    plan = plan_reload(old, new)
    assert plan.needs_restart == ["mqtt"] and plan.added == ["m2"] and not plan.restarted


async def test_reload_with_an_unreadable_secret_is_refused(tmp_path, victoria, unique_id,
                                                           caplog) -> None:
    raw = site(unique_id, victoria.url, [meter("m1")])
    path = write_site(tmp_path, raw)
    async with running_gateway(path) as gw:
        await wait_until(lambda: gw.runners[0].health.polls, 5, "polling")
        raw["influxdb"]["token"] = {"env": "NOT_SET_ANYWHERE_91"}
        raw["devices"].append(meter("m2"))
        write_site(tmp_path, raw)
        with caplog.at_level(logging.ERROR, logger="gateway.runtime.reload"):
            assert not await reload_config(gw)
        assert list(gw.device_tasks) == ["m1"]
    assert "influxdb.token: environment variable NOT_SET_ANYWHERE_91 is not set" in caplog.text
