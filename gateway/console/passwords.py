"""Password hashes for console operators: scrypt from the standard library.

A hash is stored as ``scrypt$N$r$p$salt$key`` (salt and key in unpadded
base64), so the cost can be raised later without breaking existing entries.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import secrets
from concurrent.futures import ThreadPoolExecutor

SCHEME = "scrypt"
# About 16 MiB and a few tens of ms per check on a PC, some hundreds on a Pi:
# enough to slow guessing, cheap for a login.
N, R, P = 2**14, 8, 1
KEY_BYTES = 32
SALT_BYTES = 16
MIN_LENGTH = 8
MAX_N = 2**20


def hash_password(password: str) -> str:
    """A new salted scrypt hash of ``password``."""
    if len(password) < MIN_LENGTH:
        raise ValueError(f"a password needs at least {MIN_LENGTH} characters")
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, N, R, P, KEY_BYTES)
    return "$".join((SCHEME, str(N), str(R), str(P), _b64(salt), _b64(key)))


def verify_password(password: str, stored: str) -> bool:
    """True if ``password`` matches ``stored``; a malformed hash never matches."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != SCHEME:
            return False
        # The file is trusted, but a typo must not eat the RAM (scrypt itself refuses N < 2).
        if int(n) > MAX_N:
            return False
        expected = _unb64(key)
        actual = _scrypt(password, _unb64(salt), int(n), int(r), int(p), len(expected))
    except (ValueError, TypeError):  # bad fields, or scrypt refusing the parameters
        return False
    return hmac.compare_digest(actual, expected)


# Two threads of their own: a flood of logins keeps these busy, never the shared
# pool that SQLite and the upstream sinks use (asyncio.to_thread).
CHECK_THREADS = 2
# Checks running or waiting for a thread; more than this at once are refused (busy),
# so a flood costs a bounded amount of memory and CPU and cannot queue for minutes.
MAX_PENDING_CHECKS = 8


class ChecksBusy(Exception):
    """Too many password checks are under way; the caller should answer "try again"."""


class PasswordChecker:
    """Checks passwords on a small executor of its own, a bounded number at a time."""

    def __init__(self, *, threads: int = CHECK_THREADS, max_pending: int = MAX_PENDING_CHECKS):
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="password-check")
        self.pending = 0
        self.peak = 0  # the most checks under way at once since start
        self.refused = 0  # checks refused because ``max_pending`` were under way

    async def verify(self, password: str, stored: str) -> bool:
        """``verify_password`` off the event loop; ChecksBusy when too many are under way."""
        if self.pending >= self.max_pending:
            self.refused += 1
            raise ChecksBusy(f"{self.pending} password checks under way")
        loop = asyncio.get_running_loop()
        self.pending += 1
        self.peak = max(self.peak, self.pending)
        try:
            job = self._executor.submit(verify_password, password, stored)
        except RuntimeError:  # shut down: the server is stopping
            self.pending -= 1
            raise ChecksBusy("the password checker is stopped") from None
        # Released when the thread is done with it, not when the caller stops waiting:
        # a client that hangs up must not free a slot while scrypt still runs.
        def release(_job: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed: nothing to free
                loop.call_soon_threadsafe(self._release)

        job.add_done_callback(release)
        return await asyncio.wrap_future(job)

    def _release(self) -> None:
        self.pending -= 1

    def close(self) -> None:
        """Stop the threads (checks not yet started are dropped)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def is_hash(value: str) -> bool:
    """Whether ``value`` looks like a hash this module wrote (for checking users files)."""
    parts = value.split("$")
    return len(parts) == 6 and parts[0] == SCHEME and all(x.isdigit() for x in parts[1:4])


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p,
                          maxmem=2 * 128 * r * n + 2**20, dklen=dklen)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().replace("=", "")  # "=" is only ever padding


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
