"""Helpers for the console tests: a site with the console on, its users, a browser.

The browser is Debian's Chromium (``/usr/bin/chromium``) driven by Playwright for
Python; ``bash scripts/test.sh`` installs both. Playwright's own browser download
is never used.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.console.passwords import hash_password
from gateway.console.users import UsersFile

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required"]
OPERATOR = ("wang", "night-shift-1")
VIEWER = ("zhao", "look-only-22")
# Hashing costs tens of ms; every test site gets the same two users.
_HASHES: dict[str, str] = {}


def write_users(path: Path) -> Path:
    """A users file with one operator and one viewer."""
    users = UsersFile(path=path)
    for (name, password), role in ((OPERATOR, "operator"), (VIEWER, "viewer")):
        if name not in _HASHES:
            _HASHES[name] = hash_password(password)
        users.add(name, role, _HASHES[name], replace=True)
    return path


def with_console(raw: dict, tmp_path: Path, http_port: int) -> dict:
    """Add the HTTP server and the console (users file beside the config) to a site."""
    write_users(tmp_path / "users.yaml")
    raw["http"] = {"listen": f"127.0.0.1:{http_port}"}
    raw["console"] = {"users_file": "users.yaml", "audit_file": "audit.jsonl"}
    raw.setdefault("state_dir", str(tmp_path / "state"))
    return raw


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[object]:
    """A headless Chromium (Debian's), or a test failure saying how to get it."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/test.sh`, which installs Debian's "
                    "chromium and Playwright for Python", pytrace=False)
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("Playwright for Python is missing: run `bash scripts/test.sh` "
                    "(pip install -e '.[test]')", pytrace=False)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def log_in(page, base_url: str, user: tuple[str, str]) -> None:
    """Log in through the login form and wait for the live console."""
    await page.goto(f"{base_url}/console/")
    await page.fill("#user", user[0])
    await page.fill("#password", user[1])
    await page.click("#login-submit")
    await page.wait_for_selector('#live[data-live="yes"]', timeout=5000)
