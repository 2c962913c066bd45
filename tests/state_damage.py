"""Real damage to real SQLite files, and a real full disk, for the state-file tests."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def page_size(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as con:
        return con.execute("PRAGMA page_size").fetchone()[0]


def garbage_pages(path: Path, first: int, last: int, *, seed: int = 7) -> None:
    """Overwrite pages ``first..last`` (1 = the header page) with random bytes."""
    size = page_size(path)
    rng = random.Random(seed)
    with open(path, "r+b") as f:
        for page in range(first, last + 1):
            f.seek((page - 1) * size)
            f.write(rng.randbytes(size))


def pages(path: Path) -> int:
    return path.stat().st_size // page_size(path)


def damage(path: Path, how: str) -> None:
    """``garbage``: pages in the middle overwritten; ``truncated``: the second half cut
    off; ``not-sqlite``: a file that was never a database."""
    if how == "garbage":
        n = pages(path)
        garbage_pages(path, n // 3, n // 3 + max(2, n // 10))
    elif how == "truncated":
        os.truncate(path, path.stat().st_size // 2)
    elif how == "not-sqlite":
        path.write_bytes(b"PK\x03\x04 this was a zip, or a log, or half a copy\n" * 200)
    else:
        raise ValueError(how)


@contextlib.contextmanager
def tiny_disk(where: Path, size_kb: int = 512) -> Iterator[Path]:
    """A tmpfs of ``size_kb`` mounted at ``where`` (root only; skipped elsewhere)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full disk needs a tmpfs mount (root)")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write a filler file until the disk is full; return it (delete it to make room)."""
    filler = disk / "filler"
    with open(filler, "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return filler
