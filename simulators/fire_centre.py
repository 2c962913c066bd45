"""A city fire remote-monitoring centre (GB/T 26875.3) that shows what a device sends.

It listens on TCP, confirms every frame that parses (``deny=True``: denies them;
``silent=True``: answers nothing), decodes the information objects and keeps them
in ``received`` (one entry per distinct frame: a frame sent again with the same
sequence number and bytes counts in ``duplicates``). It can ask the connected
device to read its state, version or time (``request``) and send it commands
(``control``). ``stop()`` and ``start()`` again on the same port imitate an outage.

``community-gateway simulate fire-centre --listen 127.0.0.1:9000`` prints each frame
decoded, for an installer checking what the gateway reports.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers import gb26875 as codec
from drivers.gb26875 import Command, Frame, FrameError, TypeFlag

CENTRE_ADDRESS = 0x015B38  # the centre's address in the standard's worked examples


@dataclass(slots=True)
class Received:
    """A distinct frame the centre took: when (monotonic), the frame, its decoded unit."""

    at: float
    frame: Frame
    type_flag: int | None = None
    objects: list = field(default_factory=list)


class FireCentreSimulator:
    """The centre's side of the protocol, for tests and for installers."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, address: int = CENTRE_ADDRESS,
                 deny: bool = False, silent: bool = False, utc_offset_hours: float = 8.0,
                 out: Callable[[str], object] | None = None):
        self.host = host
        self.port = port
        self.address = address
        self.deny = deny
        self.silent = silent
        self._offset = utc_offset_hours * 3600
        self._out = out
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()
        self._seen: dict[tuple[int, int, bytes], None] = {}  # (source, seq, data) of kept frames
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._seq = 0
        self.received: list[Received] = []
        self.heartbeats = 0
        self.duplicates = 0
        self.bad_frames = 0
        self.connections = 0

    async def __aenter__(self) -> "FireCentreSimulator":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen (again) on ``port`` (0 picks a free one, kept for the next start)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every connection (an outage of the centre)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._conns):
            writer.close()  # each connection's task then reads EOF and ends by itself
        tasks = list(self._tasks)
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=2.0)
            for task in stuck:
                task.cancel()
            if stuck:
                await asyncio.wait(stuck)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    @property
    def connected(self) -> bool:
        return bool(self._conns)

    def objects(self, type_flag: int) -> list:
        """Every object of that type received, in order."""
        return [o for r in self.received if r.type_flag == type_flag for o in r.objects]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._conns.add(writer)
        self.connections += 1
        frames = codec.FrameReader()
        try:
            while data := await reader.read(4096):
                for frame in frames.feed(data):
                    self._take(frame, writer)
                self.bad_frames = sum(frames.errors.values())
        except (ConnectionError, OSError):
            pass
        finally:
            self._conns.discard(writer)
            self._tasks.discard(task)
            writer.close()

    def _take(self, frame: Frame, writer: asyncio.StreamWriter) -> None:
        if frame.command in (Command.CONFIRM, Command.DENY, Command.RESPONSE):
            future = self._pending.pop(frame.seq, None)
            if future is not None and not future.done():
                future.set_result(frame)
            self._say(frame, None, [])
            return
        if frame.command == Command.SEND and not frame.data:
            self.heartbeats += 1
        elif frame.command == Command.SEND:
            key = (frame.source, frame.seq, frame.data)
            if key in self._seen:
                self.duplicates += 1
            else:
                self._seen[key] = None
                try:
                    flag, objects = codec.decode_unit(frame.data)
                except FrameError:
                    flag, objects = None, []
                self.received.append(Received(time.monotonic(), frame, flag, objects))
                self._say(frame, flag, objects)
        if self.silent:
            return
        answer = Command.DENY if self.deny else Command.CONFIRM
        writer.write(frame.answer(answer, time=self._tag()).encode())

    def _tag(self) -> bytes:
        return codec.time_tag(time.time(), self._offset)

    def _say(self, frame: Frame, flag: int | None, objects: list) -> None:
        if self._out is not None:
            for line in describe(frame, flag, objects):
                self._out(line)

    async def request(self, type_flag: int, objects: list | None = None, *,
                      command: int = Command.REQUEST, timeout: float = 5.0) -> Frame:
        """Send a request (or, ``command=CONTROL``, a command) to the connected device and
        return its answer frame (response, confirm or deny)."""
        if not self._conns:
            raise ConnectionError("no device connected")
        writer = next(iter(self._conns))
        self._seq = (self._seq + 1) & 0xFFFF
        data = codec.encode_unit(type_flag, objects or [codec.Reserved()])
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pending[self._seq] = future
        writer.write(Frame(self._seq, command, self.address, 0, self._tag(), data).encode())
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._pending.pop(self._seq, None)


_FLAG_NAMES = {f.value: f.name.lower() for f in TypeFlag}
_DEVICE_BITS = {n: b for n, b in codec.DEVICE_STATE_BITS.items()}


def describe(frame: Frame, flag: int | None, objects: list) -> list[str]:
    """Lines an installer reads: the frame's header, then one line per object."""
    try:
        command = Command(frame.command).name.lower()
    except ValueError:
        command = f"command {frame.command}"
    head = (f"seq {frame.seq} {command} {frame.source:#x} -> {frame.destination:#x} "
            f"at {codec.tag_text(frame.time)}")
    if frame.command == Command.SEND and not frame.data:
        return [head + ": heartbeat"]
    if flag is None:
        return [head + (f": {len(frame.data)} bytes" if frame.data else "")]
    lines = [head + f": {_FLAG_NAMES.get(flag, flag)} x{len(objects)}"]
    for o in objects:
        lines.append("  " + _object_line(o))
    return lines


def _object_line(o) -> str:
    if isinstance(o, codec.ComponentState):
        return (f"component {o.component_address} (type {o.component_type}) of system "
                f"{o.system_type}/{o.system_address} {o.description!r}: "
                f"{','.join(codec.state_names(o.state))} at {codec.tag_text(o.time)}")
    if isinstance(o, codec.SystemState):
        return (f"system {o.system_type}/{o.system_address}: "
                f"{','.join(codec.state_names(o.state, codec.SYSTEM_STATE_BITS))} at "
                f"{codec.tag_text(o.time)}")
    if isinstance(o, codec.DeviceState):
        return (f"transmission device: {','.join(codec.state_names(o.state, _DEVICE_BITS))} at "
                f"{codec.tag_text(o.time)}")
    if isinstance(o, codec.ComponentAnalog):
        name, (_c, unit, res) = next(((n, v) for n, v in codec.ANALOG_TYPES.items()
                                      if v[0] == o.analog_type), ("type", (0, "", 1.0)))
        return (f"component {o.component_address} of system {o.system_type}/{o.system_address}: "
                f"{name} {o.value * res:g} {unit} at {codec.tag_text(o.time)}")
    if isinstance(o, codec.Operation):
        ops = [n for n, b in codec.OPERATION_BITS.items() if o.flags >> b & 1]
        return (f"operation on system {o.system_type}/{o.system_address}: {','.join(ops)} by "
                f"operator {o.operator} at {codec.tag_text(o.time)}")
    if isinstance(o, codec.Version):
        return f"software version {o.major}.{o.minor}"
    if isinstance(o, codec.DeviceTime):
        return f"time {codec.tag_text(o.time)}"
    return repr(o)


async def run_fire_centre(*, listen: str = "127.0.0.1:9000", deny: bool = False,
                          silent: bool = False, address: int = CENTRE_ADDRESS,
                          utc_offset_hours: float = 8.0, status_every: float = 30.0,
                          out: Callable[[str], object] = functools.partial(print, flush=True)) -> None:
    """Run the centre simulator until cancelled, printing every frame decoded."""
    host, _, port = listen.rpartition(":")
    async with FireCentreSimulator(host=host or "127.0.0.1", port=int(port), address=address,
                                   deny=deny, silent=silent, utc_offset_hours=utc_offset_hours,
                                   out=out) as centre:
        mode = "denying every frame" if deny else "answering nothing" if silent else "confirming"
        out(f"fire centre (GB/T 26875.3) on {centre.host}:{centre.port}, address "
            f"{address:#x}, {mode}; point the gateway's fire_centre.host/port here")
        while True:
            await asyncio.sleep(status_every)
            out(f"fire centre: {len(centre.received)} frames, {centre.heartbeats} heartbeats, "
                f"{centre.duplicates} repeats, {centre.bad_frames} bad frames, "
                f"{'connected' if centre.connected else 'no device connected'}")
