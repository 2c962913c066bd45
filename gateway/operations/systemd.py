"""systemd's notify protocol, without a dependency: readiness, reloads, stops and the watchdog.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET`` (an AF_UNIX datagram
socket, ``@`` meaning the abstract namespace) and, with ``WatchdogSec=``,
``$WATCHDOG_USEC``. The gateway sends ``READY=1`` once it runs, ``RELOADING=1``
and ``READY=1`` around a config reload, ``STOPPING=1`` when it stops, and
``WATCHDOG=1`` at half the watchdog interval for as long as its pipeline and
device runners are alive. If the event loop hangs or the pipeline stalls the
pings stop, and systemd kills and restarts the service.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, MutableMapping

log = logging.getLogger(__name__)

# Without a watchdog the status line is still refreshed this often.
STATUS_EVERY = 10.0


class SystemdNotifier:
    """Sends state changes to systemd; does nothing when not started by systemd."""

    def __init__(self, *, address: str | None, watchdog_usec: int | None = None):
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._failed = False
        self.sent = 0

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None, *,
                         unset: bool = True) -> "SystemdNotifier":
        """Read ``$NOTIFY_SOCKET`` / ``$WATCHDOG_USEC``; unset them so child processes
        (simulators, tools) do not talk to systemd in the gateway's name."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        usec: int | None = None
        pid = env.get("WATCHDOG_PID")
        if pid is None or pid == str(os.getpid()):
            try:
                usec = int(env.get("WATCHDOG_USEC", "")) or None
            except ValueError:
                usec = None
        if unset:
            for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                env.pop(name, None)
        return cls(address=address, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        """Whether systemd listens."""
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of ``WatchdogSec``), or None without a watchdog."""
        return self.watchdog_usec / 2e6 if self.enabled and self.watchdog_usec else None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; False (logged once) if it cannot be sent."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(assignments).encode(), target)
        except OSError as exc:
            if not self._failed:
                log.warning("systemd notify socket %s: %s", self.address, exc)
            self._failed = True
            return False
        if self._failed:
            log.info("systemd notify socket %s works again", self.address)
        self._failed = False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        """The service is up (also ends a reload)."""
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        """A reload started; ``ready()`` ends it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        """The service is shutting down."""
        return self.notify("STOPPING=1")

    def close(self) -> None:
        """Release the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


async def keep_alive(notifier: SystemdNotifier, *, problem: Callable[[], str | None],
                     status: Callable[[], str]) -> None:
    """Ping the watchdog while ``problem()`` finds nothing wrong; refresh ``STATUS=``.

    ``problem`` returns None when the gateway is alive, else what is stuck; then
    the ping is withheld (logged once) so systemd restarts the service.
    """
    interval = notifier.watchdog_interval
    every = interval or STATUS_EVERY
    stuck: str | None = None
    first = True
    while True:
        if not first:
            await asyncio.sleep(every)
        first = False
        found = problem()
        if found is not None:
            if stuck is None:
                log.error("watchdog: %s; no longer telling systemd that the gateway is alive", found)
            stuck = found
            continue
        if stuck is not None:
            log.info("watchdog: alive again")
            stuck = None
        lines = [f"STATUS={status()}"]
        if interval is not None:
            lines.insert(0, "WATCHDOG=1")
        notifier.notify(*lines)
