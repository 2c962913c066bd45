"""Who an HTTP client is, as far as the gateway can tell.

(Which listeners are private is ``gateway.config.advice.is_loopback``: 127.0.0.0/8,
``::1`` and ``localhost``; on any other, ``/api/`` reads need the token too.)

``X-Forwarded-For`` is believed only from the reverse proxies listed in
``http.trusted_proxies``; from anyone else a client could name any address it
likes (and so dodge the per-address login throttle, or frame another guard).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.operations.http_app import Request

Network = IPv4Network | IPv6Network


def _is_trusted(address: str | None, trusted: Iterable[Network]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def client_address(request: Request, trusted: Iterable[Network]) -> str:
    """The address of the client: the TCP peer, or what a trusted proxy says it was.

    ``X-Forwarded-For`` is read right to left: each hop was appended by the proxy
    before it, so the first address that is not a trusted proxy is the client.
    (Of several ``X-Forwarded-For`` lines the server keeps the last: the one the
    nearest proxy added; the hops a client wrote itself are further left anyway.)
    """
    trusted = tuple(trusted)
    peer = request.remote or "unknown"
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a garbled header says nothing we can rely on
        if not _is_trusted(hop, trusted):
            return hop
    return peer
