"""Password hashes for console operators: scrypt from the standard library.

A hash is stored as ``scrypt$N$r$p$salt$key`` (salt and key in unpadded
base64), so the cost can be raised later without breaking existing entries.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

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
        if not 1 <= int(n) <= MAX_N:  # the file is trusted, but a typo must not eat the RAM
            return False
        expected = _unb64(key)
        actual = _scrypt(password, _unb64(salt), int(n), int(r), int(p), len(expected))
    except (ValueError, TypeError):  # bad fields, or scrypt refusing the parameters
        return False
    return hmac.compare_digest(actual, expected)


def is_hash(value: str) -> bool:
    """Whether ``value`` looks like a hash this module wrote (for checking users files)."""
    parts = value.split("$")
    return len(parts) == 6 and parts[0] == SCHEME and all(x.isdigit() for x in parts[1:4])


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=2 * 128 * r * n + 2**20, dklen=dklen)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
