"""The login throttle at its exact edges (found by mutation testing)."""

from __future__ import annotations

from gateway.clock import FakeClock
from gateway.console import throttle as throttle_module
from gateway.console.throttle import LoginThrottle


def test_a_success_forgets_the_failures_of_its_keys() -> None:
    t = LoginThrottle(clock=FakeClock(), max_failures=2, lock_seconds=60)
    t.failed("wang", "127.0.0.1")
    t.failed("wang", "127.0.0.1")
    assert t.wait_for("wang") == 60
    t.succeeded("wang")
    assert t.wait_for("wang") == 0 and t.wait_for("127.0.0.1") == 60


def test_a_failure_a_full_lock_period_after_the_last_starts_a_new_count() -> None:
    clock = FakeClock()
    t = LoginThrottle(clock=clock, max_failures=2, lock_seconds=60)
    t.failed("wang")
    clock.advance(60)  # exactly the lock period: the old failure no longer counts
    t.failed("wang")
    assert t.wait_for("wang") == 0
    t.failed("wang")
    assert t.wait_for("wang") == 60


def test_a_name_never_seen_may_try_even_with_a_limit_of_one() -> None:
    t = LoginThrottle(clock=FakeClock(), max_failures=1, lock_seconds=60)
    assert t.wait_for("li") == 0


def test_the_table_is_cleared_when_it_reaches_its_bound(monkeypatch) -> None:
    monkeypatch.setattr(throttle_module, "MAX_TRACKED", 3)
    t = LoginThrottle(clock=FakeClock(), max_failures=1, lock_seconds=60)
    for key in ("a", "b", "c"):
        t.failed(key)
    assert t.wait_for("a") == 60
    t.failed("d")  # exactly the bound reached: the sweep's entries go
    assert t.wait_for("a") == 0 and t.wait_for("d") == 60
