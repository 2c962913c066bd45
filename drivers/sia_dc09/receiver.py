"""A SIA DC-09 receiver on TCP: alarm panels dial in, we answer every frame.

One ``Dc09Receiver`` listens on one address for every panel configured against it
(panels are told apart by account). Each panel is an ``AlarmHostDevice``, a
streaming driver: while the runtime streams it, its account is registered here and
its frames arrive on its own bounded queue. A frame is acknowledged only once its
event is on that queue; when the queue is full the panel gets ``NAK`` and sends the
frame again later, so an alarm is delayed, never dropped.

Panels resend a frame whose ``ACK`` they missed: a repeat of the last sequence
numbers of an account is acknowledged again but not delivered twice.

What the receiver refuses, it answers as DC-09 says (``NAK`` bad CRC/length/time,
``DUH`` unusable or unknown account) and counts; no bytes from a socket can raise
out of it. Connections are capped and closed when idle.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

from drivers.sia_dc09.contact_id import parse_contact_id
from drivers.sia_dc09.frame import MAX_FRAME, Dc09Frame, FrameError, answer, parse_frame
from gateway.errors import DriverConnectError
from gateway.readings import DeviceEvent, Reading

log = logging.getLogger(__name__)

#: Events waiting for the pipeline, per panel; beyond it frames are NAKed (resent later).
QUEUE_SIZE = 256
#: Sequence numbers remembered per account to spot resent frames.
RECENT_SEQUENCES = 16
#: Repeated log lines about the same problem are written at most this often.
LOG_EVERY_S = 300.0

#: Every counter a receiver keeps, always present in ``counters()``.
COUNTER_NAMES = ("frames", "acked", "heartbeats", "events", "duplicates", "nak_bad_frame",
                 "nak_time", "nak_busy", "duh", "unknown_account", "connections",
                 "connections_refused")

Item = Reading | DeviceEvent


class Dc09Receiver:
    """The listening side shared by every panel that reports to one address."""

    def __init__(self, *, name: str, host: str, port: int, clock, max_connections: int = 64,
                 idle_timeout: float = 300.0):
        self.name = name
        self.host = host
        self.port = port
        self._clock = clock
        self._max_connections = max_connections
        self._idle_timeout = idle_timeout
        self._panels: dict[str, _Panel] = {}
        self._server: asyncio.Server | None = None
        # One start or stop of the listening socket at a time: panels on one address
        # attach together at start (and detach and attach at a reload); without it the
        # second would try to bind the socket the first is binding, and fail.
        self._listening = asyncio.Lock()
        self._open: set[asyncio.StreamWriter] = set()
        self._logged: dict[str, float] = {}
        self.counts = collections.Counter({k: 0 for k in COUNTER_NAMES})

    def counters(self) -> dict[str, int]:
        """Frames seen, answered and refused, by outcome."""
        return dict(self.counts)

    @property
    def bound_port(self) -> int | None:
        """The port actually listened on (when configured as 0), or None if not listening."""
        if self._server is None or not self._server.sockets:
            return None
        return self._server.sockets[0].getsockname()[1]

    async def attach(self, account: str, device_id: str,
                     time_window: tuple[float, float] | None = None) -> asyncio.Queue[Item]:
        """Start delivering ``account``'s frames (listening if not yet); its queue.

        ``time_window`` (seconds behind, seconds ahead): a frame whose time stamp is
        outside it is NAKed with our time; None accepts any time."""
        account = account.upper()
        if account in self._panels:
            raise DriverConnectError(device_id, f"receiver {self.name}: account {account} "
                                                f"is already served by {self._panels[account].device}")
        panel = self._panels[account] = _Panel(device_id, time_window)
        async with self._listening:
            if self._server is None:
                try:
                    self._server = await asyncio.start_server(self._serve, self.host, self.port,
                                                              limit=MAX_FRAME + 16)
                except OSError as exc:
                    if self._panels.get(account) is panel:
                        del self._panels[account]
                    raise DriverConnectError(device_id, f"receiver {self.name}: cannot listen "
                                                        f"on {self.host}:{self.port}: {exc}") from exc
                log.info("receiver %s: listening for DC-09 on %s:%s", self.name, self.host,
                         self.bound_port)
        return panel.queue

    async def detach(self, account: str) -> None:
        """Stop delivering ``account``; the last one out stops listening."""
        self._panels.pop(account.upper(), None)
        async with self._listening:
            if not self._panels and self._server is not None:
                server, self._server = self._server, None
                server.close()
                for writer in list(self._open):
                    writer.close()
                with contextlib.suppress(Exception):
                    await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._open) >= self._max_connections:
            self.counts["connections_refused"] += 1
            self._log_once("connections", "receiver %s: %d connections open; refusing more",
                           self.name, len(self._open))
            writer.close()
            return
        self.counts["connections"] += 1
        self._open.add(writer)
        try:
            while True:
                try:
                    async with asyncio.timeout(self._idle_timeout):
                        raw = await reader.readuntil(b"\r")
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return  # the panel hung up, or went quiet: it dials again
                except asyncio.LimitOverrunError:
                    self.counts["nak_bad_frame"] += 1
                    writer.write(answer("NAK", None, self._now()))
                    return  # no frame boundary in sight: start over on a new connection
                writer.write(self.handle(raw))
                await writer.drain()
        except ConnectionError:
            return
        finally:
            self._open.discard(writer)
            writer.close()

    def handle(self, raw: bytes) -> bytes:
        """The answer to one frame (its event queued first when it is accepted)."""
        self.counts["frames"] += 1
        now = self._now()
        try:
            frame = parse_frame(raw)
        except FrameError as exc:
            self.counts["nak_bad_frame" if exc.answer == "NAK" else "duh"] += 1
            self._log_once(f"bad:{exc.reason[:20]}", "receiver %s: refused a frame (%s): %s",
                           self.name, exc.answer, exc.reason)
            return answer(exc.answer, exc.frame, now)
        panel = self._panels.get(frame.account)
        if panel is None:
            self.counts["unknown_account"] += 1
            self._log_once(f"account:{frame.account}", "receiver %s: frame from unknown account "
                           "%s refused", self.name, frame.account)
            return answer("DUH", frame, now)
        if panel.window is not None and frame.timestamp is not None:
            skew = (frame.timestamp - now).total_seconds()
            if skew < -panel.window[0] or skew > panel.window[1]:
                self.counts["nak_time"] += 1
                self._log_once(f"time:{frame.account}", "receiver %s: account %s's clock is %+.0f s "
                               "off; NAK with our time", self.name, frame.account, skew)
                return answer("NAK", frame, now)
        if panel.seen(frame):
            self.counts["duplicates"] += 1
            self.counts["acked"] += 1
            return answer("ACK", frame, now)
        try:
            item = self._item(panel.device, frame)
        except ValueError as exc:
            self.counts["duh"] += 1
            self._log_once(f"data:{frame.account}", "receiver %s: account %s: %s", self.name,
                           frame.account, exc)
            return answer("DUH", frame, now)
        try:
            panel.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.counts["nak_busy"] += 1
            panel.forget(frame)
            return answer("NAK", frame, now)
        self.counts["acked"] += 1
        self.counts["heartbeats" if frame.is_heartbeat else "events"] += 1
        return answer("ACK", frame, now)

    def _item(self, device: str, frame: Dc09Frame) -> Item:
        ts = self._clock.time()
        if frame.is_heartbeat:
            return Reading(device, None, {"online": 1.0}, ts)
        if frame.message_id != "ADM-CID":
            raise ValueError(f"message type {frame.message_id} is not supported (ADM-CID only)")
        event = parse_contact_id(frame.data)
        attrs = event.attrs
        attrs["sequence"] = frame.sequence
        if frame.timestamp is not None:
            attrs["panel_time"] = frame.timestamp.isoformat().replace("+00:00", "Z")
        return DeviceEvent(device, event.zone or None, event.name, ts, attrs)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.time(), tz=timezone.utc)

    def _log_once(self, key: str, msg: str, *args) -> None:
        now = time.monotonic()
        if now - self._logged.get(key, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[key] = now
            if len(self._logged) > 1024:  # keys come from the wire: keep the table small
                self._logged.clear()
            log.warning(msg, *args)


class _Panel:
    """One registered account: its device, queue and recently accepted frames."""

    __slots__ = ("device", "window", "queue", "_recent")

    def __init__(self, device: str, window: tuple[float, float] | None = None):
        self.device = device
        self.window = window
        self.queue: asyncio.Queue[Item] = asyncio.Queue(QUEUE_SIZE)
        self._recent: collections.deque[tuple[str, str, str]] = collections.deque(
            maxlen=RECENT_SEQUENCES)

    def seen(self, frame: Dc09Frame) -> bool:
        """True for a resend of a frame already accepted; remembers new ones."""
        key = (frame.message_id, frame.sequence, frame.data)
        if frame.is_heartbeat or key not in self._recent:
            self._recent.append(key)
            return False
        return True

    def forget(self, frame: Dc09Frame) -> None:
        with contextlib.suppress(ValueError):
            self._recent.remove((frame.message_id, frame.sequence, frame.data))


Emit = Callable[[list[Item]], Awaitable[None]]


class AlarmHostDevice:
    """One alarm panel reporting to a receiver: a streaming driver for the runtime."""

    def __init__(self, *, device_id: str, receiver: Dc09Receiver, account: str,
                 time_window: tuple[float, float] | None = None):
        self.device_id = device_id
        self.receiver = receiver
        self.account = account
        self.time_window = time_window

    async def stream(self, emit: Emit) -> None:
        """Deliver the panel's events and heartbeats until cancelled."""
        queue = await self.receiver.attach(self.account, self.device_id, self.time_window)
        try:
            while True:
                items = [await queue.get()]
                while not queue.empty():
                    items.append(queue.get_nowait())
                await emit(items)
        finally:
            await self.receiver.detach(self.account)

    async def close(self) -> None:
        """Nothing to close: the receiver stops with its last panel."""

    def counters(self) -> dict[str, int]:
        """The receiver's counters (shared by its panels)."""
        return self.receiver.counters()
