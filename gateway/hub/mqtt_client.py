"""The hub's MQTT client: aiomqtt, with the two costs that bound a hub's ingest taken out.

A hub takes thousands of messages a second from hundreds of gateways. Stock
aiomqtt 2.x on paho 2.x spends most of its time per message in plumbing, not in
the hub: paho's ``loop_read`` reads one packet per socket wakeup (its
``max_packets`` is replaced by the number of QoS 2 messages in flight) with
three or more ``recv`` calls per packet (type byte, length bytes one at a time,
body), and aiomqtt then wraps each message in its own ``Message``, queues it and
hands it to the iterator through a new task and an ``asyncio.wait`` per message.
(bench/hub.py measured ~220 us of hub CPU per alarm transition, two messages,
most of it there.)

``FastIngestClient`` changes only how bytes come in and where messages go:

- paho's socket reads are served from a buffer filled by ``recv`` calls of up to
  ``READ_SIZE`` bytes in all per wakeup (one call on a plain socket; a TLS socket
  gives one 16 KiB record per call), and every whole packet in it is handled in
  the same wakeup (a budget, not "until the socket is empty": gateways that keep
  publishing must not keep the hub's other tasks, PUBACKs included, waiting);
- each message goes straight to ``on_message(topic, payload)`` from paho's
  callback, before paho answers its PUBACK (so a QoS 1 event is acknowledged
  only once the hub has taken it). ``client.messages`` stays empty; awaiting it
  still raises ``MqttError`` when the connection drops, which is how the hub
  waits for a disconnection.

It is a ``gateway.mqtt_client.StopSafeClient``: its waits for the broker's answers
never lose a stop (a hub stopped just as the PUBACK of its sync marker came used to
carry on and wait for ever).

Everything else (connect, TLS, subscribe, publish, keepalive, disconnect) is
aiomqtt's and paho's own code. The overrides touch aiomqtt's documented
callbacks plus paho's ``_sock_recv``; tests/test_hub_mqtt_client.py and
tests/test_hub_link_stop.py pin the behaviour against a real Mosquitto and a
scripted broker, so a library upgrade that breaks them fails there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.mqtt_client import StopSafeClient

READ_SIZE = 256 * 1024  # per recv: a few hundred alarm messages, well under a socket buffer


class FastIngestClient(StopSafeClient):
    """aiomqtt.Client that reads many packets per wakeup and calls ``on_message`` directly.

    ``on_message`` runs inside paho's read loop: it must not raise (paho would re-raise and
    the connection would drop) and must not block."""

    def __init__(self, *args: Any, on_message: Callable[[str, bytes], None], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._deliver = on_message
        self._rbuf = b""  # bytes read from the socket that paho has not asked for yet
        self._rpos = 0
        # Bytes this wakeup may still read from the socket: a busy socket cannot starve the loop.
        self._budget = READ_SIZE
        paho = self._client
        plain_recv = paho._sock_recv  # keeps paho's handling of TLS want-read/want-write

        def buffered_recv(bufsize: int) -> bytes:
            if self._rpos >= len(self._rbuf):
                if self._budget <= 0:
                    # this wakeup's reading is used up; paho keeps a partial packet and the
                    # (level-triggered) reader wakes again for the rest, after other tasks ran
                    raise BlockingIOError
                # one TLS record (16 KiB) at most per recv on TLS; up to the budget otherwise
                self._rbuf = plain_recv(max(bufsize, self._budget))  # BlockingIOError: nothing
                self._rpos = 0
                self._budget -= max(len(self._rbuf), 1)
            start = self._rpos
            self._rpos = end = min(start + bufsize, len(self._rbuf))
            return self._rbuf[start:end]

        paho._sock_recv = buffered_recv  # instance attribute: this connection only

    def buffered(self) -> int:
        """Bytes read from the socket and not yet handled."""
        return len(self._rbuf) - self._rpos

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        # paho's MQTTMessage holds the topic as bytes; no aiomqtt Message, no queue.
        self._deliver(message._topic.decode("utf-8", "replace"), message.payload)

    def _on_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        super()._on_socket_open(client, userdata, sock)
        loop, fileno = self._loop, sock.fileno()

        def read() -> None:
            # Every whole packet already read is handled now: the socket will not wake us
            # for bytes that are in our buffer, only for new ones.
            self._budget = READ_SIZE
            try:
                while True:
                    rc = client.loop_read()
                    if rc != 0 or client._sock is None:
                        break
                    if self.buffered():
                        continue
                    pending = getattr(client._sock, "pending", None)  # TLS: decrypted, unread
                    if pending is not None and pending() > 0:
                        # decrypted bytes the socket will not wake us for: take them now
                        self._budget = max(self._budget, pending())
                        continue
                    break
            except Exception as exc:  # as aiomqtt's own reader: the connection is broken
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        # aiomqtt's _on_socket_open registers its reader with call_soon_threadsafe (paho
        # may call it from the connect thread); ours replaces it in the same order.
        loop.call_soon_threadsafe(loop.add_reader, fileno, read)

