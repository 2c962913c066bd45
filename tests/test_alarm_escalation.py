"""An escalation stands: a new occurrence of the alarm does not take its urgency back."""

from __future__ import annotations

from gateway.alarms.manager import AlarmManager
from gateway.clock import FakeClock


def test_a_repeat_keeps_the_escalated_severity() -> None:
    clock = FakeClock()
    events: list[tuple[str, int]] = []
    manager = AlarmManager(clock=clock, listeners=[lambda t: events.append((t.event, t.alarm["severity"]))])

    def occur() -> None:
        manager.activate(rule="smoke", severity=2, device="cab", kind="ev_charging", channel=None,
                         location={}, message="smoke", value=1.0, ts=clock.time(),
                         escalate_after=60)

    occur()
    clock.advance(60)
    manager.tick(clock.time())  # nobody acknowledged: level 2 becomes level 1
    manager.deactivate(rule="smoke", device="cab", channel=None, value=0.0, ts=clock.time())
    clock.advance(1)
    occur()  # it comes back, reported by the rule at its own level 2
    assert events == [("raised", 2), ("escalated", 1), ("cleared", 1), ("repeated", 1)]
    [alarm] = manager.open_alarms()
    assert alarm.severity == 1 and alarm.base_severity == 2 and alarm.count == 2
    clock.advance(60)
    manager.tick(clock.time())  # still unacknowledged: on to level 0
    assert events[-1] == ("escalated", 0)
