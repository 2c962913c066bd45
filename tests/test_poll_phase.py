"""Devices configured alike poll at their own phase (issue 16: no loop turn holds them all)."""

from __future__ import annotations

import pytest

from gateway.runtime.device_runner import first_gap_after_start

IDS = [f"dev-{i:04d}" for i in range(100)]


@pytest.mark.parametrize("interval", [0.05, 0.1, 0.5])
def test_below_a_second_the_second_poll_comes_sooner_at_a_phase_of_its_own(interval) -> None:
    gaps = [first_gap_after_start(d, interval) for d in IDS]
    assert all(0 < g <= interval for g in gaps)  # never a gap over the interval
    # spread over the interval, not bunched: 100 devices fall in at least 8 of 10 tenths
    tenths = {min(9, int(g / interval * 10)) for g in gaps}
    assert len(tenths) >= 8, sorted(gaps)
    assert len(set(gaps)) >= 90


@pytest.mark.parametrize("interval", [1.0, 5.0])
def test_at_a_second_or_more_the_first_gap_is_longer_by_under_a_second(interval) -> None:
    gaps = [first_gap_after_start(d, interval) for d in IDS]
    assert all(interval < g <= interval + 1.0 for g in gaps)
    assert len({min(9, int((g - interval) * 10)) for g in gaps}) >= 8


def test_the_phase_is_stable_across_restarts() -> None:
    assert first_gap_after_start("charger-b3", 0.1) == first_gap_after_start("charger-b3", 0.1)
