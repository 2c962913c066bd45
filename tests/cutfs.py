"""A FUSE filesystem that loses what was not fsynced, for power-cut tests.

    python tests/cutfs.py BACKING MOUNTPOINT      # serves until killed

Files live in this process's memory. What an ``fsync`` made durable is copied to
the BACKING folder (on the real disk), and so are the directory changes a
journaling filesystem commits on its own (mkdir, rename, unlink). Killing this
process is the power cut: whatever was written and not yet fsynced is gone, like a
page cache that never reached the SD card. Mount it again on the same BACKING and
the files are as the last fsyncs left them:

- a file created and never fsynced is not there;
- a file written and not fsynced since has its content as of its last fsync
  (its length too);
- a rename moves the *durable* content: renaming a file whose new content was not
  fsynced first leaves the old content (or an empty file) under the new name, the
  classic way to lose a config or state file in a power cut.

Reads are served from memory, so a running process sees its own writes as on a
real disk. Locks (SQLite's POSIX locks, flock) are the kernel's; shared memory
maps (SQLite's -shm) work, and the -shm, never fsynced, goes in the cut, as on a
real power cut. Stdlib and ``mfusepy`` (ctypes over libfuse 3, Debian ``fuse3``).
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading
import time

import mfusepy as fuse


class Node:
    __slots__ = ("mode", "data", "lo", "hi", "mtime", "durable")

    def __init__(self, mode: int, data: bytes = b"", durable: bool = False):
        self.mode = mode
        self.data = bytearray(data)
        self.lo, self.hi = len(data), 0  # the range written since the last fsync
        self.mtime = time.time()
        self.durable = durable  # whether the backing folder holds it (entry at least)


class CutFS(fuse.Operations):
    use_ns = True

    def __init__(self, backing: str):
        self.backing = os.path.abspath(backing)
        self._mutex = threading.Lock()
        self.nodes: dict[str, Node] = {"/": Node(stat.S_IFDIR | 0o755, durable=True)}
        for root, dirs, files in os.walk(self.backing):
            rel = "/" + os.path.relpath(root, self.backing).removeprefix(".").lstrip("/")
            for d in dirs:
                self.nodes[os.path.join(rel, d)] = Node(stat.S_IFDIR | 0o755, durable=True)
            for f in files:
                with open(os.path.join(root, f), "rb") as fh:
                    self.nodes[os.path.join(rel, f)] = Node(stat.S_IFREG | 0o644, fh.read(), True)
        self.fsyncs = 0

    # -- helpers ---------------------------------------------------------------------------

    def _node(self, path: str) -> Node:
        node = self.nodes.get(path)
        if node is None:
            raise fuse.FuseOSError(errno.ENOENT)
        return node

    def _real(self, path: str) -> str:
        return self.backing + path

    def _persist(self, path: str, node: Node) -> None:
        """Make ``node``'s current content durable (an fsync)."""
        real = self._real(path)
        fd = os.open(real, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            if not node.durable:
                node.lo, node.hi = 0, len(node.data)
            if node.hi > node.lo:
                os.pwrite(fd, bytes(node.data[node.lo:node.hi]), node.lo)
            os.ftruncate(fd, len(node.data))
        finally:
            os.close(fd)
        node.lo, node.hi = len(node.data), 0
        node.durable = True
        self.fsyncs += 1

    # -- the operations ----------------------------------------------------------------------

    def getattr(self, path, fh=None):
        with self._mutex:
            node = self._node(path)
            t = int(node.mtime * 1e9)
            return {"st_mode": node.mode, "st_nlink": 2 if stat.S_ISDIR(node.mode) else 1,
                    "st_size": len(node.data), "st_uid": os.getuid(), "st_gid": os.getgid(),
                    "st_atime": t, "st_mtime": t, "st_ctime": t}

    def readdir(self, path, fh):
        with self._mutex:
            prefix = path.rstrip("/") + "/"
            names = [p[len(prefix):] for p in self.nodes
                     if p != "/" and p.startswith(prefix) and "/" not in p[len(prefix):]]
        return [".", "..", *names]

    def mkdir(self, path, mode):
        with self._mutex:
            if path in self.nodes:
                raise fuse.FuseOSError(errno.EEXIST)
            os.makedirs(self._real(path), exist_ok=True)  # a journaled mkdir: durable
            self.nodes[path] = Node(stat.S_IFDIR | mode, durable=True)
        return 0

    def rmdir(self, path):
        with self._mutex:
            if any(p.startswith(path + "/") for p in self.nodes):
                raise fuse.FuseOSError(errno.ENOTEMPTY)
            self._node(path)
            del self.nodes[path]
            try:
                os.rmdir(self._real(path))
            except FileNotFoundError:
                pass
        return 0

    def create(self, path, mode, fi=None):
        with self._mutex:
            self.nodes[path] = Node(stat.S_IFREG | (mode & 0o7777))
        return 0

    def open(self, path, flags):
        with self._mutex:
            node = self._node(path)
            if flags & os.O_TRUNC:
                self._truncate(node, 0)
        return 0

    def read(self, path, size, offset, fh):
        with self._mutex:
            return bytes(self._node(path).data[offset:offset + size])

    def write(self, path, data, offset, fh):
        with self._mutex:
            node = self._node(path)
            end = offset + len(data)
            if end > len(node.data):
                node.data.extend(bytes(end - len(node.data)))
            node.data[offset:end] = data
            node.lo, node.hi = min(node.lo, offset), max(node.hi, end)
            node.mtime = time.time()
        return len(data)

    def _truncate(self, node: Node, length: int) -> None:
        if length < len(node.data):
            del node.data[length:]
        else:
            node.data.extend(bytes(length - len(node.data)))
        node.lo = min(node.lo, length)
        node.hi = min(max(node.hi, length), len(node.data))
        node.mtime = time.time()

    def truncate(self, path, length, fh=None):
        with self._mutex:
            self._truncate(self._node(path), length)
        return 0

    def fallocate(self, path, mode, offset, length, fh):
        with self._mutex:
            node = self._node(path)
            if mode == 0 and offset + length > len(node.data):
                self._truncate(node, offset + length)
        return 0

    def unlink(self, path):
        with self._mutex:
            node = self._node(path)
            del self.nodes[path]
            if node.durable:
                try:
                    os.unlink(self._real(path))
                except FileNotFoundError:
                    pass
        return 0

    def rename(self, old, new):
        with self._mutex:
            node = self._node(old)
            if stat.S_ISDIR(node.mode):
                raise fuse.FuseOSError(errno.EXDEV)  # not needed by the gateway
            target = self.nodes.get(new)
            if target is not None and target.durable and not node.durable:
                os.unlink(self._real(new))
            if node.durable:
                os.replace(self._real(old), self._real(new))
            else:  # the entry is journaled: an empty file under the new name
                open(self._real(new), "wb").close()
                node.durable = True
                node.lo, node.hi = 0, len(node.data)
            self.nodes[new] = self.nodes.pop(old)
        return 0

    def fsync(self, path, datasync, fh):
        with self._mutex:
            self._persist(path, self._node(path))
        return 0

    def fsyncdir(self, path, datasync, fh):
        return 0  # every entry change that lasts is already durable

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        return 0

    def chmod(self, path, mode):
        with self._mutex:
            node = self._node(path)
            node.mode = (node.mode & ~0o7777) | (mode & 0o7777)
        return 0

    def chown(self, path, uid, gid):
        return 0

    def utimens(self, path, times=None):
        with self._mutex:
            self._node(path).mtime = time.time()
        return 0

    def statfs(self, path):
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 1 << 20, "f_bfree": 1 << 19,
                "f_bavail": 1 << 19, "f_files": 1 << 16, "f_ffree": 1 << 15, "f_namemax": 255}


class CutMount:
    """A CutFS process serving ``backing`` at ``mountpoint``.

    ``mount()`` starts it and returns once the mount answers; ``cut()`` is the power
    cut (the process is killed, what was not fsynced is gone) and leaves nothing
    mounted; ``mount()`` again brings back what the fsyncs left.
    """

    def __init__(self, backing: str | os.PathLike, mountpoint: str | os.PathLike):
        self.backing = os.fspath(backing)
        self.mountpoint = os.fspath(mountpoint)
        self.log = os.path.join(os.path.dirname(self.backing.rstrip("/")) or ".", "cutfs.log")
        self._proc = None

    def mount(self, timeout: float = 10.0) -> None:
        import subprocess

        os.makedirs(self.backing, exist_ok=True)
        os.makedirs(self.mountpoint, exist_ok=True)
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen([sys.executable, os.path.abspath(__file__),
                                           self.backing, self.mountpoint],
                                          stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.mountpoint):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.cut()
                with open(self.log, "rb") as log:
                    tail = log.read()[-2000:].decode(errors="replace")
                raise RuntimeError(f"cutfs did not mount {self.mountpoint}: {tail}")
            time.sleep(0.02)

    def cut(self) -> None:
        """Power off: kill the filesystem (unsynced writes go with it), unmount."""
        import shutil
        import subprocess

        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
        if os.path.ismount(self.mountpoint) or _stale(self.mountpoint):
            tool = shutil.which("fusermount3")
            cmd = [tool, "-u", "-z", self.mountpoint] if tool else ["umount", "-l", self.mountpoint]
            subprocess.run(cmd, check=False, capture_output=True)

    def __enter__(self) -> "CutMount":
        self.mount()
        return self

    def __exit__(self, *exc) -> None:
        self.cut()


def _stale(path: str) -> bool:
    try:
        os.stat(path)
    except OSError as exc:  # ENOTCONN: a FUSE mount whose process is gone
        return exc.errno == errno.ENOTCONN
    return False


def main() -> None:
    backing, mountpoint = sys.argv[1], sys.argv[2]
    os.makedirs(backing, exist_ok=True)
    fuse.FUSE(CutFS(backing), mountpoint, foreground=True, nothreads=True)


if __name__ == "__main__":
    main()
