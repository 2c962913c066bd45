"""The alarm lifecycle on an injected clock: latching, reset, shelving, escalation,
operators' commands and the record of who did what when."""

from __future__ import annotations

import pytest

from alarm_support import Bench
from gateway.alarms.commands import CommandError, apply_command
from gateway.alarms.manager import AlarmCommandRefused

SMOKE = {"id": "smoke", "type": "threshold", "select": {"devices": ["charger"]},
         "field": "temperature", "above": 80, "severity": 1, "latch": True}
EMERGENCY = {"id": "emergency", "type": "event", "select": {"devices": ["doors"]},
             "event": "emergency", "severity": 1, "latch": True}
HOT = {"id": "hot", "type": "threshold", "select": {"devices": ["charger"]},
       "field": "temperature", "above": 60, "severity": 2}


def test_latched_alarm_stays_until_reset_and_reset_waits_for_the_condition(tmp_path) -> None:
    b = Bench(tmp_path, [SMOKE])
    b.read("charger", 1, temperature=90.0)
    alarm = b.only("smoke")
    with pytest.raises(AlarmCommandRefused, match="still present"):
        b.alarms.reset(alarm.id, by="guard")
    b.alarms.ack(alarm.id, by="guard", note="seen on camera")
    b.read("charger", 1, temperature=20.0)
    assert alarm.state == "active" and alarm.acked and not alarm.condition  # latched
    assert b.events() == ["raised", "acked", "condition_cleared"]
    b.read("charger", 1, temperature=95.0)  # back while still latched: a new occurrence
    assert alarm.count == 2 and not alarm.acked
    b.read("charger", 1, temperature=20.0)
    b.tick(60)
    b.alarms.reset(alarm.id, by="guard zhang", note="cabinet checked")
    assert b.alarms.open_alarms() == []
    assert b.events() == ["raised", "acked", "condition_cleared", "repeated", "condition_cleared",
                          "reset", "closed"]


def test_latched_event_acknowledged_waits_for_a_reset(tmp_path) -> None:
    b = Bench(tmp_path, [EMERGENCY])
    b.event("doors", "emergency", channel=1)
    alarm = b.only("emergency")
    b.alarms.ack(alarm.id, by="guard")
    assert alarm.state == "active" and alarm in b.alarms.open_alarms()
    b.alarms.reset(alarm.id, by="guard")
    assert b.alarms.open_alarms() == []


def test_every_transition_is_recorded_with_who_and_when(tmp_path) -> None:
    b = Bench(tmp_path, [EMERGENCY])
    b.event("doors", "emergency", channel=2)
    alarm = b.only("emergency")
    b.tick(12)
    b.alarms.ack(alarm.id, by="guard wang", note="on my way")
    b.tick(60)
    b.alarms.reset(alarm.id, by="guard wang", note="false alarm, child pressed it")
    assert [(h["event"], h["by"], h["note"]) for h in alarm.history] == [
        ("raised", None, None), ("acked", "guard wang", "on my way"),
        ("reset", "guard wang", "false alarm, child pressed it"),
        ("closed", "guard wang", "false alarm, child pressed it")]
    assert alarm.history[1]["ts"] == "2023-11-14T22:13:32.000Z"
    assert [t.by for t in b.transitions] == [None, "guard wang", "guard wang", "guard wang"]


def test_shelving_ends_by_itself_and_is_bounded(tmp_path) -> None:
    b = Bench(tmp_path, [HOT], alarms={"max_shelve_minutes": 60})
    b.read("charger", 1, temperature=70.0)
    alarm = b.only("hot")
    with pytest.raises(AlarmCommandRefused, match="at most 60"):
        b.alarms.shelve(alarm.id, by="guard", minutes=61)
    b.alarms.shelve(alarm.id, by="guard", note="sensor being replaced", minutes=30)
    assert alarm.to_json()["shelved_until"] == "2023-11-14T22:43:20.000Z"
    b.read("charger", 1, temperature=50.0)
    b.read("charger", 1, temperature=70.0)  # still recorded while shelved
    b.tick(29 * 60)
    assert alarm.shelved_until is not None
    b.tick(60)
    assert alarm.shelved_until is None
    assert b.events() == ["raised", "shelved", "cleared", "repeated", "unshelved"]
    assert b.transitions[-1].by is None and b.transitions[-1].note == "shelving time is up"


def test_unacknowledged_urgent_alarm_escalates_until_acknowledged(tmp_path) -> None:
    b = Bench(tmp_path, [SMOKE, HOT], alarms={"escalate_after": 120})
    b.read("charger", 1, temperature=90.0)  # both rules: smoke (level 1) and hot (level 2)
    smoke, hot = b.only("smoke"), b.only("hot")
    b.tick(119)
    assert "escalated" not in b.events()
    b.tick(1)
    assert b.events("smoke")[-1] == "escalated" and smoke.severity == 0
    assert smoke.to_json()["escalated"] == 1
    assert hot.severity == 2 and "escalated" not in b.events("hot")  # only level 1 by default
    b.tick(120)
    assert smoke.escalations == 2 and smoke.severity == 0  # 0 is as urgent as it gets
    b.alarms.ack(smoke.id, by="guard")
    b.tick(600)
    assert smoke.escalations == 2


def test_a_rule_can_escalate_any_level_and_shelving_holds_escalation(tmp_path) -> None:
    b = Bench(tmp_path, [dict(HOT, escalate_after=60), dict(SMOKE, escalate_after=0)])
    b.read("charger", 2, temperature=90.0)
    hot, smoke = b.only("hot"), b.only("smoke")
    b.alarms.shelve(hot.id, by="guard", minutes=5)
    b.tick(299)
    assert hot.escalations == 0 and smoke.escalations == 0  # shelved; smoke: escalate_after 0
    b.tick(1)  # unshelved now; the escalation clock starts again
    b.tick(59)
    assert hot.escalations == 0
    b.tick(1)
    assert hot.escalations == 1 and hot.severity == 1


def test_commands_validate_and_answer_errors(tmp_path) -> None:
    b = Bench(tmp_path, [HOT])
    b.read("charger", 1, temperature=70.0)
    alarm_id = b.only("hot").id

    def error(command: str, body, alarm: str = alarm_id) -> CommandError:
        with pytest.raises(CommandError) as info:
            apply_command(b.alarms, alarm, command, body)
        return info.value

    assert error("ack", b"not json").status == 400
    assert error("ack", b"[1, 2]").status == 400
    assert "by" in error("ack", b"{}").detail
    assert error("ack", {"by": "x", "nte": "typo"}).detail.startswith("nte: unknown key")
    assert error("shelve", {"by": "x", "minutes": -5}).status == 400
    assert error("shelve", {"by": "x", "minutes": 100000}).status == 409
    assert error("reset", {"by": "x"}).status == 409  # the condition is present
    assert error("ack", {"by": "x"}, alarm="nope").status == 404
    assert error("silence", {"by": "x"}).status == 404
    alarm = apply_command(b.alarms, alarm_id, "ack", b'{"by": "guard", "note": "ok"}')
    assert alarm.acked
    assert apply_command(b.alarms, alarm_id, "shelve", {"by": "g", "minutes": 1.5}).shelved_until
    assert apply_command(b.alarms, alarm_id, "unshelve", {"by": "g"}).shelved_until is None


def test_messages_in_chinese_with_the_location(tmp_path) -> None:
    b = Bench(tmp_path, [HOT, dict(EMERGENCY, message={"en": "Emergency at {place}",
                                                      "zh": "{place}紧急按钮被按下"}),
                         {"id": "fall", "type": "event", "select": {"devices": ["radar"]},
                          "event": "fall", "severity": 1}], language="zh")
    b.read("charger", 3, temperature=61.5)
    b.event("doors", "emergency", channel=2)
    b.event("radar", "fall")
    msgs = {a.rule: a.message for a in b.alarms.open_alarms()}
    assert msgs == {"hot": "3号楼1单元B1层3通道（charger）温度 61.5，限值 60",
                    "emergency": "3号楼1单元2通道紧急按钮被按下",
                    "fall": "5号楼2单元7层701（radar）跌倒"}
