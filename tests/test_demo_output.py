"""`community-gateway demo` as a person runs it: twice in a row, each run starts with no
open alarm, and each alarm is printed once, in aligned columns."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

from gateway.demo.run import alarm_line, radar_line

REPO = Path(__file__).resolve().parent.parent
ALARM_ID = re.compile(r"id (\w+-\d+)")
READINGS = re.compile(r"^\d\d:\d\d:\d\d  cabinet ")  # the first print of what the gateway reads


async def demo_until(data_dir: Path, done, timeout: float = 90) -> list[str]:
    """Run the demo until ``done(lines)`` is true, then Ctrl-C it; every output line."""
    # The README's command (bash scripts/demo.sh), with a private data folder.
    proc = await asyncio.create_subprocess_exec(
        "bash", str(REPO / "scripts" / "demo.sh"), "--data-dir", str(data_dir), cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    lines: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            while not done(lines):
                line = await proc.stdout.readline()
                assert line, f"the demo ended early: {lines}"
                lines.append(line.decode().rstrip("\n"))
        proc.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(30):
                rest, _ = await proc.communicate()
        except TimeoutError:
            raise AssertionError(f"the demo did not stop on Ctrl-C: {lines}") from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines += rest.decode().splitlines()
    assert proc.returncode == 0, lines
    return lines


async def test_a_second_demo_starts_fresh_and_each_alarm_is_printed_once(tmp_path: Path) -> None:
    first = await demo_until(tmp_path, lambda lines: any("ALARM" in x and "raised" in x
                                                         for x in lines))
    [raised] = [x for x in first if "ALARM" in x and "raised" in x]
    alarm_id = ALARM_ID.search(raised).group(1)
    assert [x for x in first if alarm_id in x] == [raised], first  # not also as a log line
    assert "starting fresh" not in "\n".join(first)

    second = await demo_until(tmp_path, lambda lines: any(READINGS.match(x) for x in lines))
    text = "\n".join(second)
    assert f"starting fresh: removed the open alarms and the outbox of the last run " \
           f"({(tmp_path / 'state').resolve()})" in text
    assert "restored" not in text and "escalated" not in text and alarm_id not in text


# What the new kinds raise in the demo (gateway/demo/facilities.py), in the order it comes.
NEW_KINDS = {
    "perimeter-north": "Intrusion: north fence segment 2",    # the I/O module's fence
    "panel-b7": "One-key alarm: emergency button",            # the DC-09 alarm panel
    "health-9-1204": "No breathing detected",                 # the breathing radar
    "smoke-b3-charging": "FIRE reported by the smoke detector",  # the smoke detector
}


def _raised(lines: list[str], device: str) -> list[str]:
    return [x for x in lines if "ALARM" in x and " raised " in x and f"({device}, id" in x]


async def test_the_demo_carries_the_new_kinds_and_the_smoke_cuts_the_cabinet(tmp_path: Path) -> None:
    def done(lines: list[str]) -> bool:
        fired = [i for i, x in enumerate(lines) if NEW_KINDS["smoke-b3-charging"] in x]
        # after the fire, a cabinet line with every port cut
        return bool(fired) and any(x.count("OFF") == 4 for x in lines[fired[0]:]
                                   if READINGS.match(x))

    lines = await demo_until(tmp_path, done, timeout=150)
    text = "\n".join(lines)
    for what in ("I/O module (perimeter-north) on Modbus TCP", "alarm panel 1234 (panel-b7) reports "
                 "over SIA DC-09", "breathing radar MR60BHA2 (health-9-1204) on pty",
                 "smoke detector sd-b3-0001"):
        assert f"demo: {what}" in text, text
    for device, message in NEW_KINDS.items():
        raised = _raised(lines, device)
        assert [x for x in raised if message in x], (device, text)
    # the one-key button on the I/O module, as well as the panel's
    assert [x for x in _raised(lines, "perimeter-north") if "One-key alarm at building 7" in x], text
    # each alarm once (not also as the gateway's own log line)
    for line in (x for x in lines if "ALARM" in x and " raised " in x):
        alarm_id = ALARM_ID.search(line).group(1)
        assert [x for x in lines if alarm_id in x and " raised " in x] == [line], text
    # what the gateway reads of them, in the demo's columns
    assert any(re.match(r"^\d\d:\d\d:\d\d  fence     fence inputs 1-8 \[[-O]{8}\]", x) for x in lines)
    assert any(re.match(r"^\d\d:\d\d:\d\d  rooms     1204 bedroom: breathing", x) for x in lines)


def test_alarm_lines_keep_their_columns() -> None:
    def event(name: str, message: str, count: int = 1) -> dict:
        return {"event": name, "alarm": {"severity": 1, "message": message, "device": "d",
                                         "id": "x-001", "count": count}}

    lines = [alarm_line(event("raised", "one")), alarm_line(event("condition_cleared", "two")),
             alarm_line(event("acked", "three", count=2) | {"by": "wang"})]
    assert len({line.index("L1") for line in lines}) == 1, lines
    assert "condition cleared" in lines[1] and "acked by wang" in lines[2] and "count 2" in lines[2]


def test_radar_numbers_are_said_in_words() -> None:
    moving = radar_line({"presence": 1, "motion": 2, "body_movement": 37, "fall": 0,
                         "stationary_dwell": 0}, "302 bathroom")
    fallen = radar_line({"presence": 1, "motion": 1, "body_movement": 0, "fall": 1,
                         "stationary_dwell": 1}, "302 bathroom")
    empty = radar_line({"presence": 0}, "302 bathroom")
    assert "someone there, moving, body movement  37/100" in moving and "no fall" in moving
    assert "still" in fallen and "FALL, motionless for long" in fallen
    assert "nobody there" in empty
    assert moving.index("fall") == empty.index("fall")
