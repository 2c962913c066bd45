"""A fall-detection radar on a serial line: real frames out, commands answered.

``RadarSimulator`` writes what a ``RadarModel`` sees as MR60FDA1 or TinyFrame
(LD6002C / MR60FDA2) frames into a serial port (usually side ``b`` of a
``PtyPair``; the gateway opens side ``a``), and answers the host's commands the
way the device does. Every ``interval`` seconds it sends one burst: the body
movement (MR60FDA1) or the target height (TinyFrame, while someone is there),
plus the state reports (presence, motion, fall, stationary dwell) when they
change or every ``refresh`` seconds; an MR60FDA1 adds a heartbeat every
``heartbeat`` seconds.

Faults (``Faults``, switchable while running) hit one frame in ``every`` at random:
``garbage`` puts random bytes before it, ``bad_checksum`` breaks its checksum,
``truncated`` cuts it short (written last in its burst, so the line then goes
quiet mid-frame, as when a radar resets while sending). ``silence`` stops all
output, replies included; ``deaf`` ignores commands only. A port that vanishes is
``PtyPair.unplug()`` (``--fault vanish`` by hand).

By hand::

    community-gateway simulate radar --protocol mr60fda1 --scenario fall --serial pty
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
import struct
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, fields

import serial_asyncio_fast

from drivers.serial_frames import CODECS, Mr60fda1Frame, TinyFrameFrame, mr60fda1, tinyframe
from simulators.background import cancel_and_wait
from simulators.ptypair import PtyPair
from simulators.radar_scenarios import SCENARIOS, RadarModel, RoomState

log = logging.getLogger(__name__)

PROTOCOLS = ("mr60fda1", "ld6002c", "mr60fda2")
FAULTS = ("silence", "garbage", "bad_checksum", "truncated", "deaf", "vanish")
#: Status byte of a TinyFrame set reply: what this simulator sends for "taken".
TF_SET_OK = 1
TF_SET_REFUSED = 0
# Mounting heights the simulated TinyFrame radar takes, metres.
_TF_HEIGHT_RANGE = (0.5, 6.0)

_MR_INFO = {0xA1: b"MR60FDA1", 0xA2: b"SIM-0001", 0xA3: b"MR60FDA1-HW", 0xA4: b"G60FD-SIM-1.0"}
_ZONE = struct.Struct("<ffff")
_F32 = struct.Struct("<f")
_U32 = struct.Struct("<I")


@dataclass(slots=True)
class Faults:
    """Fault switches; change them at any time."""

    silence: bool = False
    garbage: bool = False
    bad_checksum: bool = False
    truncated: bool = False
    deaf: bool = False
    every: int = 3  # the frame faults hit one frame in ``every``, at random

    def active(self) -> list[str]:
        """Names of the switches that are on."""
        return [f.name for f in fields(self) if f.name != "every" and getattr(self, f.name)]


class RadarSimulator:
    """Serve a ``RadarModel`` as ``protocol`` frames on the serial port ``serial``.

    Use as ``async with RadarSimulator(model, protocol="ld6002c", serial=pair.b) as sim``.
    """

    def __init__(self, model: RadarModel, *, protocol: str, serial: str, baudrate: int = 115200,
                 interval: float = 1.0, refresh: float = 5.0, heartbeat: float = 10.0,
                 faults: Faults | None = None, seed: int | None = None):
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; known: {PROTOCOLS}")
        if interval <= 0 or refresh <= 0 or heartbeat <= 0:
            raise ValueError("interval, refresh and heartbeat must be positive")
        self.model = model
        self.protocol = protocol
        self.serial = serial
        self.baudrate = baudrate
        self.interval = interval
        self.refresh = refresh
        self.heartbeat = heartbeat
        self.faults = faults or Faults()
        self._rng = random.Random(seed)
        self.tinyframe = protocol != "mr60fda1"
        self.settings: dict[str, float] = (
            {"mount_height": 2.6, "fall_threshold": 0.6, "sensitivity": 3.0, "zone_xl": -1.5,
             "zone_xr": 1.5, "zone_zf": 1.5, "zone_zb": -1.5}
            if self.tinyframe else {"fall_detection": 1.0, "fall_sensitivity": 3.0})
        self.commands: list[Mr60fda1Frame | TinyFrameFrame] = []  # every command received
        self.frames_sent = 0
        self.faulted = 0  # frames a fault was applied to
        self._codec = CODECS[protocol]()
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task | None = None
        self._last: RoomState | None = None
        self._last_state_at = -math.inf
        self._last_heartbeat_at = -math.inf
        self._state = model.state()

    @property
    def state(self) -> RoomState:
        """The room state last reported."""
        return self._state

    async def __aenter__(self) -> RadarSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open the serial port and start reporting; raises OSError if it cannot open."""
        if self._task is not None:
            return
        reader, self._writer = await serial_asyncio_fast.open_serial_connection(
            url=self.serial, baudrate=self.baudrate)
        self._task = asyncio.create_task(self._run(reader), name=f"radar-sim[{self.serial}]")

    async def stop(self) -> None:
        """Stop reporting and close the port."""
        task, self._task = self._task, None
        await cancel_and_wait([task])
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    async def _run(self, reader: asyncio.StreamReader) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._report_loop(), name=f"radar-sim[{self.serial}].reports")
            tg.create_task(self._command_loop(reader), name=f"radar-sim[{self.serial}].commands")

    # -- reports ------------------------------------------------------------------

    async def _report_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            self._state = state = self.model.state()
            frames = self.report_frames(state, now)
            if not self.faults.silence and frames:
                await self._write(self._apply_faults(frames))
            await asyncio.sleep(self.interval)

    def report_frames(self, state: RoomState, now: float) -> list[bytes]:
        """The frames of one burst (updates what was last reported)."""
        if self.settings.get("fall_detection", 1.0) == 0:
            state = _replace_fall(state, 0)
        send_state = (self._last is None or _state_fields(state) != _state_fields(self._last)
                      or now - self._last_state_at >= self.refresh)
        if send_state:
            self._last_state_at = now
        self._last = state
        out: list[bytes] = []
        if self.tinyframe:
            if send_state:
                out.append(tinyframe.encode_frame(0, tinyframe.PRESENCE, bytes((state.presence,))))
                out.append(tinyframe.encode_frame(0, tinyframe.FALL, bytes((state.fall,))))
            if state.target_height is not None:
                out.append(tinyframe.encode_frame(0, tinyframe.TARGET_HEIGHT,
                                                  _F32.pack(state.target_height)))
            return out
        if send_state:
            out += [mr60fda1.encode_frame(0x80, 0x01, bytes((state.presence,))),
                    mr60fda1.encode_frame(0x80, 0x02, bytes((state.motion,))),
                    mr60fda1.encode_frame(0x83, 0x01, bytes((state.fall,))),
                    mr60fda1.encode_frame(0x83, 0x05, bytes((state.stationary_dwell,)))]
        out.append(mr60fda1.encode_frame(0x80, 0x03, bytes((state.body_movement,))))
        if now - self._last_heartbeat_at >= self.heartbeat:
            self._last_heartbeat_at = now
            out.append(mr60fda1.encode_frame(0x01, 0x01, mr60fda1.QUERY_DATA))
        return out

    def _apply_faults(self, frames: list[bytes]) -> bytes:
        faults = self.faults
        out = bytearray()
        cut: bytes | None = None
        for frame in frames:
            self.frames_sent += 1
            # chosen at random (seeded): a fixed stride would hit the same report every burst
            if self._rng.random() * max(1, faults.every) >= 1.0:
                out += frame
                continue
            if faults.garbage:
                out += self._rng.randbytes(self._rng.randint(1, 12))
            if faults.truncated and cut is None:
                cut = frame[:-2]  # header complete, the rest missing
                self.faulted += 1
                continue
            if faults.bad_checksum:
                frame = bytearray(frame)
                at = -3 if not self.tinyframe else -1  # SUM / DATA_CK (HEAD_CK if no data)
                frame[at] = (frame[at] + 1) & 0xFF
            if faults.garbage or faults.bad_checksum:
                self.faulted += 1
            out += frame
        if cut is not None:
            out += cut
        return bytes(out)

    async def _write(self, data: bytes) -> None:
        writer = self._writer
        if writer is None:
            return
        writer.write(data)
        await writer.drain()

    # -- commands -----------------------------------------------------------------

    async def _command_loop(self, reader: asyncio.StreamReader) -> None:
        codec = self._codec
        while True:
            if codec.buffered:
                try:
                    async with asyncio.timeout(0.05):
                        data = await reader.read(4096)
                except TimeoutError:
                    data = None
            else:
                data = await reader.read(4096)
            if data == b"":
                log.warning("radar simulator: %s closed", self.serial)
                return
            for frame in codec.feed(data) if data is not None else codec.flush():
                self.commands.append(frame)
                replies = self.answer(frame)
                if replies:
                    await self._write(b"".join(replies))

    def answer(self, command: Mr60fda1Frame | TinyFrameFrame) -> list[bytes]:
        """The frames the radar sends back for a command (applying what it sets)."""
        if self.faults.deaf or self.faults.silence:
            return []  # a deaf radar does not take the setting either
        if isinstance(command, TinyFrameFrame):
            return self._answer_tinyframe(command)
        return self._answer_mr60fda1(command)

    def _answer_mr60fda1(self, f: Mr60fda1Frame) -> list[bytes]:
        data = f.data
        if (f.ctrl, f.cmd) == (0x83, 0x0D) and len(data) == 1:
            self.settings["fall_sensitivity"] = float(data[0])
            return [f.to_bytes()]  # the radar echoes what it stored
        if (f.ctrl, f.cmd) == (0x83, 0x00) and len(data) == 1 and data[0] <= 1:
            self.settings["fall_detection"] = float(data[0])
            return [f.to_bytes()]
        if (f.ctrl, f.cmd) == (0x01, 0x02) and data == mr60fda1.QUERY_DATA:
            return [f.to_bytes()]
        if not mr60fda1.is_query(f):
            return []
        if f.ctrl == 0x02 and f.cmd in _MR_INFO:
            return [mr60fda1.encode_frame(f.ctrl, f.cmd, _MR_INFO[f.cmd])]
        if (f.ctrl, f.cmd) == (0x01, 0x81):
            return [mr60fda1.encode_frame(f.ctrl, f.cmd, mr60fda1.QUERY_DATA)]
        value = self._mr60fda1_value(f.ctrl, f.cmd & ~mr60fda1.QUERY_BIT)
        if value is None:
            return []
        return [mr60fda1.encode_frame(f.ctrl, f.cmd, bytes((value,)))]

    def _mr60fda1_value(self, ctrl: int, cmd: int) -> int | None:
        s = self._state
        values = {
            (0x80, 0x01): s.presence, (0x80, 0x02): s.motion, (0x80, 0x03): s.body_movement,
            (0x83, 0x01): s.fall, (0x83, 0x05): s.stationary_dwell,
            (0x83, 0x00): int(self.settings["fall_detection"]),
            (0x83, 0x0D): int(self.settings["fall_sensitivity"]),
        }
        return values.get((ctrl, cmd))

    def _answer_tinyframe(self, f: TinyFrameFrame) -> list[bytes]:
        type_, data = f.type, f.data
        ack = tinyframe.encode_frame(f.frame_id, type_)
        if type_ == tinyframe.PARAMETERS and not data:
            s = self.settings
            params = struct.pack("<ffIffff", s["mount_height"], s["fall_threshold"],
                                 int(s["sensitivity"]), s["zone_xl"], s["zone_xr"],
                                 s["zone_zf"], s["zone_zb"])
            return [ack, tinyframe.encode_frame(f.frame_id, type_, params)]
        taken = self._take_tinyframe_setting(type_, data)
        if taken is None:
            return []
        status = TF_SET_OK if taken else TF_SET_REFUSED
        return [ack, tinyframe.encode_frame(f.frame_id, type_, bytes((status,)))]

    def _take_tinyframe_setting(self, type_: int, data: bytes) -> bool | None:
        """Store a set command's value: True taken, False refused, None not a set command."""
        if type_ in (tinyframe.SET_MOUNT_HEIGHT, tinyframe.SET_FALL_THRESHOLD) and len(data) == 4:
            (value,) = _F32.unpack(data)
            if type_ == tinyframe.SET_MOUNT_HEIGHT:
                low, high = _TF_HEIGHT_RANGE
                if not low <= value <= high:  # NaN refused too
                    return False
                self.settings["mount_height"] = value
            else:
                if not math.isfinite(value):
                    return False
                self.settings["fall_threshold"] = value
            return True
        if type_ == tinyframe.SET_SENSITIVITY and len(data) == 4:
            self.settings["sensitivity"] = float(_U32.unpack(data)[0])
            return True
        if type_ == tinyframe.SET_ALARM_ZONE and len(data) == _ZONE.size:
            zone = _ZONE.unpack(data)
            if not all(math.isfinite(v) for v in zone):
                return False
            self.settings.update(zip(("zone_xl", "zone_xr", "zone_zf", "zone_zb"), zone))
            return True
        return None

    def status_line(self) -> str:
        """One human-readable line: the room, the counters, the faults on."""
        s = self._state
        room = (f"presence {s.presence} motion {s.motion} movement {s.body_movement:3d} "
                f"fall {s.fall} dwell {s.stationary_dwell}")
        if self.tinyframe:
            height = "-" if s.target_height is None else f"{s.target_height:.2f}m"
            room = f"presence {s.presence} fall {s.fall} height {height}"
        faults = self.faults.active()
        return (f"{self.protocol} {self.model.scenario} t={self.model.elapsed:5.1f}s: {room} | "
                f"frames {self.frames_sent}, commands {len(self.commands)}"
                + (f" [faults: {', '.join(faults)}]" if faults else ""))


def _state_fields(s: RoomState) -> tuple[int, int, int, int]:
    return (s.presence, s.motion, s.fall, s.stationary_dwell)


def _replace_fall(s: RoomState, fall: int) -> RoomState:
    return RoomState(s.presence, s.motion, s.body_movement, fall, s.stationary_dwell,
                     s.target_height)


@contextlib.asynccontextmanager
async def radar_on_pty(*, protocol: str = "mr60fda1", scenario: str = "normal",
                       fall_after: float = 10.0, dwell_after: float = 10.0,
                       interval: float = 1.0, refresh: float = 5.0, heartbeat: float = 10.0,
                       faults: Faults | None = None, seed: int | None = None,
                       ) -> AsyncIterator[tuple[RadarSimulator, PtyPair]]:
    """A simulated radar on a fresh pty pair; the gateway opens ``pair.link_a``.

    For the demo and tests: ``async with radar_on_pty(scenario="fall") as (sim, pair)``.
    """
    model = RadarModel(scenario=scenario, fall_after=fall_after, dwell_after=dwell_after,
                       seed=seed)
    async with PtyPair() as pair, RadarSimulator(
            model, protocol=protocol, serial=pair.b, interval=interval, refresh=refresh,
            heartbeat=heartbeat, faults=faults, seed=seed) as sim:
        yield sim, pair


async def run_radar(*, protocol: str = "mr60fda1", scenario: str = "normal",
                    serial: str = "pty", baudrate: int = 115200, faults: Sequence[str] = (),
                    fall_after: float = 10.0, dwell_after: float = 10.0, interval: float = 1.0,
                    heartbeat: float = 10.0, vanish_every: float = 20.0, seed: int | None = None,
                    status_every: float = 3.0, stop_event: asyncio.Event | None = None,
                    out: Callable[[str], object] = functools.partial(print, flush=True)) -> None:
    """Run a simulated radar until ``stop_event`` is set (or until cancelled).

    ``serial`` is a device path, or ``"pty"`` to create a pty pair and print the
    side the gateway opens. ``faults`` are names from ``FAULTS``; ``vanish``
    (pty only) unplugs the gateway's side for a third of every ``vanish_every`` s.
    """
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        raise ValueError(f"unknown fault(s) {unknown}; known: {list(FAULTS)}")
    if "vanish" in faults and serial != "pty":
        raise ValueError("the 'vanish' fault unplugs a pty: use it with --serial pty")
    switches = Faults(**{name: True for name in faults if name != "vanish"})
    model = RadarModel(scenario=scenario, fall_after=fall_after, dwell_after=dwell_after,
                       seed=seed)
    stop = stop_event or asyncio.Event()  # never set: run until cancelled
    async with contextlib.AsyncExitStack() as stack:
        pair = None
        if serial == "pty":
            pair = await stack.enter_async_context(PtyPair())
            where = f"pty, gateway side {pair.link_a} ({pair.a})"
            serial = pair.b
        else:
            where = f"{serial} {baudrate} 8N1"
        sim = await stack.enter_async_context(RadarSimulator(
            model, protocol=protocol, serial=serial, baudrate=baudrate, interval=interval,
            heartbeat=heartbeat, faults=switches, seed=seed))
        about = SCENARIOS[scenario].replace("FALL_AFTER", f"{fall_after:g}").replace(
            "DWELL_AFTER", f"{dwell_after:g}")
        out(f"radar: {protocol}, scenario {scenario!r} ({about}); {where}"
            + (f"; faults: {', '.join(faults)}" if faults else ""))
        loop = asyncio.get_running_loop()
        next_vanish = loop.time() + vanish_every
        while not stop.is_set():
            if pair is not None and "vanish" in faults and loop.time() >= next_vanish:
                if pair.plugged:
                    pair.unplug()
                    out("radar: gateway side unplugged")
                    next_vanish = loop.time() + vanish_every / 3
                else:
                    pair.replug()
                    out(f"radar: gateway side plugged back in ({pair.a})")
                    next_vanish = loop.time() + vanish_every
            out(sim.status_line())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(status_every):
                    await stop.wait()
