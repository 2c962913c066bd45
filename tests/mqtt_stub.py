"""A scripted MQTT 3.1.1 broker on 127.0.0.1, for the faults a real Mosquitto cannot be made
to show on demand: a broker that takes a packet and never answers it (CONNECT, SUBSCRIBE, a
QoS 1 PUBLISH), and one that writes a PUBACK and the message it acknowledges in one write,
so the client reads both in one wakeup (the moment a stop used to be lost, see
tests/test_hub_link_stop.py).

It speaks just enough of the protocol for aiomqtt/paho: CONNECT, SUBSCRIBE (every
subscription granted as asked), PUBLISH (a message on a topic the same connection
subscribed to exactly is echoed back to it, at QoS 0), PINGREQ and DISCONNECT.
"""

from __future__ import annotations

import asyncio
import struct

CONNECT, PUBLISH, SUBSCRIBE, PINGREQ, DISCONNECT = 1, 3, 8, 12, 14


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(data: bytes, pos: int) -> tuple[str, int]:
    (size,) = struct.unpack_from("!H", data, pos)
    return data[pos + 2:pos + 2 + size].decode(), pos + 2 + size


class StubBroker:
    """``silent``: packet types (CONNECT, SUBSCRIBE, PUBLISH, PINGREQ) taken and never
    answered, from connection number ``silent_from`` on (1 = the first). ``received``: every
    packet type taken, per connection, in order."""

    def __init__(self, *, silent: frozenset[int] = frozenset(), silent_from: int = 1):
        self.silent = silent
        self.silent_from = silent_from
        self.port = 0
        self.received: list[list[int]] = []
        self.packet_arrived = asyncio.Event()  # set at every packet taken
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> "StubBroker":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def wait_for(self, packet_type: int, connection: int = 1) -> None:
        """Until connection number ``connection`` has sent a packet of this type."""
        while not (len(self.received) >= connection and
                   packet_type in self.received[connection - 1]):
            self.packet_arrived.clear()
            await self.packet_arrived.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.received.append([])
        seen = self.received[-1]
        number = len(self.received)
        exact: set[str] = set()  # topics this connection subscribed to, without wildcards
        try:
            while True:
                header = await reader.readexactly(1)
                length, shift = 0, 0
                while True:
                    (byte,) = await reader.readexactly(1)
                    length += (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                body = await reader.readexactly(length)
                kind, flags = header[0] >> 4, header[0] & 0x0F
                seen.append(kind)
                self.packet_arrived.set()
                if kind == DISCONNECT:
                    return
                if kind in self.silent and number >= self.silent_from:
                    continue
                writer.write(self._answer(kind, flags, body, exact))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    @staticmethod
    def _answer(kind: int, flags: int, body: bytes, exact: set[str]) -> bytes:
        if kind == CONNECT:
            return b"\x20\x02\x00\x00"
        if kind == PINGREQ:
            return b"\xd0\x00"
        if kind == SUBSCRIBE:
            pos, granted = 2, bytearray()
            while pos < len(body):
                topic, pos = _utf8(body, pos)
                granted.append(body[pos])
                pos += 1
                if "+" not in topic and "#" not in topic:
                    exact.add(topic)
            return b"\x90" + _remaining_length(2 + len(granted)) + body[:2] + bytes(granted)
        if kind == PUBLISH:
            qos = (flags >> 1) & 3
            topic, pos = _utf8(body, 0)
            out = b""
            if qos:
                out += b"\x40\x02" + body[pos:pos + 2]  # PUBACK
                pos += 2
            if topic in exact:  # the echo, in the same write as the PUBACK
                echo = struct.pack("!H", len(topic.encode())) + topic.encode() + body[pos:]
                out += b"\x30" + _remaining_length(len(echo)) + echo
            return out
        return b""
