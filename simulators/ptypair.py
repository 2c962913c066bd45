"""A pair of linked pseudo-terminals, like ``socat pty,raw,echo=0 pty,raw,echo=0``.

Bytes written to one side's device path come out of the other's, so a serial
driver opens ``pair.a`` and a simulator opens ``pair.b`` as if a null-modem
cable joined two USB adapters. No threads: the relay runs on the event loop
with ``add_reader`` / ``add_writer`` on the two pty masters.

``unplug()`` makes side ``a`` vanish like a pulled USB adapter: its pty is
closed, so whoever has ``pair.a`` open gets an I/O error and the path stops
existing. ``replug()`` brings a fresh pty back. The kernel picks the new
``/dev/pts/N``, so **the path may change**; configure the program under test
with ``pair.link_a`` instead, a symlink in a private temp dir that is
re-pointed on replug, so it can reopen the same name (as with a udev
``/dev/serial/by-id`` link). Put the program whose unplug handling is under
test on side ``a``.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import tempfile
import tty

_CHUNK = 4096
_MAX_PENDING = 65536  # nobody reading a real serial line: old bytes are lost


class _Side:
    """One pty: the master fd we relay through and the slave path a program opens."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        # raw, no echo: a serial line carries binary frames, not a shell session
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.pending = bytearray()  # bytes for this side that the kernel refused for now

    def close(self) -> None:
        # The slave fd is held open by us so the master never reads EIO while no
        # program has the path open; closing both makes the device disappear.
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class PtyPair:
    """Two raw ptys relayed into each other; use as ``async with PtyPair() as pair``."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._a: _Side | None = None
        self._b: _Side | None = None
        self._dir: str | None = None

    @property
    def a(self) -> str:
        """Current device path of side a (changes on replug; see ``link_a``)."""
        if self._a is None:
            raise RuntimeError("side a is unplugged")
        return self._a.path

    @property
    def b(self) -> str:
        """Device path of side b."""
        if self._b is None:
            raise RuntimeError("pair is not open")
        return self._b.path

    @property
    def link_a(self) -> str:
        """Stable symlink to side a; dangling while unplugged, re-pointed on replug."""
        if self._dir is None:
            raise RuntimeError("pair is not open")
        return os.path.join(self._dir, "a")

    @property
    def link_b(self) -> str:
        """Stable symlink to side b."""
        if self._dir is None:
            raise RuntimeError("pair is not open")
        return os.path.join(self._dir, "b")

    @property
    def plugged(self) -> bool:
        """Whether side a currently exists."""
        return self._a is not None

    async def __aenter__(self) -> PtyPair:
        self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        """Create both ptys and start relaying (needs a running event loop)."""
        self._loop = asyncio.get_running_loop()
        self._dir = tempfile.mkdtemp(prefix="ptypair-")
        self._b = _Side()
        self._watch(self._b)
        self._link(self.link_b, self._b.path)
        self.replug()

    def close(self) -> None:
        """Stop relaying, close both ptys and remove the symlinks."""
        self.unplug()
        if self._b is not None:
            self._unwatch(self._b)
            self._b.close()
            self._b = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def unplug(self) -> None:
        """Make side a vanish: its users get I/O errors, bytes from b are dropped."""
        if self._a is None:
            return
        self._unwatch(self._a)
        self._a.close()
        self._a = None

    def replug(self) -> None:
        """Bring side a back as a fresh pty (new path) and re-point ``link_a``."""
        if self._a is not None:
            return
        if self._b is not None:
            self._drain(self._b)
        self._a = _Side()
        self._watch(self._a)
        self._link(self.link_a, self._a.path)

    # ----------------------------------------------------------------- relay

    def _other(self, side: _Side) -> _Side | None:
        return self._b if side is self._a else self._a

    def _watch(self, side: _Side) -> None:
        assert self._loop is not None
        self._loop.add_reader(side.master, self._on_readable, side)

    def _unwatch(self, side: _Side) -> None:
        assert self._loop is not None
        self._loop.remove_reader(side.master)
        self._loop.remove_writer(side.master)

    def _on_readable(self, side: _Side) -> None:
        try:
            data = os.read(side.master, _CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            return  # transient: the pty is between users
        other = self._other(side)
        if other is None or not data:
            return  # like a cable to nowhere: the bytes are lost
        other.pending += data
        del other.pending[:-_MAX_PENDING]
        self._flush(other)

    def _flush(self, side: _Side) -> None:
        assert self._loop is not None
        try:
            written = os.write(side.master, side.pending)
        except BlockingIOError:
            written = 0
        del side.pending[:written]
        if side.pending:
            self._loop.add_writer(side.master, self._flush, side)
        else:
            self._loop.remove_writer(side.master)

    @staticmethod
    def _drain(side: _Side) -> None:
        # Bytes b sent while a was unplugged may still sit in the kernel; they
        # went nowhere on a real line, so they must not reach the new pty.
        while True:
            try:
                if not os.read(side.master, _CHUNK):
                    return
            except OSError:  # BlockingIOError: nothing left
                return

    @staticmethod
    def _link(link: str, target: str) -> None:
        # symlink-then-rename so a reader never sees the name missing mid-update
        tmp = link + ".new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, link)


async def _main() -> None:
    async with PtyPair() as pair:
        print(f"a: {pair.a} (stable: {pair.link_a})\nb: {pair.b} (stable: {pair.link_b})")
        print("relaying; Ctrl-C to stop", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(_main())
    except KeyboardInterrupt:
        pass
