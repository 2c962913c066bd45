"""Two counts a slip would shift quietly: a device is offline at exactly ``offline_after``
failed polls, and the API token is compared whole."""

from __future__ import annotations

import asyncio

import pytest
from http_support import mocked_request
from virtual_time import VirtualTimeLoop

from gateway.clock import FakeClock
from gateway.errors import DriverError, DriverTimeout
from gateway.operations.http_api import TOKEN, bearer_token
from gateway.operations.http_app import App
from gateway.readings import Reading
from gateway.runtime import device_runner
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
    app = App()
    app[TOKEN] = token
    headers = {"Authorization": header} if header is not None else {}
    return await bearer_token(mocked_request("POST", "/api/alarms/x/ack", headers=headers, app=app))


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


# -- the device runner's schedule and retry delays, in virtual time (found by mutation testing)


class TimedDriver:
    """Records when each poll starts; each poll takes ``durations[k]`` seconds (0 after
    the list) and fails when ``fail`` is set."""

    def __init__(self, polls: int, durations: list[float] = (), fail: bool = False):
        self.wanted, self.durations, self.fail = polls, list(durations), fail
        self.started: list[float] = []
        self.done = asyncio.Event()

    async def poll(self):
        self.started.append(asyncio.get_running_loop().time())
        if len(self.started) >= self.wanted:
            self.done.set()
        if self.durations:
            await asyncio.sleep(self.durations.pop(0))
        if self.fail:
            raise DriverError("m1", "no response")
        return []

    async def write(self, channel, field, value) -> None:
        pass

    async def close(self) -> None:
        pass


def poll_times(driver: TimedDriver, *, interval: float, offline_after: int = 3,
               device_id: str = "m1") -> tuple[list[float], DeviceRunner]:
    """Run a runner on virtual time until the driver has polled enough: the instants of
    its polls, from the first."""
    async def emit(readings) -> None:
        pass

    runner = DeviceRunner(device_id=device_id, driver=driver, interval=interval,
                          offline_after=offline_after, emit=emit, on_offline=lambda dev, why: None,
                          on_online=lambda dev: None, clock=FakeClock())

    async def main() -> None:
        task = asyncio.create_task(runner.run())
        waiter = asyncio.create_task(driver.done.wait())
        # An hour of virtual time (no real wait): a runner that stops polling fails here.
        await asyncio.wait([task, waiter], timeout=3600, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    loop = VirtualTimeLoop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert driver.done.is_set(), f"only {len(driver.started)} polls"
    return [t - driver.started[0] for t in driver.started], runner


# crc32(b"m1") % 1000 + 1 == 336: the device's phase is 0.336 of a second, or of an interval
# under a second (the second poll comes sooner there: no gap longer than the interval).
@pytest.mark.parametrize(("interval", "first_gap"),
                         [(0.5, 0.168), (1.0, 1.336), (1.5, 1.836), (4.0, 4.336)])
def test_polls_keep_their_interval_and_each_device_its_own_phase(interval, first_gap) -> None:
    times, runner = poll_times(TimedDriver(polls=5), interval=interval)
    expected = [0.0] + [first_gap + k * interval for k in range(4)]
    assert times == pytest.approx(expected, abs=1e-9)
    assert runner.health.missed_slots == 0


def test_a_poll_that_overruns_skips_to_the_next_slot_and_counts_the_slots_missed() -> None:
    # Interval 0.5 s, the second poll at 0.168 (the phase). Poll 1 takes 1.25 s: the slots
    # at 0.668 and 1.168 are missed, the next poll is at 1.668. Poll 2 takes exactly one
    # interval: it is on time, no slot missed. Poll 3 takes 0.75 s: the slot at 2.668 is
    # missed, the next poll is at 3.168.
    driver = TimedDriver(polls=5, durations=[0.0, 1.25, 0.5, 0.75])
    times, runner = poll_times(driver, interval=0.5)
    assert times == pytest.approx([0.0, 0.168, 1.668, 2.168, 3.168], abs=1e-9)
    assert runner.health.missed_slots == 3


class TopOfWindowBackoff(device_runner.Backoff):
    """The runner's backoff with its jitter always at the top of the window, so the
    delays it asks for are known."""

    class _Top:
        def uniform(self, low: float, high: float) -> float:
            return high

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs, rng=self._Top())


@pytest.mark.parametrize(("interval", "gaps"), [
    # The first retries of an offline device come after min(1 s, interval), doubling up
    # to max(5 s, 10 intervals).
    (2.0, [2.0, 2.0, 1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0]),
    (0.1, [0.1, 0.1, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]),
])
def test_an_offline_device_is_retried_with_doubling_delays_from_one_interval_to_a_cap(
        monkeypatch, interval, gaps) -> None:
    monkeypatch.setattr(device_runner, "Backoff", TopOfWindowBackoff)
    # Two failures before offline wait one interval each; then the backoff's delays.
    times, runner = poll_times(TimedDriver(polls=len(gaps) + 1, fail=True), interval=interval)
    assert [b - a for a, b in zip(times, times[1:])] == pytest.approx(gaps)
    assert runner.health.online is False


def test_a_hung_poll_gives_up_after_the_poll_limit_with_a_timeout_naming_the_device() -> None:
    class HungDriver(TimedDriver):
        async def poll(self):
            await asyncio.Event().wait()

    runner = DeviceRunner(device_id="m1", driver=HungDriver(polls=1), interval=1.0, offline_after=1,
                          emit=None, on_offline=None, on_online=None,  # type: ignore[arg-type]
                          clock=FakeClock())

    async def poll() -> tuple[DriverTimeout, float]:
        start = asyncio.get_running_loop().time()
        with pytest.raises(DriverTimeout) as caught:
            async with asyncio.timeout(3600):  # virtual: a poll without a limit fails here
                await runner._poll_once()
        return caught.value, asyncio.get_running_loop().time() - start

    loop = VirtualTimeLoop()
    try:
        exc, waited = loop.run_until_complete(poll())
    finally:
        loop.close()
    assert waited == pytest.approx(10.0)  # the default limit, in virtual time
    assert exc.device == "m1" and str(exc) == "m1: poll took over 10s"
