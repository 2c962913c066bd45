"""A radar on a serial port: read frames, hand over readings and events, send commands.

``SerialFrameDevice`` is a streaming driver for ``gateway.runtime.stream_runner``: ``stream``
opens the port (pyserial-asyncio-fast), feeds what it reads to the protocol's codec
and emits what each read completed, until the port fails or vanishes, which it
reports as ``DriverConnectError``. Reopening, backoff and online/offline belong to
the runner, so an unplugged USB adapter is reopened by the same path (a udev
``/dev/serial/by-id`` link) once it is back.

Bad bytes never leave the codec: they are counted (``counters()``) and skipped. A
frame still unfinished when the line has been quiet for ``quiet_gap`` seconds is
given up (``codec.flush()``), so a truncated frame cannot hide a good one behind it.

Commands share the port with the reading loop: ``command`` writes a frame and the
loop hands the matching reply (``codec.is_reply_to``) to the waiting command. Command
replies are consumed here; the values they carry (a sensitivity, the parameters) are
readings like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import serial_asyncio_fast

from drivers.serial_frames import CODECS
from drivers.serial_frames.codec import Decoded
from drivers.serial_frames.settings import Setting, confirms, setup_plan
from drivers.serial_frames.vocabulary import COMMAND_REPLY_EVENTS, SETUP_FAILED
from gateway.errors import DriverConnectError, DriverTimeout
from gateway.readings import DeviceEvent, Reading

log = logging.getLogger(__name__)

#: Most bytes taken from the port per read.
READ_SIZE = 4096
#: How long closing a port may take before it is left to the library.
CLOSE_TIMEOUT = 1.0

Emit = Callable[[list[Reading | DeviceEvent]], Awaitable[None]]


@dataclass(slots=True)
class CommandReply:
    """What answered a command: the frame, the values it carries, and whether a bare
    acknowledgement (TinyFrame) came first."""

    frame: object
    values: dict[str, float]
    acked: bool = False


@dataclass(slots=True)
class _Pending:
    command: object
    until: Literal["ack", "answer"]
    future: asyncio.Future
    acked: bool = False


@dataclass(slots=True)
class SetupResult:
    """How the last ``setup:`` went: setting name -> ``"ok"`` or what was wrong."""

    status: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.status) and all(s == "ok" for s in self.status.values())


class SerialFrameDevice:
    """One radar on one serial port, speaking ``protocol`` (a key of ``CODECS``)."""

    def __init__(self, *, device_id: str, port: str, protocol: str, clock,
                 baudrate: int = 115200, quiet_gap: float = 0.05, command_timeout: float = 1.0,
                 setup: Mapping[str, float] | None = None):
        if protocol not in CODECS:
            raise ValueError(f"unknown protocol {protocol!r}; known: {sorted(CODECS)}")
        if quiet_gap <= 0 or command_timeout <= 0:
            raise ValueError("quiet_gap and command_timeout must be positive")
        self.device_id = device_id
        self.port = port
        self.protocol = protocol
        self.baudrate = baudrate
        self.quiet_gap = quiet_gap
        self.command_timeout = command_timeout
        self.codec = CODECS[protocol]()
        self._clock = clock
        self._setup = dict(setup or {})
        # a setting the protocol cannot write is a ValueError now, not at the first open
        setup_plan(protocol, self._setup, next_id=lambda: 0)
        self.setup_result = SetupResult()
        self._writer: asyncio.StreamWriter | None = None
        self._pending: _Pending | None = None
        self._command_lock = asyncio.Lock()
        # TinyFrame IDs for our commands; 0 is what the radar uses for its own reports
        self._frame_ids = itertools.cycle(range(1, 0x8000))
        self.opens = 0
        self.commands = 0
        self.command_timeouts = 0
        self.unmatched_replies = 0

    @property
    def connected(self) -> bool:
        """Whether the port is open and being read."""
        return self._writer is not None

    def counters(self) -> dict[str, int]:
        """The codec's counters (frames_ok, garbage_bytes, bad_checksum, ...) and the
        driver's (opens, commands, command_timeouts, unmatched_replies)."""
        return {**self.codec.counters(), "opens": self.opens, "commands": self.commands,
                "command_timeouts": self.command_timeouts,
                "unmatched_replies": self.unmatched_replies}

    # -- reading ------------------------------------------------------------------

    async def stream(self, emit: Emit) -> None:
        """Open the port and emit what it reports until it fails (DriverConnectError)."""
        reader, writer = await self._open()
        self.codec.clear()  # bytes left from the last connection belong to no frame now
        self._writer = writer
        self.opens += 1
        setup = None
        if self._setup:
            setup = asyncio.create_task(self._apply_setup(emit), name=f"setup[{self.device_id}]")
        try:
            await self._read_loop(reader, emit)
        finally:
            self._writer = None
            pending = self._pending
            if pending is not None and not pending.future.done():
                pending.future.set_exception(
                    DriverConnectError(self.device_id, f"{self.port} closed before the reply"))
            if setup is not None:
                setup.cancel()
                await asyncio.wait([setup])
                if not setup.cancelled() and setup.exception() is not None:
                    log.error("%s: setup failed unexpectedly", self.device_id,
                              exc_info=setup.exception())
            await _close(writer)

    async def close(self) -> None:
        """Close the port if it is open (``stream`` also closes it when it ends)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            await _close(writer)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            # exclusive: a second reader on the line would steal half of the frames
            return await serial_asyncio_fast.open_serial_connection(
                url=self.port, baudrate=self.baudrate, exclusive=True)
        except (OSError, ValueError) as exc:  # SerialException is an OSError
            raise DriverConnectError(self.device_id, f"cannot open {self.port}: {exc}") from exc

    async def _read_loop(self, reader: asyncio.StreamReader, emit: Emit) -> None:
        codec = self.codec
        while True:
            data = await self._read(reader)
            frames = codec.feed(data) if data is not None else codec.flush()
            if frames:
                await emit(self._interpret(frames))

    async def _read(self, reader: asyncio.StreamReader) -> bytes | None:
        """The next bytes; None when the line stayed quiet with a frame unfinished."""
        try:
            if self.codec.buffered:
                try:
                    async with asyncio.timeout(self.quiet_gap):
                        data = await reader.read(READ_SIZE)
                except TimeoutError:
                    return None
            else:
                data = await reader.read(READ_SIZE)
        except OSError as exc:  # SerialException included: the adapter is gone
            raise DriverConnectError(self.device_id, f"{self.port}: {exc}") from exc
        if not data:
            raise DriverConnectError(self.device_id, f"{self.port}: port closed")
        return data

    def _interpret(self, frames: list) -> list[Reading | DeviceEvent]:
        """Readings and events of one read's frames, one reading per frame.

        Frames are not merged: a fall reported and cleared within one read must
        reach the rules as two values. The list may be empty (only command replies,
        point clouds): emitting it still tells the runner the radar is alive.
        """
        ts = self._clock.time()
        decode = self.codec.decode
        items: list[Reading | DeviceEvent] = []
        for frame in frames:
            decoded = decode(frame)
            self._route_reply(frame, decoded)
            if decoded.values:
                items.append(Reading(self.device_id, None, decoded.values, ts))
            for event in decoded.events:
                if event.name not in COMMAND_REPLY_EVENTS:
                    items.append(DeviceEvent(self.device_id, None, event.name, ts, event.attrs))
        return items

    def _route_reply(self, frame: object, decoded: Decoded) -> None:
        pending = self._pending
        is_ack = any(e.name == "ack" for e in decoded.events)
        is_reply_to = self.codec.is_reply_to  # type: ignore[attr-defined]
        if pending is None or pending.future.done() or not is_reply_to(frame, pending.command):
            if is_ack or any(e.name == "reply" for e in decoded.events):
                self.unmatched_replies += 1
            return
        if is_ack:
            pending.acked = True
            if pending.until == "answer":
                return
        pending.future.set_result(CommandReply(frame, dict(decoded.values), pending.acked))

    # -- commands -----------------------------------------------------------------

    def next_frame_id(self) -> int:
        """A fresh TinyFrame ID for a command built by the caller."""
        return next(self._frame_ids)

    async def command(self, frame, *, timeout: float | None = None,
                      until: Literal["ack", "answer"] = "answer") -> CommandReply:
        """Send a command frame and wait for the radar's reply to it.

        ``until="answer"`` waits for the reply that carries data (a TinyFrame radar
        first sends a bare acknowledgement); ``"ack"`` returns at the first reply.
        Raises DriverConnectError when the port is not open or fails, DriverTimeout
        when no reply comes within ``timeout`` (default ``command_timeout``).
        Commands go one at a time.
        """
        limit = self.command_timeout if timeout is None else timeout
        async with self._command_lock:
            writer = self._writer
            if writer is None:
                raise DriverConnectError(self.device_id, f"{self.port} is not open")
            pending = _Pending(frame, until, asyncio.get_running_loop().create_future())
            self._pending = pending
            self.commands += 1
            try:
                async with asyncio.timeout(limit):
                    writer.write(frame.to_bytes())
                    await writer.drain()
                    return await pending.future
            except TimeoutError as exc:
                self.command_timeouts += 1
                got = "only an acknowledgement" if pending.acked else "no reply"
                raise DriverTimeout(self.device_id, f"{got} to command {_hex(frame)} "
                                                    f"within {limit:g}s") from exc
            except OSError as exc:
                raise DriverConnectError(self.device_id, f"{self.port}: {exc}") from exc
            finally:
                self._pending = None

    async def _apply_setup(self, emit: Emit) -> None:
        """Write the ``setup:`` settings and check the radar took each one.

        A setting that is not confirmed is logged and emitted as a ``setup_failed``
        event; the radar keeps being read, since its fall reports matter more than
        a sensitivity off by one.
        """
        plan = setup_plan(self.protocol, self._setup, next_id=self.next_frame_id)
        status: dict[str, str] = {}
        try:
            written: list[Setting] = []
            for setting in plan.settings:
                try:
                    reply = await self.command(setting.command)
                except DriverTimeout as exc:
                    status[setting.name] = exc.detail
                    continue
                if plan.readback is None:
                    status[setting.name] = _verdict(setting, reply.values.get(setting.field))
                else:
                    written.append(setting)
            if written:
                try:
                    reply = await self.command(plan.readback)
                except DriverTimeout as exc:
                    status.update((s.name, f"read back failed: {exc.detail}") for s in written)
                else:
                    status.update((s.name, _verdict(s, reply.values.get(s.field))) for s in written)
        except DriverConnectError:
            return  # the port went away; stream() reports it and setup runs again on reopen
        previous, self.setup_result = self.setup_result, SetupResult(status)
        failed = {name: why for name, why in status.items() if why != "ok"}
        if previous.status != status:  # log a change of state once, not every reconnect
            if failed:
                log.error("%s: setup not confirmed: %s", self.device_id,
                          "; ".join(f"{n}: {w}" for n, w in failed.items()))
            else:
                log.info("%s: setup confirmed: %s", self.device_id,
                         ", ".join(f"{n}={v:g}" for n, v in self._setup.items()))
        if failed:
            ts = self._clock.time()
            await emit([DeviceEvent(self.device_id, None, SETUP_FAILED, ts,
                                    {"setting": name, "value": float(self._setup[name]),
                                     "detail": why})
                        for name, why in failed.items()])


def _verdict(setting: Setting, reported: float | None) -> str:
    if confirms(reported, setting.value):
        return "ok"
    if reported is None:
        return f"the reply does not carry {setting.field}"
    return f"radar reports {setting.field}={reported:g}, wanted {setting.value:g}"


def _hex(frame) -> str:
    return frame.to_bytes().hex(" ")


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close the port and wait (bounded) until the library has let it go."""
    writer.close()
    # Errors here only repeat why the port failed; the caller has reported that.
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await writer.wait_closed()


__all__ = ["CommandReply", "SerialFrameDevice", "SetupResult"]
