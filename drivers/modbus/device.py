"""A Modbus device: polls its planned requests and writes its actuators."""

from __future__ import annotations

import logging
import struct

from drivers.modbus.bus import ModbusBus
from drivers.modbus.register_map import Point, RequestLimits, decode, encode
from drivers.modbus.request_plan import plan_reads
from gateway.clock import SystemClock
from gateway.errors import DriverError, DriverProtocolError
from gateway.readings import Reading

log = logging.getLogger(__name__)


class ModbusDevice:
    """Protocol side of one configured Modbus device (possibly several slaves)."""

    def __init__(self, *, device_id: str, bus: ModbusBus, points: list[Point],
                 limits: RequestLimits, clock=None):
        self.device_id = device_id
        self.bus = bus
        self.plan = plan_reads(points, limits)
        self._writable = {(p.channel, p.name): p for p in points if p.writable}
        self._clock = clock or SystemClock()
        self._failing: set[int] = set()  # slaves whose last read failed while others answered
        # this device's share of the bus's transactions (the bus counts all devices together)
        self.requests = 0
        self.request_errors = 0

    async def connect(self) -> None:
        """Nothing to do per device: the bus connects on first use."""

    async def poll(self) -> list[Reading]:
        """Read every planned request; one Reading per channel.

        Slaves that fail while others answer are skipped (logged once per change):
        one dead port meter must not blind the gateway to the cabinet's smoke
        detector. Only when every request fails does the poll fail.
        """
        by_channel: dict[int | None, dict[str, float]] = {}
        failed: set[int] = set()
        first_error: DriverError | None = None
        for req in self.plan:
            if req.slave in failed:
                continue
            self.requests += 1
            try:
                words = await self.bus.read(self.device_id, req.slave, req.table,
                                            req.address, req.count)
            except DriverError as exc:
                self.request_errors += 1
                failed.add(req.slave)
                first_error = first_error or exc
                continue
            for point, at in req.points:
                by_channel.setdefault(point.channel, {})[point.name] = decode(point, words, at)
        if not by_channel:
            assert first_error is not None
            raise first_error
        if failed != self._failing:
            if failed:
                log.error("%s: slave(s) %s not answering (%s); others ok", self.device_id,
                          sorted(failed), first_error)
            else:
                log.info("%s: all slaves answering again", self.device_id)
            self._failing = failed
        ts = self._clock.time()
        return [Reading(self.device_id, ch, values, ts) for ch, values in by_channel.items()]

    def counters(self) -> dict[str, int]:
        """Modbus transactions made for this device and how many of them failed."""
        return {"requests": self.requests, "request_errors": self.request_errors}

    @property
    def failing_slaves(self) -> frozenset[int]:
        """Slaves that did not answer at the last poll although others did."""
        return frozenset(self._failing)

    def writable(self) -> dict[tuple[int | None, str], Point]:
        """Points that can be written, by (channel, field)."""
        return dict(self._writable)

    async def write(self, channel: int | None, field: str, value: float) -> None:
        """Write one actuator (a port relay, a lock coil)."""
        point = self._writable.get((channel, field))
        if point is None:
            raise DriverProtocolError(self.device_id, f"no writable field {field!r} on channel {channel}")
        try:
            data = encode(point, value)
        except (struct.error, OverflowError, ValueError) as exc:
            # a value the register cannot hold: a failed actuation, not a crashed task
            raise DriverProtocolError(self.device_id, f"{field}={value!r} does not fit its "
                                                      f"{point.type} register: {exc}") from exc
        self.requests += 1
        try:
            if point.table == "coil":
                await self.bus.write_coil(self.device_id, point.slave, point.address, bool(data))
            else:
                await self.bus.write_registers(self.device_id, point.slave, point.address, data)  # type: ignore[arg-type]
        except DriverError:
            self.request_errors += 1
            raise

    async def read_back(self, channel: int | None, field: str) -> float:
        """Read one writable point again, to verify an actuation took."""
        point = self._writable[(channel, field)]
        self.requests += 1
        try:
            words = await self.bus.read(self.device_id, point.slave, point.table, point.address,
                                        point.width)
        except DriverError:
            self.request_errors += 1
            raise
        return decode(point, words, 0)

    async def close(self) -> None:
        """Devices share the bus; the runtime closes buses."""
