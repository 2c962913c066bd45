"""Open alarms and their history survive a restart of the gateway (SQLite state file)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

import pytest

from alarm_support import Bench
from gateway.alarms.manager import AlarmManager
from gateway.alarms.store import AlarmStore
from gateway.clock import FakeClock
from harness import wait_until

HOT = {"id": "hot", "type": "threshold", "select": {"devices": ["charger"]},
       "field": "temperature", "above": 60, "hysteresis": 5, "severity": 2}
EMERGENCY = {"id": "emergency", "type": "event", "select": {"devices": ["doors"]},
             "event": "emergency", "severity": 1, "latch": True}
QUIET = {"id": "quiet", "type": "absence", "select": {"devices": ["camera"]}, "for": 60}


@contextlib.asynccontextmanager
async def running(bench: Bench):
    """Run the gateway's tasks, but not its (synthetic, random) devices: the test feeds it."""
    bench.gateway.runners = []
    task = asyncio.create_task(bench.gateway.run(), name="test-gateway")
    try:
        await wait_until(lambda: bench.gateway.started, 5, "alarms restored, tasks started")
        yield bench
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_restart_keeps_open_alarms_unchanged_and_rules_resume(tmp_path) -> None:
    async with running(Bench(tmp_path, [HOT, EMERGENCY, QUIET])) as b1:
        b1.read("charger", 1, temperature=70.0)
        b1.read("charger", 2, temperature=75.0)
        b1.event("doors", "emergency", channel=2, source="button")
        b1.tick(61)  # the camera is silent: absence alarm
        emergency = b1.only("emergency")
        b1.alarms.ack(emergency.id, by="guard wang", note="going")
        b1.read("charger", 2, temperature=40.0)
        b1.alarms.ack(b1.alarms.find("hot", "charger", 2).id, by="guard li")  # closes
        before = {a.id: a.to_json() for a in b1.alarms.open_alarms()}
        assert sorted(a["rule"] for a in before.values()) == ["emergency", "hot", "quiet"]

    b2 = Bench(tmp_path, [HOT, EMERGENCY, QUIET])
    async with running(b2):
        after = {a.id: a.to_json() for a in b2.alarms.open_alarms()}
        assert after == before  # every field, the same ids, no new transition
        assert b2.transitions == []
        # the threshold rule knows its condition was active: a normal reading clears it
        b2.read("charger", 1, temperature=50.0)
        assert b2.events() == ["cleared"]
        b2.read("charger", 1, temperature=70.0)
        hot = b2.only("hot")
        assert hot.count == 2 and b2.events() == ["cleared", "repeated"]
        # the absence alarm clears when the camera is heard again
        b2.event("camera", "throw")
        assert b2.events("quiet") == ["cleared"]
        # the latched, acknowledged emergency waits for its reset
        emergency = b2.only("emergency")
        assert emergency.acked and emergency.state == "active"
        b2.alarms.reset(emergency.id, by="guard wang", note="resident was fine")
        await b2.gateway.alarm_store.wait_written()
        history = await b2.gateway.alarm_store.history(alarm_id=emergency.id)
        assert [(h["event"], h["by"]) for h in reversed(history)] == [
            ("raised", None), ("acked", "guard wang"), ("reset", "guard wang"),
            ("closed", "guard wang")]
        assert history[0]["alarm"]["state"] == "closed"


async def test_an_alarm_whose_rule_is_gone_can_still_be_reset(tmp_path) -> None:
    async with running(Bench(tmp_path, [HOT])) as b1:
        b1.read("charger", 3, temperature=90.0)
    b2 = Bench(tmp_path, [EMERGENCY])  # the hot rule was removed from the config
    async with running(b2):
        [alarm] = b2.alarms.open_alarms()
        assert alarm.rule == "hot" and not alarm.condition
        b2.alarms.reset(alarm.id, by="installer", note="rule retired")
        assert b2.alarms.open_alarms() == []


async def test_a_failing_state_file_keeps_transitions_and_catches_up(tmp_path) -> None:
    clock = FakeClock()
    store = AlarmStore(state_dir=tmp_path / "state", clock=clock)
    manager = AlarmManager(clock=clock, listeners=[store.on_transition])
    assert await store.open() == []
    writer = asyncio.create_task(store.run(), name="test-alarm-store")
    try:
        real_write = store._write
        calls = {"n": 0}

        def flaky(*batch):
            calls["n"] += 1
            if calls["n"] <= 2:
                raise sqlite3.OperationalError("disk I/O error")
            real_write(*batch)

        store._write = flaky  # a disk fault a real file cannot be told to produce
        alarm = manager.activate(rule="r", severity=2, device="d", kind="k", channel=None,
                                 location={}, message="m", value=1.0, ts=clock.time())
        manager.ack(alarm.id, by="op")
        await wait_until(lambda: store.written == 2, 10, "written after the fault")
        assert store.write_errors == 2
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await store.close()
    reopened = AlarmStore(state_dir=tmp_path / "state", clock=clock)
    [record] = await reopened.open()
    assert record["id"] == alarm.id and record["acked"] is True
    await reopened.close()


async def test_an_unusable_state_dir_stops_the_start_with_a_config_error(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    bench = Bench(tmp_path, [HOT], extra={"state_dir": str(blocker / "state")})
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match="state_dir"):
        await bench.gateway.run()
