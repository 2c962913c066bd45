"""A gateway stopped while a sink's write is in flight: the batch is written once, and a
write that never ends does not hold the stop.

The local-file sink appends in a worker thread, which finishes even though the task that
started it was cancelled. Seen under load in
test_outbox_edges.py::test_a_stopped_gateway_has_sent_every_reading_it_took (21 lines for
20 readings): the cursor did not move, and the shutdown's flush wrote the batch again.
Here the append is held at a gate (a slow disk, on demand) until the stop has cancelled
the sink's task, so the race is the same every run.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from gateway.runtime.app import SHUTDOWN_FLUSH_SECONDS, Gateway
from gateway.runtime.site import load_site
from gateway.upstream.local_file import LocalFileSink
from harness import wait_until, write_site


class AppendGate:
    """Holds the first append of the local-file sink (in its worker thread) until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.appends = 0
        real = LocalFileSink._append

        def gated(sink: LocalFileSink, data: bytes) -> None:
            self.appends += 1
            if self.appends == 1:
                self.entered.set()
                self.release.wait(30)  # never for ever: the test's loop must be able to close
            real(sink, data)

        monkeypatch.setattr(LocalFileSink, "_append", gated)


def site(tmp_path: Path, unique_id: str) -> Path:
    # No commit before the stop (60 s): the rows reach the sink before their commit, and
    # the shutdown's flush sends whatever the sink has not confirmed.
    return write_site(tmp_path, {
        "site": {"id": unique_id}, "local_series": {"path": str(tmp_path / "series.lp")},
        "outbox": {"commit_interval": 60, "commit_rows": 1_000_000},
        "devices": [{"id": "m1", "type": "synthetic", "kind": "meter", "fields": ["power"],
                     "poll_interval": 0.01}]})


async def test_a_write_that_completes_after_the_stop_is_not_sent_again(
        tmp_path, unique_id, monkeypatch) -> None:
    gate = AppendGate(monkeypatch)
    gateway = Gateway(load_site(site(tmp_path, unique_id)))
    task = asyncio.create_task(gateway.run(), name="test-gateway")
    await wait_until(gate.entered.is_set, 10, "the first append, held")
    await wait_until(lambda: gateway.pipeline.readings >= 20, 10, "more readings meanwhile")
    [sink_task] = [t for t in asyncio.all_tasks() if t.get_name() == "sink[local-file]"]
    task.cancel()
    await wait_until(sink_task.done, 10, "the sink's task cancelled")
    gate.release.set()  # the held append completes now, after its task was cancelled
    with pytest.raises(asyncio.CancelledError):
        await task
    taken = gateway.pipeline.readings + gateway.pipeline.events
    lines = (tmp_path / "series.lp").read_text().splitlines()
    assert len(lines) == taken, f"{len(lines)} lines for {taken} readings"
    assert len(set(lines)) == len(lines)


async def test_a_write_that_never_ends_does_not_hold_the_stop(
        tmp_path, unique_id, monkeypatch) -> None:
    gate = AppendGate(monkeypatch)
    gateway = Gateway(load_site(site(tmp_path, unique_id)))
    task = asyncio.create_task(gateway.run(), name="test-gateway")
    try:
        await wait_until(gate.entered.is_set, 10, "the first append, held")
        task.cancel()
        # The stop gives the flush SHUTDOWN_FLUSH_SECONDS; far more means it waited on the
        # write (a bound, not a measurement).
        done, _ = await asyncio.wait([task], timeout=SHUTDOWN_FLUSH_SECONDS + 10)
        assert done, "the gateway waited on a sink write that does not end"
        assert task.cancelled()
        assert gate.appends == 1  # the flush did not write the rows held by the stuck write
    finally:
        gate.release.set()
        await asyncio.wait([task], timeout=30)
