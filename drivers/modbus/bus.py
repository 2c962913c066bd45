"""One Modbus connection (a TCP link or an RS-485 line) shared by every device on it.

The bus owns the pymodbus client, a lock so only one frame is on the line at a
time, and the configured quiet gap between frames. pymodbus exceptions are
wrapped into the gateway's driver errors here, where they leave the driver.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ExceptionResponse

from gateway.errors import DeviceException, DriverConnectError, DriverProtocolError, DriverTimeout

_READERS = {
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
    "holding": "read_holding_registers",
    "input": "read_input_registers",
}


class ModbusBus:
    """A shared Modbus line; ``read`` and ``write`` hold the line for one transaction."""

    def __init__(self, *, name: str, client: AsyncModbusTcpClient | AsyncModbusSerialClient,
                 frame_gap: float = 0.0):
        self.name = name
        self._client = client
        self._frame_gap = frame_gap
        # When the line has been quiet for the gap: the gap runs from the end of the last
        # transaction, so the caller's work on a reply (decoding, the next request's
        # planning) overlaps the silence instead of adding to it (issue 16.6).
        self._quiet_at = 0.0
        self._lock = asyncio.Lock()
        self.requests = 0

    @classmethod
    def tcp(cls, *, name: str, host: str, port: int, timeout: float, retries: int,
            frame_gap: float = 0.0) -> "ModbusBus":
        """A Modbus TCP connection (a device, or a TCP-to-RS-485 gateway)."""
        client = AsyncModbusTcpClient(host, port=port, timeout=timeout, retries=retries,
                                      reconnect_delay=0, name=name)
        return cls(name=name, client=client, frame_gap=frame_gap)

    @classmethod
    def rtu(cls, *, name: str, port: str, baudrate: int, parity: str, stopbits: int,
            bytesize: int, timeout: float, retries: int, frame_gap: float) -> "ModbusBus":
        """A Modbus RTU line on a serial port."""
        client = AsyncModbusSerialClient(port, baudrate=baudrate, parity=parity, stopbits=stopbits,
                                         bytesize=bytesize, timeout=timeout, retries=retries,
                                         reconnect_delay=0, name=name)
        return cls(name=name, client=client, frame_gap=frame_gap)

    async def _ensure_connected(self, device: str) -> None:
        if self._client.connected:
            return
        try:
            ok = await self._client.connect()
        except (OSError, ModbusException) as exc:
            raise DriverConnectError(device, f"bus {self.name}: cannot connect: {exc}") from exc
        if not ok:
            raise DriverConnectError(device, f"bus {self.name}: cannot connect")

    async def read(self, device: str, slave: int, table: str, address: int,
                   count: int) -> list[int] | list[bool]:
        """Read ``count`` registers or bits; raise a DriverError on any failure."""
        reply = await self._transact(device, slave, _READERS[table], address, count=count)
        values = reply.bits if table in ("coil", "discrete") else reply.registers
        if len(values) < count:
            raise DriverProtocolError(device, f"slave {slave} {table} {address}: "
                                              f"{len(values)} values for {count} asked")
        return values

    async def write_coil(self, device: str, slave: int, address: int, value: bool) -> None:
        """Set one coil."""
        await self._transact(device, slave, "write_coil", address, value)

    async def write_registers(self, device: str, slave: int, address: int,
                              words: list[int]) -> None:
        """Write holding registers (function 06 for one, 16 for several)."""
        if len(words) == 1:
            await self._transact(device, slave, "write_register", address, words[0])
        else:
            await self._transact(device, slave, "write_registers", address, words)

    async def _transact(self, device: str, slave: int, method: str, address: int,
                        *args: Any, **kwargs: Any) -> Any:
        async with self._lock:
            await self._ensure_connected(device)
            loop = asyncio.get_running_loop()
            if (wait := self._quiet_at - loop.time()) > 0:
                await asyncio.sleep(wait)
            self.requests += 1
            try:
                reply = await getattr(self._client, method)(address, *args, device_id=slave,
                                                            **kwargs)
            except ModbusIOException as exc:
                raise DriverTimeout(device, f"slave {slave} did not answer ({method} {address})") from exc
            except (ConnectionException, OSError) as exc:
                self._client.close()
                raise DriverConnectError(device, f"bus {self.name}: connection lost: {exc}") from exc
            except ModbusException as exc:
                raise DriverProtocolError(device, f"slave {slave}: {exc}") from exc
            finally:
                if self._frame_gap:
                    self._quiet_at = loop.time() + self._frame_gap
        if isinstance(reply, ExceptionResponse) or reply.isError():
            code = getattr(reply, "exception_code", None)
            raise DeviceException(device, f"slave {slave} {method} {address}: exception code {code}",
                                  code=code)
        return reply

    async def close(self) -> None:
        """Close the connection; the next transaction reconnects."""
        self._client.close()
