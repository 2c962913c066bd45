"""What the HTTP surfaces trust: which listeners are private, and who a client is.

A listener is *loopback* when its host is ``localhost`` or an address in
127.0.0.0/8 or ``::1``: nothing from another machine reaches it, so reads under
``/api/`` may be open there. Anything else (``0.0.0.0``, a LAN address, a host
name) can be reached from the network and needs the token for reads too.

``X-Forwarded-For`` is believed only from the reverse proxies listed in
``http.trusted_proxies``; from anyone else a client could name any address it
likes (and so dodge the per-address login throttle, or frame another guard).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network

from aiohttp import web

Network = IPv4Network | IPv6Network


def is_loopback_host(host: str) -> bool:
    """Whether a listener on ``host`` can only be reached from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # another host name: it may resolve to anything
        return False


def _is_trusted(address: str | None, trusted: Iterable[Network]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def client_address(request: web.Request, trusted: Iterable[Network]) -> str:
    """The address of the client: the TCP peer, or what a trusted proxy says it was.

    ``X-Forwarded-For`` is read right to left: each hop was appended by the proxy
    before it, so the first address that is not a trusted proxy is the client.
    """
    trusted = tuple(trusted)
    peer = request.remote or "unknown"
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    hops = [h.strip() for v in request.headers.getall("X-Forwarded-For", []) for h in v.split(",")]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a garbled header says nothing we can rely on
        if not _is_trusted(hop, trusted):
            return hop
    return peer
