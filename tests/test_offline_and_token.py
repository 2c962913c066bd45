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
from gateway.runtime.device_runner import DeviceRunner


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
