"""Edge cases of the login throttle (gateway/console/throttle.py, on an injected clock) and
of the password checker's bounds (gateway/console/passwords.py).

Each test pins one limit or step that a mutant of the throttle would move (see
docs/mutation-testing.md): the defaults, the free tries, the delay's growth and cap,
when a key is forgotten, and which entries make room when a table is full.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

import gateway.console.passwords as passwords
from gateway.clock import FakeClock
from gateway.console.passwords import ChecksBusy, PasswordChecker
from gateway.console.throttle import (
    ACCOUNT_FREE,
    ADDRESS_FREE,
    FORGET_AFTER,
    MAX_DELAY,
    LoginThrottle,
    _Count,
)
from harness import wait_until


def fail_once(throttle: LoginThrottle, clock: FakeClock, **who: str) -> float:
    """One wrong password, taken as soon as allowed: the wait it had to sit out."""
    wait = throttle.wait_for(**who)
    clock.advance(wait)
    assert throttle.begin(**who) == 0
    throttle.failed(**who)
    return wait


def test_the_defaults_give_an_account_five_free_tries_then_double_from_one_second_to_five_minutes() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock)
    who = {"account": "wang", "address": "10.0.0.1"}
    waits = [fail_once(throttle, clock, **who) for _ in range(ACCOUNT_FREE + 11)]
    assert waits[:ACCOUNT_FREE] == [0] * ACCOUNT_FREE
    assert waits[ACCOUNT_FREE:] == [1, 2, 4, 8, 16, 32, 64, 128, 256, MAX_DELAY, MAX_DELAY]
    assert MAX_DELAY == 300


def test_an_address_has_twenty_free_tries_and_the_exponent_stops_at_32() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock)
    for i in range(ADDRESS_FREE):  # a different name each time: only the address adds up
        assert throttle.begin(account=f"guard-{i}", address="10.0.0.9") == 0
        throttle.failed(account=f"guard-{i}", address="10.0.0.9")
    assert throttle.wait_for(account="someone-else", address="10.0.0.9") == 1.0
    assert throttle.begin(account="someone-else", address="10.0.0.9") == 1.0
    unbounded = LoginThrottle(clock=clock, account_free=0, max_delay=float("inf")).accounts
    assert unbounded.delay(40) == 2.0 ** 32 and unbounded.delay(5000) == 2.0 ** 32  # no overflow


def test_a_key_is_forgotten_an_hour_after_its_last_failure_unless_a_check_is_under_way() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock, account_free=1, address_free=100)
    who = {"account": "wang", "address": "10.0.0.1"}
    fail_once(throttle, clock, **who)
    fail_once(throttle, clock, **who)
    clock.advance(FORGET_AFTER - 0.001)
    assert throttle.wait_for(**who) == 0 and "wang" in throttle.accounts.counts
    clock.advance(0.001)
    assert throttle.wait_for(**who) == 0 and "wang" not in throttle.accounts.counts
    # counted again from the start: the first failure is free again
    fail_once(throttle, clock, **who)
    assert throttle.accounts.counts["wang"].failures == 1
    assert throttle.begin(**who) == 1.0  # the second waits the base delay
    clock.advance(1.0)
    assert throttle.begin(**who) == 0  # under way: its check holds the entry however long it takes
    clock.advance(2 * FORGET_AFTER)
    assert throttle.wait_for(**who) > 0 and throttle.accounts.counts["wang"].checking == 1


def test_while_the_last_free_tries_are_checked_the_wait_is_the_whole_delay() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock, account_free=2, address_free=100, base_delay=4, max_delay=64)
    who = {"account": "wang", "address": "10.0.0.1"}
    assert throttle.begin(**who) == 0 and throttle.begin(**who) == 0
    clock.advance(3)
    assert throttle.wait_for(**who) == 4  # not 4 - 3: the delay starts when the checks end
    throttle.failed(**who)
    clock.advance(1)
    assert throttle.wait_for(**who) == 4  # one still under way
    throttle.failed(**who)
    clock.advance(1)
    assert throttle.wait_for(**who) == 3  # both done: the delay runs from the last failure


def test_a_withdrawn_attempt_gives_back_its_count_to_the_account_and_the_address() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock, account_free=2, address_free=2, base_delay=1)
    who = {"account": "wang", "address": "10.0.0.1"}
    fail_once(throttle, clock, **who)
    clock.advance(10)
    assert throttle.begin(**who) == 0
    throttle.not_checked(**who)  # the server was busy: the password was never looked at
    for table, key in ((throttle.accounts, "wang"), (throttle.addresses, "10.0.0.1")):
        entry = table.counts[key]
        assert (entry.failures, entry.checking) == (1, 0)
    assert throttle.begin(**who) == 0
    throttle.succeeded(**who)  # the right password: the account starts afresh
    assert "wang" not in throttle.accounts.counts
    entry = throttle.addresses.counts["10.0.0.1"]
    assert (entry.failures, entry.checking) == (1, 0)  # and this try is not held against the address
    assert throttle.wait_for(account="li", address="10.0.0.1") == 0


def test_two_attempts_under_way_end_one_at_a_time() -> None:
    throttle = LoginThrottle(clock=FakeClock(), account_free=5, address_free=5)
    who = {"account": "wang", "address": "10.0.0.1"}
    assert throttle.begin(**who) == 0 and throttle.begin(**who) == 0
    throttle.not_checked(**who)
    entry = throttle.accounts.counts["wang"]
    assert (entry.failures, entry.checking) == (1, 1)
    throttle.not_checked(**who)
    assert (entry.failures, entry.checking) == (0, 0)


def test_ending_an_attempt_the_throttle_no_longer_tracks_is_harmless() -> None:
    throttle = LoginThrottle(clock=FakeClock())
    who = {"account": "never-began", "address": "10.9.9.9"}
    throttle.failed(**who)
    throttle.not_checked(**who)
    throttle.succeeded(**who)
    assert throttle.accounts.counts == {} and throttle.addresses.counts == {}


def make_table(entries: dict[str, tuple[int, float, int]], now: float, *, free: int = 3,
               max_tracked: int = 10):
    """A full table: key -> (failures, seconds since the last, attempts being checked)."""
    throttle = LoginThrottle(clock=FakeClock(now), account_free=free, base_delay=1, max_delay=8,
                             max_tracked=max_tracked)
    table = throttle.accounts
    for key, (failures, age, checking) in entries.items():
        table.counts[key] = _Count(failures, now - age, checking)
    return throttle, table


def test_a_full_table_first_drops_entries_idle_for_a_second_with_free_tries_left() -> None:
    now = 5000.0
    entries = {
        "idle-exactly-one-second": (1, 1.0, 0),
        "idle-long": (2, 50.0, 0),
        "recent": (1, 0.5, 0),
        "being-checked": (1, 50.0, 1),
        "out-of-free-tries": (3, 50.0, 0),
    }
    entries.update({f"busy-{i}": (1, 0.1, 0) for i in range(5)})
    throttle, table = make_table(entries, now)
    throttle.begin(account="new", address="10.0.0.1")
    assert set(table.counts) == set(entries) - {"idle-exactly-one-second", "idle-long"} | {"new"}


def test_a_full_table_without_idle_entries_drops_the_least_failed_tenth_oldest_first() -> None:
    now = 5000.0
    entries = {
        "a-many": (9, 0.1, 0),
        "b-few-newer": (1, 0.2, 0),
        "c-few-older": (1, 0.3, 0),
        "d-checked": (0, 0.9, 1),  # fewest failures, but its check is under way
    }
    for max_tracked, dropped in ((10, {"c-few-older"}), (20, {"c-few-older", "b-few-newer"})):
        full = dict(entries)
        full.update({f"z-{i}": (4, 0.1, 0) for i in range(max_tracked - len(entries))})
        throttle, table = make_table(full, now, max_tracked=max_tracked)
        throttle.begin(account="new", address="10.0.0.1")
        assert set(full) - set(table.counts) == dropped
        assert "new" in table.counts


# -- the password checker's bounds (gateway/console/passwords.py) -------------------------


class GatedVerify:
    """verify_password that waits for ``gate``; records the threads that ran it."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.running = 0
        self.most = 0
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, password: str, stored: str) -> bool:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.current_thread().name)
        try:
            if not self.gate.wait(30):
                raise RuntimeError("the test never opened the gate")
            return password == stored
        finally:
            with self._lock:
                self.running -= 1


async def test_the_checker_runs_two_checks_at_once_refuses_beyond_its_bound_and_counts(
        monkeypatch) -> None:
    gated = GatedVerify()
    monkeypatch.setattr(passwords, "verify_password", gated)
    checker = PasswordChecker(max_pending=3)
    try:
        assert (checker.pending, checker.peak, checker.refused) == (0, 0, 0)
        checks = [asyncio.create_task(checker.verify(f"pw{i}", "pw0")) for i in range(3)]
        await wait_until(lambda: gated.running == 2, 10, "the checks")
        assert checker.pending == 3  # two running, one waiting for a thread
        with pytest.raises(ChecksBusy, match="^3 password checks under way$"):
            await checker.verify("pw", "pw")
        with pytest.raises(ChecksBusy):
            await checker.verify("pw", "pw")
        assert checker.refused == 2
        gated.gate.set()
        assert await asyncio.gather(*checks) == [True, False, False]
        await wait_until(lambda: checker.pending == 0, 10, "the checks")
        assert checker.peak == 3 and gated.most == 2
        assert all(name.startswith("password-check") for name in gated.threads)
        assert await checker.verify("pw", "pw") is True  # one more, now that all are free
        await wait_until(lambda: checker.pending == 0, 10, "the checks")
    finally:
        gated.gate.set()
        checker.close()


async def test_close_returns_at_once_drops_waiting_checks_and_later_ones_are_refused(
        monkeypatch) -> None:
    gated = GatedVerify()
    monkeypatch.setattr(passwords, "verify_password", gated)
    checker = PasswordChecker(threads=1)
    running = asyncio.create_task(checker.verify("pw", "pw"))
    waiting = asyncio.create_task(checker.verify("pw", "pw"))
    await wait_until(lambda: gated.running == 1, 10, "the checks")
    closer = threading.Thread(target=checker.close)
    closer.start()
    closer.join(10)  # a close that waited for the running check would still be here
    assert not closer.is_alive()
    with pytest.raises(asyncio.CancelledError):
        await waiting  # never started: dropped
    with pytest.raises(ChecksBusy, match="^the password checker is stopped$"):
        await checker.verify("pw", "pw")
    gated.gate.set()
    assert await running is True
    await wait_until(lambda: checker.pending == 0, 10, "the checks")
    with pytest.raises(ChecksBusy):
        await checker.verify("pw", "pw")
    assert checker.pending == 0  # a refused check holds no slot


def test_a_check_that_ends_after_its_event_loop_closed_frees_nothing_and_logs_nothing(
        monkeypatch, caplog) -> None:
    gated = GatedVerify()
    monkeypatch.setattr(passwords, "verify_password", gated)
    checker = PasswordChecker(threads=1)
    loop = asyncio.new_event_loop()
    task = loop.create_task(checker.verify("pw", "pw"))
    while gated.running == 0 and not task.done():
        loop.run_until_complete(asyncio.sleep(0.001))
    assert gated.running == 1
    task.cancel()
    loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    loop.close()
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        gated.gate.set()
        checker._executor.shutdown(wait=True)  # the thread and its done-callback have run
    assert not caplog.records


def stored_hash(password: str, n: int, r: int = 8, p: int = 1) -> str:
    salt = b"0123456789abcdef"
    key = passwords._scrypt(password, salt, n, r, p, 32)
    return "$".join(("scrypt", str(n), str(r), str(p), passwords._b64(salt), passwords._b64(key)))


def test_a_hash_costing_up_to_max_n_verifies_and_one_above_is_refused_unchecked(monkeypatch) -> None:
    monkeypatch.setattr(passwords, "MAX_N", 2**10)  # the bound itself, at a cheap size
    assert passwords.verify_password("correct horse", stored_hash("correct horse", 2**10))
    above = stored_hash("correct horse", 2**11)
    monkeypatch.setattr(passwords, "_scrypt", lambda *a: pytest.fail("scrypt ran for N above MAX_N"))
    assert passwords.verify_password("correct horse", above) is False


def test_the_default_cost_needs_the_memory_it_is_allowed() -> None:
    # r=8, N=2**15: 32 MiB, more than OpenSSL allows by default: maxmem must make room
    stored = stored_hash("correct horse", 2**15)
    assert passwords.verify_password("correct horse", stored)
    assert not passwords.verify_password("correct hors", stored)


def test_hashes_are_unpadded_base64_and_anything_else_in_them_never_matches() -> None:
    stored = passwords.hash_password("correct horse")
    assert "=" not in stored and passwords.is_hash(stored)
    assert len(passwords._unb64(stored.split("$")[4])) == passwords.SALT_BYTES == 16
    scheme, n, r, p, salt, key = stored.split("$")
    assert passwords.verify_password("correct horse", "$".join((scheme, n, r, p, salt, key[:5] + "****" + key[5:]))) is False
    assert not passwords.is_hash("bcrypt$16384$8$1$AAAA$BBBB")
    assert not passwords.is_hash("scrypt$x$8$1$AAAA$BBBB")
    assert not passwords.is_hash("scrypt$16384$8$1$AAAA")
