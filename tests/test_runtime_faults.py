"""A bug in one part (a driver's write, a sink, one reading, a reload, the MQTT link)
costs that part a retry or that one item, never the whole gateway.

Stand-ins here only produce faults a real part cannot be made to produce: a driver
or sink that raises something outside the error hierarchy (a bug).
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.runtime.app import Gateway
from gateway.runtime.actions import ActionRunner
from gateway.alarms.manager import AlarmManager
from gateway.clock import FakeClock
from gateway.config.models import MqttConfig
from gateway.runtime.mqtt_link import MqttLink
from gateway.outbox import READING, MemoryOutbox, OutboxWriter
from gateway.runtime.pipeline import Pipeline
from gateway.readings import Reading
from gateway.rules.engine import RuleEngine
from gateway.upstream.line_protocol import LineEncoder
from gateway.upstream.sink_runner import SinkRunner
from harness import running_gateway, wait_until, write_site


class BuggyRelay:
    """A driver whose write raises what no driver should (a bug), or hangs."""

    def __init__(self, *, hang: bool = False):
        self.hang = hang
        self.writes = 0

    async def write(self, channel, field, value) -> None:
        self.writes += 1
        if self.hang:
            await asyncio.Event().wait()
        raise ValueError("value out of range for the register")


async def test_a_driver_bug_in_a_write_raises_the_actuation_alarm() -> None:
    failures = []
    actions = ActionRunner(drivers={"cab": BuggyRelay()},
                           on_failure=lambda *args: failures.append(args))
    actions.submit("cab", 3, "relay", 0.0)
    await actions.wait_idle()
    assert actions.failed == 1 and actions.done == 0
    assert len(failures) == 1
    device, channel, field, error = failures[0]
    assert (device, channel, field) == ("cab", 3, "relay") and "ValueError" in error


async def test_writes_still_hanging_at_shutdown_are_cancelled() -> None:
    relay = BuggyRelay(hang=True)
    actions = ActionRunner(drivers={"cab": relay}, on_failure=lambda *args: None)
    actions.submit("cab", 1, "relay", 0.0)
    await wait_until(lambda: relay.writes == 1, 2, "the write to start")
    await actions.cancel()
    assert not actions._tasks


def _pipeline(outbox: OutboxWriter | None = None) -> Pipeline:
    clock = FakeClock()
    return Pipeline(devices={}, rules=RuleEngine([], {}, clock=clock),
                    alarms=AlarmManager(clock=clock),
                    actions=ActionRunner(drivers={}, on_failure=lambda *args: None),
                    encoder=LineEncoder("s", {}), outbox=outbox, queue_size=10)


def test_one_reading_that_breaks_processing_is_skipped_and_counted() -> None:
    outbox = OutboxWriter(store=MemoryOutbox(max_rows=100), commit_interval=1.0,
                          commit_rows=100, max_staged=100, clock=FakeClock())
    pipeline = _pipeline(outbox)
    good = Reading("m", None, {"power": 1.0}, 1.0)
    bad = Reading("m", 2, {"power": "not a number"}, 2.0)  # type: ignore[dict-item]
    after = Reading("m", None, {"power": 3.0}, 3.0)
    pipeline.process([[good, bad], [after]])
    assert pipeline.failed == 1 and pipeline.readings == 2
    assert [row[3].split(" ")[1] for row in outbox._staged] == ["power=1.0", "power=3.0"]
    assert all(row[0] == READING for row in outbox._staged)


def test_a_rule_that_raises_does_not_keep_the_reading_from_the_upstream() -> None:
    outbox = OutboxWriter(store=MemoryOutbox(max_rows=100), commit_interval=1.0,
                          commit_rows=100, max_staged=100, clock=FakeClock())
    pipeline = _pipeline(outbox)

    def broken_rules(reading):
        raise ZeroDivisionError("a bug in a rule")

    pipeline.rules.evaluate = broken_rules  # type: ignore[method-assign]
    pipeline.process([[Reading("m", None, {"power": 5.0}, 1.0)]])
    assert pipeline.failed == 1 and pipeline.readings == 1
    assert [row[3].split(" ")[1] for row in outbox._staged] == ["power=5.0"]


class CrashingSink:
    """Raises a bug's exception on its first write, then works."""

    payload = "line"
    name = "buggy"

    def __init__(self):
        self.lines: list[str] = []
        self.attempts = 0

    async def write(self, lines: list[str]) -> None:
        self.attempts += 1
        if self.attempts == 1:
            raise KeyError("bug")
        self.lines.extend(lines)

    async def close(self) -> None:
        pass


async def test_a_bug_in_a_sink_is_retried_not_raised_out_of_its_task() -> None:
    outbox = OutboxWriter(store=MemoryOutbox(max_rows=100), commit_interval=1.0,
                          commit_rows=100, max_staged=100, clock=FakeClock())
    sink = CrashingSink()
    runner = SinkRunner(sink, outbox=outbox, batch_size=5, flush_interval=0.05, clock=FakeClock())
    runner._backoff.initial = 0.01
    await outbox.open()
    outbox.add([(READING, "d", float(i), f"m v={i}.0 {i}", None) for i in range(5)])
    await outbox.commit()
    task = asyncio.create_task(runner.run())
    try:
        await wait_until(lambda: (len(sink.lines) == 5 and not runner.failing) or task.done(),
                         5, "the rows to go out")
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert runner.errors == 1 and not runner.failing and "KeyError" in runner.last_error


async def test_the_mqtt_link_survives_an_unexpected_error_and_connects(mosquitto) -> None:
    clock = FakeClock()
    link = MqttLink(config=MqttConfig(host="127.0.0.1", port=mosquitto.port), site_id="s",
                    alarms=AlarmManager(clock=clock))
    real_client = link._client
    calls = []

    def client_once_broken():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug while building the client")
        return real_client()

    link._client = client_once_broken  # type: ignore[method-assign]
    task = asyncio.create_task(link.run())
    try:
        await wait_until(lambda: link.connected or task.done(), 5, "the link to connect")
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_reload_that_fails_part_way_leaves_the_gateway_running(
        tmp_path, unique_id, monkeypatch) -> None:
    raw = {"site": {"id": unique_id}, "local_series": {"path": str(tmp_path / "s.lp")},
           "devices": [{"id": "m1", "type": "synthetic", "kind": "meter", "fields": ["power"],
                        "poll_interval": 0.01}]}
    path = write_site(tmp_path, raw)

    async def broken_apply(*args) -> None:
        raise RuntimeError("a bug in applying the plan")

    monkeypatch.setattr(Gateway, "apply_reload", broken_apply)
    async with running_gateway(path) as gw:
        await wait_until(lambda: gw.runners[0].health.polls >= 1, 5, "polling")
        gw.request_reload()
        await wait_until(lambda: gw.reloads["failed"] == 1, 5, "the reload to fail")
        polls = gw.runners[0].health.polls
        await wait_until(lambda: gw.runners[0].health.polls > polls + 5, 5, "polling on")


def test_alarm_events_queued_for_an_absent_broker_are_bounded(monkeypatch) -> None:
    import gateway.runtime.mqtt_link

    monkeypatch.setattr(gateway.runtime.mqtt_link, "MAX_QUEUED_EVENTS", 3)
    clock = FakeClock()
    alarms = AlarmManager(clock=clock)
    link = MqttLink(config=MqttConfig(host="127.0.0.1", port=1), site_id="s", alarms=alarms)
    for i in range(5):
        alarms.activate(rule=f"r{i}", severity=2, device="d", kind="meter", channel=None,
                        location={}, message="m", value=1.0, ts=clock.time())
    assert link.events_dropped == 2 and len(link._events) == 3
    assert [b'"r2"' in e for e in link._events] == [True, False, False]  # the newest kept
    assert len(link._state) == 5  # every alarm's state still goes out
