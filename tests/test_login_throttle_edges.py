"""Edge cases of the login throttle (gateway/console/throttle.py), on an injected clock.

Each test pins one limit or step that a mutant of the throttle would move (see
docs/mutation-testing.md): the defaults, the free tries, the delay's growth and cap,
when a key is forgotten, and which entries make room when a table is full.
"""

from __future__ import annotations

import pytest

from gateway.clock import FakeClock
from gateway.console.throttle import (
    ACCOUNT_FREE,
    ADDRESS_FREE,
    FORGET_AFTER,
    MAX_DELAY,
    LoginThrottle,
)


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
