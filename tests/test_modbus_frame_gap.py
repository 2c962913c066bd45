"""The quiet gap between Modbus RTU frames runs from the end of the last transaction.

The caller's work on a reply (decoding, planning the next request) overlaps the gap
instead of adding to it (issue 16.6: the poll cycle at the wire's limit), but the line
is never quiet for less than the gap. Timed in virtual time: exact instants, no sleeps.
"""

from __future__ import annotations

import asyncio

from virtual_time import VirtualTimeLoop

from drivers.modbus.bus import ModbusBus

GAP = 0.004
ON_THE_LINE = 0.010  # a request and its reply


class LineClient:
    """Stands in for pymodbus's client: records when each request starts and its reply ends."""

    connected = True

    def __init__(self) -> None:
        self.frames: list[tuple[float, float]] = []

    async def read_holding_registers(self, address, count, device_id):
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(ON_THE_LINE)
        self.frames.append((start, loop.time()))
        return Reply(count)

    def close(self) -> None:
        pass


class Reply:
    def __init__(self, count: int) -> None:
        self.registers = [0] * count

    def isError(self) -> bool:
        return False


def run(coro):
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def test_a_request_right_after_a_reply_waits_for_the_whole_gap() -> None:
    async def main():
        client = LineClient()
        bus = ModbusBus(name="rtu", client=client, frame_gap=GAP)  # type: ignore[arg-type]
        for _ in range(3):
            await bus.read("meter", 1, "holding", 0, 2)
        return client.frames

    frames = run(main())
    quiet = [round(nxt[0] - prev[1], 9) for prev, nxt in zip(frames, frames[1:])]
    assert quiet == [GAP, GAP], quiet


def test_work_on_the_reply_counts_towards_the_gap() -> None:
    async def main():
        client = LineClient()
        bus = ModbusBus(name="rtu", client=client, frame_gap=GAP)  # type: ignore[arg-type]
        await bus.read("meter", 1, "holding", 0, 2)
        await asyncio.sleep(GAP / 4)  # the caller decodes the reply meanwhile
        await bus.read("meter", 1, "holding", 0, 2)
        await asyncio.sleep(GAP * 3)  # longer than the gap: no wait at all
        await bus.read("meter", 1, "holding", 0, 2)
        return client.frames

    frames = run(main())
    quiet = [round(nxt[0] - prev[1], 9) for prev, nxt in zip(frames, frames[1:])]
    assert quiet == [GAP, GAP * 3], quiet


def test_without_a_gap_requests_follow_at_once() -> None:
    async def main():
        client = LineClient()
        bus = ModbusBus(name="tcp", client=client)  # type: ignore[arg-type]
        for _ in range(2):
            await bus.read("meter", 1, "holding", 0, 2)
        return client.frames

    frames = run(main())
    assert frames[1][0] == frames[0][1]
