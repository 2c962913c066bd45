"""The TCP link to the fire remote-monitoring centre: send, wait for the confirm, resend.

Send/confirm (GB/T 26875.3 6.5): one frame is outstanding at a time, the oldest
queued one, so the centre sees them in order. Without the centre's confirm within
``confirm_timeout`` the same bytes (same sequence number) go again, ``retries``
times; then the connection is closed and reopened with capped, jittered backoff
and the same frame is sent first: a reconnect resumes where it stopped. A deny is
logged and counted and the frame is resent likewise; one denied ``retries + 1``
times is set aside (``FrameQueue.refuse``) so it cannot block what follows.

While nothing waits, a heartbeat (a ``send`` with an empty data unit, which the
centre confirms) goes every ``heartbeat_interval`` seconds. The centre's own
requests and commands are answered at once, between our sends, by ``answer``.
Everything the centre sends is untrusted: a frame that does not parse is counted
and skipped (``FrameReader``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable

from gateway.backoff import Backoff
from gateway.config.fire_centre import FireCentreConfig
from drivers.gb26875 import Command, Frame, FrameReader, time_tag
from gateway.upstream.fire_centre.queue import FrameQueue

log = logging.getLogger(__name__)

READ_SIZE = 4096

Answer = Callable[[Frame], "Frame | None"]  # the centre's request or command -> our answer


class LinkDown(Exception):
    """The connection to the centre is gone or stopped answering (internal: reconnect)."""


class FireCentreLink:
    """One TCP client connection to the centre, reopened as often as needed."""

    def __init__(self, *, config: FireCentreConfig, queue: FrameQueue, answer: Answer,
                 clock=None, monotonic: Callable[[], float] = time.monotonic):
        self.config = config
        self.queue = queue
        self._answer = answer
        self._clock = clock
        self._monotonic = monotonic
        self._offset = config.utc_offset_hours * 3600
        self._wake = asyncio.Event()
        self._waiting: tuple[int, asyncio.Future[Frame]] | None = None
        self._down: str | None = None
        self.connected = False
        self.last_error: str | None = None
        self.last_confirm: float | None = None
        self.reader = FrameReader()
        self.counts = dict.fromkeys(("sent", "confirmed", "denied", "resent", "timeouts",
                                     "heartbeats", "connects", "refused", "requests",
                                     "unexpected"), 0)

    def wake(self) -> None:
        """Frames were queued: send them now."""
        self._wake.set()

    def _now(self) -> float:
        return self._clock.time() if self._clock is not None else time.time()

    def frame(self, seq: int, command: int, data: bytes = b"") -> bytes:
        """One of our frames, time-tagged now."""
        return Frame(seq, command, self.config.source_address, self.config.destination_address,
                     time_tag(self._now(), self._offset), data).encode()

    # -- connection ----------------------------------------------------------------------

    async def run(self) -> None:
        """Keep the link up and the queue draining until cancelled."""
        cfg = self.config
        backoff = Backoff(initial=cfg.reconnect_interval, cap=cfg.reconnect_max)
        failing = False
        while True:
            try:
                async with asyncio.timeout(cfg.confirm_timeout):
                    reader, writer = await asyncio.open_connection(cfg.host, cfg.port)
            except (OSError, TimeoutError) as exc:
                problem = f"cannot connect: {exc or type(exc).__name__}"
            else:
                self.counts["connects"] += 1
                self.connected = True
                failing = False
                log.info("fire centre %s:%s connected; %d frames queued", cfg.host, cfg.port,
                         self.queue.depth())
                try:
                    await self._session(reader, writer, backoff)
                except (LinkDown, OSError) as exc:
                    problem = str(exc) or type(exc).__name__
                except sqlite3.Error as exc:  # the queue's file: retried, never fatal
                    problem = f"queue {self.queue.path}: {exc}"
                finally:
                    self.connected = False
                    writer.close()
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()
            self.last_error = problem
            if not failing:
                log.error("fire centre %s:%s: %s; %d frames queued, retrying", cfg.host, cfg.port,
                          problem, self.queue.depth())
                failing = True
            await asyncio.sleep(backoff.next_delay())

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       backoff: Backoff) -> None:
        self._down = None
        self.reader = _keep_counts(self.reader)
        receiving = asyncio.create_task(self._receive(reader, writer),
                                        name="fire-centre.receive")
        try:
            await self._send_loop(writer, backoff)
        finally:
            receiving.cancel()
            await asyncio.wait({receiving})  # its end is ours to wait for, not to re-raise
            self._waiting = None

    # -- sending -------------------------------------------------------------------------

    async def _send_loop(self, writer: asyncio.StreamWriter, backoff: Backoff) -> None:
        cfg = self.config
        denials = 0
        last_id = None
        idle_since = self._monotonic()
        while True:
            if self._down is not None:
                raise LinkDown(self._down)
            item = self.queue.oldest()
            if item is None:
                due = idle_since + cfg.heartbeat_interval - self._monotonic()
                if due > 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(due):
                            await self._wake.wait()
                    continue
                seq = self.queue.next_seq()
                await self._exchange(writer, self.frame(seq, Command.SEND), seq)
                self.counts["heartbeats"] += 1
                idle_since = self._monotonic()
                continue
            if item.id != last_id:
                last_id, denials = item.id, 0
            answer = await self._exchange(writer, item.frame, item.seq)
            idle_since = self._monotonic()
            backoff.reset()
            if answer.command == Command.CONFIRM:
                self.queue.remove(item.id)
                self.counts["confirmed"] += 1
                continue
            denials += 1
            self.counts["denied"] += 1
            if denials > cfg.retries:
                self.queue.refuse(item, self._now(), f"denied {denials} times")
                self.counts["refused"] += 1
                log.error("fire centre denied frame %d (%s, seq %d) %d times; set aside in %s",
                          item.id, item.kind, item.seq, denials, self.queue.path)
            else:
                log.warning("fire centre denied frame %d (%s, seq %d); sending it again",
                            item.id, item.kind, item.seq)

    async def _exchange(self, writer: asyncio.StreamWriter, frame: bytes, seq: int) -> Frame:
        """Send ``frame`` until the centre confirms or denies it; LinkDown when it never does."""
        loop = asyncio.get_running_loop()
        for attempt in range(self.config.retries + 1):
            future: asyncio.Future[Frame] = loop.create_future()
            self._waiting = (seq, future)
            writer.write(frame)
            await writer.drain()
            self.counts["sent" if attempt == 0 else "resent"] += 1
            try:
                async with asyncio.timeout(self.config.confirm_timeout):
                    answer = await future
            except TimeoutError:
                self.counts["timeouts"] += 1
                continue
            finally:
                self._waiting = None
            self.last_confirm = self._now()
            return answer
        raise LinkDown(f"no confirm for seq {seq} after {self.config.retries + 1} tries")

    # -- receiving -----------------------------------------------------------------------

    async def _receive(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    raise LinkDown("the centre closed the connection")
                for frame in self.reader.feed(data):
                    self._dispatch(frame, writer)
        except (LinkDown, OSError) as exc:
            self._fail(str(exc) or type(exc).__name__)

    def _fail(self, why: str) -> None:
        self._down = why
        if self._waiting is not None and not self._waiting[1].done():
            self._waiting[1].set_exception(LinkDown(why))
        self._wake.set()

    def _dispatch(self, frame: Frame, writer: asyncio.StreamWriter) -> None:
        if frame.command in (Command.CONFIRM, Command.DENY):
            waiting = self._waiting
            if waiting is not None and waiting[0] == frame.seq and not waiting[1].done():
                waiting[1].set_result(frame)
            else:
                self.counts["unexpected"] += 1  # a late confirm of a frame already resent
            return
        self.counts["requests"] += 1
        try:
            reply = self._answer(frame)
        except Exception:  # a bug answering one request must not take the link down
            log.exception("fire centre: answering seq %d (command %d) failed; denied",
                          frame.seq, frame.command)
            reply = None
        if reply is None:
            reply = frame.answer(Command.DENY, time=time_tag(self._now(), self._offset))
        writer.write(reply.encode())

    def stats(self) -> dict[str, float | int | str | None]:
        """Counters and gauges for /metrics and /healthz."""
        try:
            queued, oldest = self.queue.depth(), self.queue.oldest_created()
        except sqlite3.Error:  # the link logs the queue's trouble; a scrape must still work
            queued, oldest = -1, None
        out: dict[str, float | int | str | None] = {f"{k}_total": v for k, v in self.counts.items()}
        out.update(connected=1 if self.connected else 0, queued=queued,
                   oldest_queued_age=(self._now() - oldest) if oldest is not None else 0.0,
                   bad_frames_total=sum(self.reader.errors.values()),
                   skipped_bytes_total=self.reader.skipped_bytes,
                   last_confirm_timestamp=self.last_confirm, last_error=self.last_error)
        return out


def _keep_counts(old: FrameReader) -> FrameReader:
    """A fresh reader for a new connection (no half frame carried over), keeping the counts."""
    new = FrameReader()
    new.frames, new.skipped_bytes, new.errors = old.frames, old.skipped_bytes, old.errors
    return new
