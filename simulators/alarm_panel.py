"""A simulated alarm panel reporting to a SIA DC-09 receiver (the gateway) over TCP.

It keeps one TCP connection to the receiver, sends a ``NULL`` heartbeat every
``heartbeat_s`` and Contact ID events (``ADM-CID``) as its scenario says, waits for
each answer and sends a frame again, with the same sequence number, after a ``NAK``
or no answer, as panels do. It reconnects when the receiver goes away.

Scenarios (zones and codes as shared/devices.md section 6):
``normal`` heartbeats only; ``one-key`` a resident's emergency button (1120, zone 5);
``night-intrusion`` a fence zone (1130, zone 3) and its restore 10 s later;
``fire`` a smoke detector (1110, zone 12); ``tamper`` a detector's cover (1137, zone 7);
``mains-loss`` mains lost (1301) and back (3301) 20 s later; ``idle`` drive
``send_event()`` from code.
Faults: ``silent`` (nothing at all: the panel looks dead), ``bad-crc`` (each event is
first sent with a broken CRC, then correctly), ``garbage`` (random bytes before
each frame).

By hand: ``community-gateway simulate alarm-panel --receiver 127.0.0.1:9000 --account 1234
--scenario one-key``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from datetime import datetime, timezone

from drivers.sia_dc09.frame import encode_frame, message_body, parse_frame, FrameError
from simulators.background import cancel_and_wait

log = logging.getLogger(__name__)

SCENARIOS: dict[str, str] = {
    "normal": "heartbeats only",
    "one-key": "a resident's one-key emergency button (1120, zone 5)",
    "night-intrusion": "fence zone 3 broken (1130), restored 10 s later",
    "fire": "smoke detector in zone 12 (1110)",
    "tamper": "detector cover opened in zone 7 (1137)",
    "mains-loss": "mains power lost (1301), back 20 s later (3301)",
    "idle": "heartbeats only (drive send_event() from code)",
}
FAULTS = ("silent", "bad-crc", "garbage")

#: scenario -> [(seconds after the incident time, qualifier, code, zone)]
_STEPS: dict[str, list[tuple[float, int, str, int]]] = {
    "one-key": [(0, 1, "120", 5)],
    "night-intrusion": [(0, 1, "130", 3), (10, 3, "130", 3)],
    "fire": [(0, 1, "110", 12)],
    "tamper": [(0, 1, "137", 7)],
    "mains-loss": [(0, 1, "301", 0), (20, 3, "301", 0)],
}
ANSWER_TIMEOUT = 5.0
TRIES = 5


class AlarmPanelSimulator:
    """``async with AlarmPanelSimulator(receiver=("127.0.0.1", port), account="1234") as p:``."""

    def __init__(self, *, receiver: tuple[str, int], account: str = "1234", line: str = "1",
                 scenario: str = "idle", incident_after: float = 10.0, heartbeat_s: float = 30.0,
                 fault: str | None = None, out: Callable[[str], object] | None = None):
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; scenarios: {sorted(SCENARIOS)}")
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; faults: {list(FAULTS)}")
        self.receiver = receiver
        self.account = account
        self.line = line
        self.scenario = scenario
        self.incident_after = incident_after
        self.heartbeat_s = heartbeat_s
        self.fault = fault
        self._out = out
        self._sequence = 0
        self._lock = asyncio.Lock()
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._tasks: list[asyncio.Task] = []
        self.answers: list[str] = []  # "ACK", "NAK", "DUH" as received, for tests

    async def __aenter__(self) -> "AlarmPanelSimulator":
        self._tasks = [asyncio.create_task(self._heartbeats(),
                                           name=f"sim-panel[{self.account}].heartbeat")]
        if self.scenario in _STEPS:
            self._tasks.append(asyncio.create_task(self._incident(),
                                                   name=f"sim-panel[{self.account}].scenario"))
        return self

    async def __aexit__(self, *exc) -> None:
        await cancel_and_wait(self._tasks)
        self._disconnect()

    async def send_event(self, qualifier: int, code: str, zone: int, group: int = 1) -> str:
        """Send one Contact ID event; the receiver's final answer (``ACK`` on success)."""
        data = f"#{self.account}|{qualifier}{code} {group:02d} {zone:03d}"
        return await self._send("ADM-CID", data)

    async def heartbeat(self) -> str:
        """Send one ``NULL`` supervision frame."""
        return await self._send("NULL", "")

    async def _heartbeats(self) -> None:
        while True:
            if self.fault != "silent":
                with contextlib.suppress(OSError):
                    await self.heartbeat()
            await asyncio.sleep(self.heartbeat_s)

    async def _incident(self) -> None:
        await asyncio.sleep(self.incident_after)
        start = asyncio.get_running_loop().time()
        for at, qualifier, code, zone in _STEPS[self.scenario]:
            await asyncio.sleep(max(0.0, start + at - asyncio.get_running_loop().time()))
            if self.fault == "silent":
                continue
            answer = await self.send_event(qualifier, code, zone)
            self._say(f"panel {self.account}: sent {qualifier}{code} zone {zone}: {answer}")

    async def _send(self, message_id: str, data: str) -> str:
        async with self._lock:
            if message_id != "NULL":
                self._sequence = self._sequence % 9999 + 1
            sequence = self._sequence if message_id != "NULL" else 0
            body = message_body(message_id, sequence, line=self.line, account=self.account,
                                data=data, when=datetime.now(timezone.utc))
            frame = encode_frame(body)
            last = "no answer"
            for attempt in range(TRIES):
                wire = frame
                if self.fault == "bad-crc" and attempt == 0 and message_id != "NULL":
                    wire = b"\n0000" + frame[5:]  # a broken CRC, then the real frame
                if self.fault == "garbage":
                    wire = os.urandom(8).replace(b"\r", b"") + b"\r" + wire
                try:
                    last = await self._exchange(wire)
                except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                    self._disconnect()
                    last = f"no answer ({exc.__class__.__name__})"
                    await asyncio.sleep(min(0.2 * 2 ** attempt, 2.0))
                    continue
                if last == "ACK":
                    return last
            return last

    async def _exchange(self, wire: bytes) -> str:
        if self._conn is None:
            self._conn = await asyncio.open_connection(*self.receiver)
        reader, writer = self._conn
        writer.write(wire)
        await writer.drain()
        # One answer per CR sent (garbage before a frame is answered too); the last
        # one is the answer to the frame.
        answer = "no answer"
        async with asyncio.timeout(ANSWER_TIMEOUT):
            for _ in range(wire.count(b"\r")):
                raw = await reader.readuntil(b"\r")
                try:
                    answer = parse_frame(raw).message_id
                except FrameError:
                    answer = "unreadable answer"
                self.answers.append(answer)
        return answer

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None

    def _say(self, line: str) -> None:
        if self._out is not None:
            self._out(line)
        else:
            log.info("%s", line)


async def run_panel(*, receiver: str, account: str, scenario: str, incident_after: float,
                    heartbeat_s: float, fault: str | None) -> None:
    """``simulate alarm-panel``: run until cancelled, printing what is sent."""
    host, _, port = receiver.rpartition(":")
    async with AlarmPanelSimulator(receiver=(host or "127.0.0.1", int(port)), account=account,
                                   scenario=scenario, incident_after=incident_after,
                                   heartbeat_s=heartbeat_s, fault=fault, out=print):
        print(f"alarm panel {account} reporting to {receiver} (scenario {scenario})", flush=True)
        await asyncio.Event().wait()
