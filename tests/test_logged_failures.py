"""Nothing fails silently: what goes wrong while stopping is logged with what failed, and an
error held back after its first report shows again after a quiet period."""

from __future__ import annotations

import asyncio
import logging
import threading

import aiomqtt
import pytest
from test_outbox_edges import rows

from gateway.alarms.manager import AlarmManager
from gateway.clock import FakeClock
from gateway.config.models import MqttConfig
from gateway.errors import OutboxError
from gateway.log_limit import LogLimit
from gateway.outbox import OutboxWriter, SqliteOutbox
from gateway.readings import Reading
from gateway.runtime.device_runner import DeviceRunner
from gateway.runtime.mqtt_link import MqttLink
from harness import running_gateway, wait_until, write_site
from test_runtime_faults import _pipeline


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_a_held_back_error_is_let_through_again_after_the_period() -> None:
    clock = FakeClock()
    limit = LogLimit(every=600, clock=clock.monotonic)
    assert limit.allow("m1") == 0  # the first: logged
    assert limit.allow("m2") == 0  # another key has its own count
    clock.advance(599)
    assert [limit.allow("m1") for _ in range(3)] == [None, None, None]  # held back
    clock.advance(1)
    assert limit.allow("m1") == 3  # a period on: logged, with how many were not
    assert limit.allow("m1") is None
    clock.advance(3600)  # a second incident, long after: shown at once
    assert limit.allow("m1") == 1


def test_a_devices_second_processing_failure_is_logged_after_a_quiet_period(caplog) -> None:
    clock = FakeClock()
    pipeline = _pipeline()
    pipeline._failure_log = LogLimit(every=600, clock=clock.monotonic)
    bad = Reading("m", 2, {"power": "not a number"}, 2.0)  # type: ignore[dict-item]
    with caplog.at_level(logging.ERROR, logger="gateway.runtime.pipeline"):
        pipeline.process([[bad], [bad]])
        clock.advance(3600)
        pipeline.process([[bad]])
    logged = messages(caplog, "from m skipped")
    assert pipeline.failed == 3 and len(logged) == 2
    assert "1 more since the last report" in logged[1]


class BuggyDriver:
    """A driver that raises what no driver should (a bug), every poll."""

    def __init__(self):
        self.polls = 0

    async def poll(self):
        self.polls += 1
        raise KeyError("register 40001")

    async def write(self, channel, field, value) -> None:
        pass

    async def close(self) -> None:
        pass


async def test_a_driver_bug_is_logged_again_a_period_later(caplog) -> None:
    clock = FakeClock()
    driver = BuggyDriver()
    runner = DeviceRunner(device_id="m1", driver=driver, interval=0.01, offline_after=1,
                          emit=None, on_offline=lambda *a: None,  # type: ignore[arg-type]
                          on_online=lambda *a: None, clock=clock)
    runner._bug_log = LogLimit(every=600, clock=clock.monotonic)
    runner._failed = lambda detail, backoff: 0.01  # type: ignore[method-assign]  # no backoff wait
    task = asyncio.create_task(runner.run(), name="test-runner")
    try:
        with caplog.at_level(logging.ERROR, logger="gateway.runtime.device_runner"):
            await wait_until(lambda: driver.polls >= 5, 5, "five failed polls")
            assert len(messages(caplog, "unexpected error in driver")) == 1
            clock.advance(600)
            polls = driver.polls
            await wait_until(lambda: driver.polls > polls, 5, "another poll")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    logged = messages(caplog, "unexpected error in driver")
    assert len(logged) == 2 and "more since the last report" in logged[1]


class AdvanceFails(SqliteOutbox):
    """A store whose cursor update waits in its thread until told, then fails."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.entered = threading.Event()
        self.release = threading.Event()

    def advance(self, sink, last_id):
        self.entered.set()
        self.release.wait(10)
        raise OutboxError(str(self.path), "cursor update failed: disk I/O error")


async def test_a_cursor_move_that_fails_while_stopping_is_logged(tmp_path, caplog) -> None:
    store = AdvanceFails(path=tmp_path / "o.sqlite", budget_bytes=1 << 30)
    w = OutboxWriter(store=store, commit_interval=1.0, commit_rows=10, max_staged=100,
                     clock=FakeClock())
    await w.open()
    w.add(rows(50))
    await w.commit()  # on disk: a cursor past them must reach the store
    move = asyncio.create_task(w.advance("influxdb", 42))
    await wait_until(store.entered.is_set, 5, "the cursor move in its thread")
    move.cancel()
    await asyncio.sleep(0)
    store.release.set()
    with pytest.raises(asyncio.CancelledError):
        await move
    [logged] = messages(caplog, "failed while stopping")
    assert "influxdb: cursor move to row 42" in logged and "disk I/O error" in logged
    await w.close()


async def test_a_sink_that_fails_its_last_flush_at_the_stop_is_named(tmp_path, unique_id,
                                                                     caplog) -> None:
    series = tmp_path / "series.lp"
    raw = {"site": {"id": unique_id}, "local_series": {"path": str(series)},
           "outbox": {"commit_interval": 60, "commit_rows": 1_000_000},
           "devices": [{"id": "m1", "type": "synthetic", "kind": "meter", "fields": ["power"],
                        "poll_interval": 0.01}]}
    with caplog.at_level(logging.INFO, logger="gateway.runtime.app"):
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            await wait_until(lambda: gw.pipeline.readings >= 5, 5, "readings taken")
            series.unlink(missing_ok=True)  # the rows are sent as they come (issue 16):
            series.mkdir()  # now the file cannot be written any more: the flush at the stop fails
            await wait_until(lambda: gw.sinks[0].failing and gw.sinks[0].lag, 5, "rows owed")
    [logged] = messages(caplog, "stopping: sending the last rows to local-file failed")
    assert "stay in the outbox" in logged
    assert messages(caplog, f"gateway {unique_id} stopped")  # and the stop went on to its end


async def test_mqtt_failures_while_stopping_are_logged(mosquitto, caplog) -> None:
    link = MqttLink(config=MqttConfig(host="127.0.0.1", port=mosquitto.port), site_id="s",
                    alarms=AlarmManager(clock=FakeClock()))
    real_client = link._client

    class LosesTheLinkAtTheStop(aiomqtt.Client):
        # The fault a live broker cannot be told to give on cue: the connection drops
        # just as the gateway says goodbye.
        async def publish(self, topic, payload=None, **kw):
            if payload == b"offline":
                raise aiomqtt.MqttError("Operation timed out")
            return await super().publish(topic, payload, **kw)

        async def __aexit__(self, *exc_info):
            await super().__aexit__(*exc_info)
            raise aiomqtt.MqttError("Disconnected during message iteration")

    def client():
        c = real_client()
        c.__class__ = LosesTheLinkAtTheStop
        return c

    link._client = client  # type: ignore[method-assign]
    task = asyncio.create_task(link.run(), name="test-mqtt-link")
    await wait_until(lambda: link.connected, 5, "the link to connect")
    with caplog.at_level(logging.WARNING, logger="gateway.runtime.mqtt_link"):
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert messages(caplog, "publishing the offline status at the stop failed: Operation timed out")
    assert messages(caplog, "at the stop failed: Disconnected during message iteration")
