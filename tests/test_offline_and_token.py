"""Two counts a slip would shift quietly: a device is offline at exactly ``offline_after``
failed polls, and the API token is compared whole."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.clock import FakeClock
from gateway.errors import DriverError
from gateway.operations.http_api import TOKEN, bearer_token
from gateway.readings import Reading
from gateway.runtime.device_runner import DeviceRunner
from harness import wait_until


class DeadDriver:
    """A device that never answers (the fault a real server can't be told to give on cue
    for an exact number of polls)."""

    async def poll(self):
        raise DriverError("m1", "no response")

    async def write(self, channel, field, value) -> None:
        raise AssertionError("not written")

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("offline_after", [1, 3])
async def test_a_device_is_offline_at_exactly_offline_after_failed_polls(offline_after) -> None:
    offline = asyncio.get_running_loop().create_future()
    runner = DeviceRunner(device_id="m1", driver=DeadDriver(), interval=0.01,
                          offline_after=offline_after, emit=None,  # type: ignore[arg-type]
                          on_offline=lambda dev, why: offline.done() or offline.set_result(
                              (runner.health.polls, why)),
                          on_online=lambda dev: None, clock=FakeClock())
    task = asyncio.create_task(runner.run(), name="test-runner")
    try:
        async with asyncio.timeout(5):
            polls, why = await offline
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert polls == offline_after and why == "no response"


API_TOKEN = "api-token-7f3a-long-enough"


async def authorized(token: str | None, header: str | None) -> str | None:
    app = web.Application()
    app[TOKEN] = token
    headers = {"Authorization": header} if header is not None else {}
    return await bearer_token(make_mocked_request("POST", "/api/alarms/x/ack", headers=headers, app=app))


@pytest.mark.parametrize("header", [
    None, "", "Bearer", "Bearer ", f"Basic {API_TOKEN}",
    "Bearer a", "Bearer aXXXXXXXXXXXXXXXXXXXXXXXXX",  # only the first character right
    f"Bearer {API_TOKEN[:-1]}", f"Bearer {API_TOKEN}x", f"Bearer {API_TOKEN[:-1]}X",
])
async def test_the_api_token_is_compared_whole(header) -> None:
    assert await authorized(API_TOKEN, header) is None


async def test_the_right_token_passes_and_none_configured_lets_nothing_through() -> None:
    assert await authorized(API_TOKEN, f"Bearer {API_TOKEN}") == "api-token"
    assert await authorized(API_TOKEN, f"bearer  {API_TOKEN} ") == "api-token"
    assert await authorized(None, "Bearer ") is None
    assert await authorized("", "Bearer ") is None


# -- the device runner's health bookkeeping (found by mutation testing) -----------------------


class FlakyDriver:
    """Answers as scripted: a list of results, each "ok", "fail", "bug" or "hang"."""

    def __init__(self, script: list[str]):
        self.script = list(script)
        self.polls = 0

    async def poll(self):
        self.polls += 1
        step = self.script.pop(0) if self.script else "ok"
        if step == "fail":
            raise DriverError("m1", "no response")
        if step == "bug":
            raise KeyError("register 40001")
        if step == "bug2":
            raise ValueError("a second, different bug")
        if step == "hang":
            await asyncio.Event().wait()
        return [Reading("m1", None, {"power": float(self.polls)}, 0.0)]

    async def write(self, channel, field, value) -> None:
        pass

    async def close(self) -> None:
        pass


async def run_script(script: list[str], until, *, offline_after: int = 2):
    clock = FakeClock()
    seen: list[tuple] = []
    emitted: list = []

    async def emit(readings) -> None:
        emitted.extend(readings)

    runner = DeviceRunner(device_id="m1", driver=FlakyDriver(script), interval=0.01,
                          offline_after=offline_after, emit=emit,
                          on_offline=lambda dev, why: seen.append(("offline", dev, why)),
                          on_online=lambda dev: seen.append(("online", dev)), clock=clock)
    runner._poll_limit = 0.05  # a hung poll gives up quickly here (10 s by default)

    task = asyncio.create_task(runner.run(), name="test-runner")
    try:
        await wait_until(lambda: until(runner, seen), 5, "the scripted polls")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return runner, seen, emitted, clock


async def test_health_counts_polls_errors_and_the_way_back_online() -> None:
    runner, seen, emitted, clock = await run_script(
        ["ok", "fail", "ok", "fail", "fail", "bug", "ok"], lambda r, s: r.health.polls >= 7)
    h = runner.health
    assert h.device == "m1"
    assert seen == [("offline", "m1", "no response"), ("online", "m1")]
    assert h.online is True and h.errors == 4 and h.consecutive_errors == 0
    assert h.last_error == "internal error: KeyError('register 40001')"
    assert h.last_success == clock.time() and 0 <= h.response_time < 60
    assert [r.values["power"] for r in emitted][:3] == [1.0, 3.0, 7.0]


async def test_each_kind_of_driver_bug_gets_its_own_first_report(caplog) -> None:
    await run_script(["bug", "bug", "bug2"], lambda r, s: r.health.errors >= 3)
    logged = [r.getMessage() for r in caplog.records if "unexpected error in driver" in r.getMessage()]
    assert len(logged) == 2 and all(m.startswith("m1: ") for m in logged)


async def test_a_first_poll_that_works_brings_the_device_online_without_a_back_online() -> None:
    runner, seen, _, _ = await run_script(["ok"], lambda r, s: r.health.polls >= 2)
    assert runner.health.online is True and runner.health.polls >= 2 and seen == []


async def test_a_device_offline_stays_offline_once_and_a_hung_poll_counts_as_a_failure() -> None:
    runner, seen, _, _ = await run_script(
        ["hang"] + ["fail"] * 20, lambda r, s: r.health.errors >= 4, offline_after=1)
    assert seen == [("offline", "m1", "poll took over 0s")]  # once, not at every failure
    assert runner.health.online is False and runner.health.errors == runner.health.polls >= 4


def test_the_poll_limit_is_five_intervals_but_at_least_ten_seconds() -> None:
    def limit(interval: float) -> float:
        return DeviceRunner(device_id="m1", driver=FlakyDriver([]), interval=interval,
                            offline_after=1, emit=None, on_offline=None, on_online=None,  # type: ignore[arg-type]
                            clock=FakeClock())._poll_limit

    assert limit(1.0) == 10.0 and limit(4.0) == 20.0
